"""W3: multiple-choice scoring, tunebench vs lm-evaluation-harness, side by side.

Same model directory (the embedded SmolLM2-135M-Instruct, as cached safetensors), same tasks
(an MMLU subject and a BIG-bench multiple-choice task, 0-shot), same prompts: tunebench's
rendered contexts and choices are handed to lm-eval as a JSON task, so both tools score
identical strings. Prints examples/s of both, the ratio, and whether every per-example choice
(and log-likelihood) agrees.

    python bench/w3_score.py [--quick] [--json out.json] [--tasks mmlu/anatomy bigbench/emoji_movie]

Needs lm-eval (`pip install lm-eval==0.4.13`); it is not a dependency of tunebench itself.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def lm_eval_task_yaml(name: str, data_file: Path) -> str:
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data_file}\n"
            "test_split: test\noutput_type: multiple_choice\ndoc_to_text: context\ndoc_to_choice: choices\n"
            "doc_to_target: gold\ntarget_delimiter: \"\"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["mmlu/high_school_psychology", "bigbench/emoji_movie"])
    ap.add_argument("--limit", type=int, default=200, help="examples per task")
    ap.add_argument("--quick", action="store_true", help="40 examples per task")
    ap.add_argument("--batch-size", type=int, default=8, help="tunebench: questions per forward")
    ap.add_argument("--lm-eval-batch-size", type=int, default=32, help="lm-eval: (question, choice) rows per forward")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    limit = 40 if args.quick else args.limit

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tunebench import models
    from tunebench.batching import Formatter
    from tunebench.benchmarks.harness import multiple_choice_metrics
    from tunebench.benchmarks.scoring import Scorer
    from tunebench.benchmarks.tasks import registry

    model_dir = models.resolve("smollm2-135m-instruct").path
    reg = registry()
    tmp = Path(tempfile.mkdtemp(prefix="w3-"))
    tasks = {}
    for name in args.tasks:
        ex = reg[name].load(0, 1234)[:limit]
        safe = "tb_" + name.replace("/", "_")
        data = tmp / f"{safe}.jsonl"
        data.write_text("".join(json.dumps({"context": e.context, "choices": e.choices, "gold": e.gold}) + "\n" for e in ex))
        (tmp / f"{safe}.yaml").write_text(lm_eval_task_yaml(safe, data))
        tasks[name] = (safe, ex)

    # tunebench
    model, tok, _ = models.load("smollm2-135m-instruct", torch.float32)
    fmt = Formatter.for_model(tok, False, "off", raw=True)
    scorer = Scorer(model, fmt, batch_size=args.batch_size)
    tb = {}
    t0 = time.time()
    for name, (_, ex) in tasks.items():
        scores = scorer.score(ex, desc=name)
        tb[name] = {"pred": multiple_choice_metrics(ex, scores)["pred"], "ll": [[c.logprob for c in cs] for cs in scores]}
    tb_s = time.time() - t0
    n = sum(len(ex) for _, ex in tasks.values())
    tb_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del model, scorer

    # lm-evaluation-harness on the same model directory, same strings
    lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=args.lm_eval_batch_size, device="cpu")
    tm = TaskManager(include_path=str(tmp), include_defaults=False)
    t0 = time.time()
    out = simple_evaluate(model=lm, tasks=[s for s, _ in tasks.values()], task_manager=tm, log_samples=True,
                          num_fewshot=0, bootstrap_iters=0)
    le_s = time.time() - t0
    le_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    same_choice, total, max_ll_diff, per_task = 0, 0, 0.0, {}
    for name, (safe, ex) in tasks.items():
        samples = sorted(out["samples"][safe], key=lambda s: s["doc_id"])
        le_ll = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
        le_pred = [max(range(len(l)), key=l.__getitem__) for l in le_ll]
        agree = sum(a == b for a, b in zip(le_pred, tb[name]["pred"]))
        diff = max(abs(a - b) for x, y in zip(le_ll, tb[name]["ll"]) for a, b in zip(x, y))
        acc_tb = sum(p == e.gold for p, e in zip(tb[name]["pred"], ex)) / len(ex)
        acc_le = out["results"][safe]["acc,none"]
        per_task[name] = {"n": len(ex), "identical_choices": agree, "max_loglik_diff": diff,
                          "acc_tunebench": acc_tb, "acc_lm_eval": acc_le}
        same_choice += agree
        total += len(ex)
        max_ll_diff = max(max_ll_diff, diff)
        print(f"{name}: n={len(ex)} acc tunebench {acc_tb:.4f} lm-eval {acc_le:.4f}; identical choices {agree}/{len(ex)}; "
              f"max |loglik diff| {diff:.2e}")

    tb_rate, le_rate = n / tb_s, n / le_s
    print(f"lm_eval: tunebench {tb_rate:.2f} examples/s, lm-eval {le_rate:.2f} examples/s, ratio {tb_rate / le_rate:.2f}x "
          f"({n} examples, fp32, {torch.get_num_threads()} threads)")
    print(f"identical choices: {same_choice}/{total}; peak RSS after tunebench {tb_rss:.0f} MB, after lm-eval {le_rss:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "workload": "W3", "unit": "examples/s", "tunebench": tb_rate, "peers": {"lm_eval": le_rate},
            "ratios": {"lm_eval": tb_rate / le_rate},
            "extra": {"identical_choices": same_choice / total, "max_loglik_diff": max_ll_diff, "tasks": per_task,
                      "peak_rss_mb": {"tunebench": tb_rss, "lm_eval_cumulative": le_rss},
                      "threads": torch.get_num_threads(), "precision": "fp32"}}, indent=2))
    return 0 if same_choice == total else 1


if __name__ == "__main__":
    sys.exit(main())
