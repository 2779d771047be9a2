"""A benchmark run in lm-evaluation-harness's output layout, for the tools that read lm-eval's results.

`tunebench bench --output-format lm-eval` (or a recipe's `forgetting.output_format: lm-eval`)
writes, beside results.json and examples.jsonl, what lm-eval 0.4's EvaluationTracker writes for
`--output_path DIR/lm-eval --log_samples`:

    DIR/lm-eval/<model name, sanitized as lm-eval does>/results_<time>.json
    DIR/lm-eval/<model name, sanitized>/samples_<task>_<time>.jsonl      (one per task)

with lm-eval's keys: `results` ("acc,none", "acc_stderr,none", ...), `versions`, `n-shot`,
`configs`, `config`, `higher_is_better`, `n-samples`, `task_hashes`, the environment and model
fields; and per sample `doc_id`, `doc`, `target`, `arguments`, `resps`, `filtered_resps`,
`filter`, `metrics`, the three hashes and each metric's value. Everything comes from what the
run scored; nothing is scored again. What tunebench does not compute is written as lm-eval
writes a missing value: "N/A" for a standard error it has no per-example values for (or for a
container's weighted mean), and "None" for the is-greedy flag of a choice's log-likelihood.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from datetime import datetime
from pathlib import Path

from ..io.layout import LM_EVAL_DIR
from ..io.runs import atomic_write_text, environment, write_json
from .tasks import seed_for

# tunebench's metric names that mean exactly lm-eval's: other names are written as they are
LM_EVAL_NAMES = {"accuracy": "acc", "accuracy_norm": "acc_norm", "exact_str_match": "exact_match"}
LOWER_IS_BETTER = {"expected_calibration_error", "calibration_multiple_choice_brier_score"}
# lm-eval's default bootstrap_iters: with it lm-eval gives a mean's standard error in closed form, as here
BOOTSTRAP_ITERS = 100000
FILTER = "none"


def metric_name(name: str) -> str:
    return LM_EVAL_NAMES.get(name, name)


def task_name(name: str) -> str:
    """A task name as lm-eval spells them (no '/': it becomes part of a file name)."""
    return re.sub(r"\W", "_", name)


def model_dir_name(model: str) -> str:
    """lm-eval's sanitize_model_name: the folder its tracker writes a model's files in."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", model)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write(out: Path | str, results: dict, entries: list[dict], run: dict) -> list[Path]:
    """The lm-eval files of a finished benchmark run: `results` and `entries` ({entry, examples}
    per task) as run_bench made them; `run` what lm-eval records about the model and the settings
    (model, tokenizer, use_chat, bench config, started, device, max_new_tokens per convention, sizes)."""
    folder = Path(out) / LM_EVAL_DIR / model_dir_name(results["model"])
    date_id = datetime.now().isoformat().replace(":", "-")
    doc = {"results": {}, "group_subtasks": {}, "configs": {}, "versions": {}, "n-shot": {},
           "higher_is_better": {}, "n-samples": {}}
    samples: dict[str, list[dict]] = {}
    for e in entries:
        entry, rows = e["entry"], e["examples"]
        name = task_name(entry["name"])
        samples[name] = [_sample(i, r, entry, run) for i, r in enumerate(rows)]
        doc["results"][name] = _task_results(entry, samples[name], weighted=any("weight" in r for r in rows))
        doc["configs"][name] = _task_config(entry, rows, run)
        doc["versions"][name] = _version()
        doc["n-shot"][name] = entry["shots"]
        doc["higher_is_better"][name] = {metric_name(m): m not in LOWER_IS_BETTER for m in entry["scores"]}
        doc["n-samples"][name] = {"original": run["sizes"].get(entry["name"]) or entry["n"], "effective": entry["n"]}
    doc.update(_run_fields(results, run, samples))
    written = [folder / f"results_{date_id}.json"]
    write_json(written[0], doc)
    for name, rows in samples.items():
        path = folder / f"samples_{name}_{date_id}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        written.append(path)
    # the bench directory holds one run: an earlier write's files would be read as a second
    for old in folder.glob("*_*.json*"):
        if old not in written and old.name.startswith(("results_", "samples_")):
            old.unlink()
    return written


def _sample(i: int, row: dict, entry: dict, run: dict) -> dict:
    """One example as lm-eval's evaluator logs it."""
    if "choices" in row:
        doc = {"context": row["context"], "choices": row["choices"], "gold": row["gold"]}
        target = row["gold"]
        arguments = {f"gen_args_{k}": {"arg_0": row["context"], "arg_1": c} for k, c in enumerate(row["choices"])}
        # lm-eval's (log-likelihood, is-greedy) per choice; tunebench does not compute is-greedy
        resps = [[[str(s), "None"]] for s in row["scores"]]
        filtered = [r[0] for r in resps]
    else:
        doc = {"context": row["context"], "targets": row["targets"]}
        target = row["targets"][0] if len(row["targets"]) == 1 else row["targets"]
        arguments = {"gen_args_0": {"arg_0": row["context"], "arg_1": _generation_kwargs(entry, run)}}
        resps, filtered = [[row.get("generated", row.get("output", ""))]], [row.get("output", "")]
    metrics = {}
    if "prediction_norm" in row:  # scored the lm-eval way: both of lm-eval's accuracies
        metrics = {"acc": float(row["prediction"] == row["gold"]), "acc_norm": float(row["prediction_norm"] == row["gold"])}
    metrics.setdefault(metric_name(entry["primary_metric"]), float(row["score"]))
    return {"doc_id": i, "doc": doc, "target": str(target), "arguments": arguments, "resps": resps,
            "filtered_resps": filtered, "filter": FILTER, "metrics": list(metrics),
            "doc_hash": _sha(json.dumps(doc, indent=2, ensure_ascii=False, default=str)),
            "prompt_hash": _sha(row["context"]), "target_hash": _sha(str(target)), **metrics}


def _task_results(entry: dict, samples: list[dict], weighted: bool) -> dict:
    """lm-eval's per-task entry: every score as "metric,filter" and its standard error."""
    out = {"name": task_name(entry["name"]), "alias": entry["name"], "sample_len": entry["n"]}
    for m, value in entry["scores"].items():
        name = metric_name(m)
        per = [s[name] for s in samples if name in s]
        out[f"{name},{FILTER}"] = value
        out[f"{name}_stderr,{FILTER}"] = _stderr(per) if len(per) == len(samples) > 1 and not weighted else "N/A"
    return out


def _stderr(xs: list[float]) -> float:
    """lm-eval's mean_stderr: the sample standard deviation over sqrt(n)."""
    mu = sum(xs) / len(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) / math.sqrt(len(xs))


def _generation_kwargs(entry: dict, run: dict) -> dict:
    return {"until": [], "max_gen_toks": run["max_new_tokens"][entry["scoring"]], "do_sample": False}


def _task_config(entry: dict, rows: list[dict], run: dict) -> dict:
    """The task's config as lm-eval dumps a TaskConfig (its fields, those set): the documents are
    the `doc`s of the samples file, so doc_to_text/choice/target name their fields."""
    choices = bool(rows) and "choices" in rows[0]
    target = "gold" if choices else "targets"
    cfg = {"task": task_name(entry["name"]), "dataset_path": entry.get("source"), "test_split": Path(str(entry.get("source"))).stem,
           "doc_to_text": "context", "doc_to_target": target, "unsafe_code": False,
           **({"doc_to_choice": "choices"} if choices else {}),
           "description": "", "target_delimiter": "", "fewshot_delimiter": "\n\n",
           "fewshot_config": {"sampler": "first_n" if entry["scoring"] == "lm-eval" else "default", "split": None, "process_docs": None, "fewshot_indices": None,
                              "samples": None, "doc_to_text": "context", "doc_to_choice": "choices" if choices else None,
                              "doc_to_target": target, "gen_prefix": None, "fewshot_delimiter": "\n\n",
                              "target_delimiter": ""},
           "num_fewshot": entry["shots"],
           "metric_list": [{"metric": metric_name(m), "higher_is_better": m not in LOWER_IS_BETTER} for m in entry["scores"]],
           "output_type": "multiple_choice" if choices else "generate_until"}
    if not choices:
        cfg["generation_kwargs"] = _generation_kwargs(entry, run)
    cfg.update(repeats=1, should_decontaminate=False,
               metadata={"version": _version(), "tunebench_task": entry["name"], "scoring": entry["scoring"],
                         "seed": seed_for(run["bench"].seed, entry["scoring"]),
                         "primary_metric": metric_name(entry["primary_metric"])})
    return cfg


def _version() -> str:
    from .. import __version__

    return f"tunebench-{__version__}"


def _run_fields(results: dict, run: dict, samples: dict[str, list[dict]]) -> dict:
    """The keys lm-eval's simple_evaluate and EvaluationTracker add about the model and the run."""
    import transformers

    model, tok, cfg, fmt = run["model"], run["tokenizer"], run["bench"], results["format"]
    args = f"pretrained={results['model_path']}" + (f",peft={results['adapter']}" if results.get("adapter") else "") \
        + f",dtype={fmt['precision']}"
    chat = tok.chat_template if run["use_chat"] and isinstance(getattr(tok, "chat_template", None), str) else None
    env = environment()

    def token(t):
        return [t, str(tok.convert_tokens_to_ids(t))] if t is not None else [None, None]

    return {
        "config": {"model": "tunebench", "model_args": args,
                   "model_num_parameters": sum(p.numel() for p in model.parameters()),
                   "model_dtype": str(next(model.parameters()).dtype), "model_revision": None, "model_sha": "",
                   "batch_size": cfg.batch_size, "batch_sizes": [], "device": run["device"], "use_cache": None,
                   "limit": results["limit"], "bootstrap_iters": BOOTSTRAP_ITERS, "gen_kwargs": None,
                   # tunebench draws nothing from Python's, numpy's or torch's generators when it scores
                   "random_seed": None, "numpy_seed": None, "torch_seed": None, "fewshot_seed": seed_for(cfg.seed, "lm-eval")},
        "git_hash": None, "date": run["started"],
        "pretty_env_info": "\n".join(f"{k}: {v}" for k, v in env.items()),
        "transformers_version": transformers.__version__, "lm_eval_version": None, "upper_git_hash": None,
        "tokenizer_pad_token": token(tok.pad_token), "tokenizer_eos_token": token(tok.eos_token),
        "tokenizer_bos_token": token(tok.bos_token), "eot_token_id": tok.eos_token_id,
        "max_length": getattr(model.config, "max_position_embeddings", None),
        "task_hashes": {name: _sha("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in rows))
                        for name, rows in samples.items()},
        "model_source": "tunebench", "model_name": results["model"], "model_name_sanitized": model_dir_name(results["model"]),
        "system_instruction": None, "system_instruction_sha": None, "fewshot_as_multiturn": False,
        "chat_template": chat, "chat_template_sha": _sha(chat) if chat else None,
        "total_evaluation_time_seconds": str(round(time.time() - run["started"], 2)),
    }
