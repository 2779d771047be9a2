"""BIG-bench parity: `tunebench bench --scoring bigbench` against BIG-bench's own code, same model.

For every BIG-bench task under the data root's bigbench/ folder (or the --task paths), this runs
BIG-bench 1.0.0's own `JsonTask` (prompts, example selection, metrics, aggregation) with a model
adapter over the same model, and `tunebench bench` on the same tasks, 0-shot, `--limit 50`
(BIG-bench's `max_examples`: tunebench is told `--select seeded` to draw the same examples), and
prints per task: tunebench's score, BIG-bench's score, how many examples got a different prompt,
and how many are judged differently (a different score for multiple choice, a different
post-processed output for generation).

    python bench/bigbench_parity.py [--limit 50] [--task DIR ...] [--json out.json] [--bigbench-sdist FILE]

BIG-bench's code comes from the `bigbench==1.0.0` source distribution on PyPI and T5's metric
functions (which BIG-bench calls for BLEU and ROUGE) from the `t5==0.9.4` wheel; both are fetched
with pip into $TUNEBENCH_CACHE/parity (nothing is installed) and imported from there. Stubbed,
because BIG-bench imports them but this path does not use them: `tensorflow` (json_task.py logs
through it for metrics it has already refused; json_utils.py reads files through it, and the
adapter passes JsonTask a plain-file `JsonUtils` instead, the constructor argument BIG-bench
offers for that), `bigbench.benchmark_tasks` (the bundled task list), `datasets.load_metric`
(BLEURT only), and the `t5` / `t5.evaluation` package files, whose imports pull in TensorFlow:
`t5/evaluation/metrics.py` and `qa_utils.py` themselves run unchanged.

The adapter does what BIG-bench's `BIGBenchHFModel` does, on a PyTorch model: `cond_log_prob`
tokenizes each input and each target apart and concatenates the ids (the tokenizer's special
tokens on the input only: BIG-bench's wrapper ran GPT-2, whose tokenizer adds none), sums the
targets' log-probabilities in fp32 and renormalises them unless asked for absolute ones;
`generate_text` decodes greedily (BIG-bench's wrapper samples with temperature 1 and top-k 40;
both tools are greedy here) for up to 256 new tokens with transformers' `generate`, decodes the
new tokens, and hands them to BIG-bench's own `postprocess_output`. T5's ROUGE takes a bootstrap
median from numpy's global generator, which BIG-bench never seeds: the script seeds it at 0 just
before BIG-bench's `rouge_fn` runs, as tunebench does.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import zipfile
from pathlib import Path

from _common import add_device_arg, pin_device  # noqa: E402  (bench/ is the script's directory)

MODEL = "smollm2-135m-instruct"
SDIST, T5 = "bigbench==1.0.0", "t5==0.9.4"


# ---------------------------------------------------------------------------- BIG-bench's code

def _cache() -> Path:
    from tunebench.models import cache_dir

    d = cache_dir() / "parity"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _pip_download(spec: str, dest: Path, source: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    cmd += ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
    subprocess.run(cmd, check=True)
    return next(p for p in dest.iterdir() if p.name.startswith(spec.split("==")[0]))


def bigbench_source(sdist: str | None) -> Path:
    """A folder holding BIG-bench's `bigbench/api` and `bigbench/models` and T5's `t5/evaluation`."""
    root = _cache() / "src"
    if (root / "bigbench" / "api" / "json_task.py").is_file() and (root / "t5" / "evaluation" / "metrics.py").is_file():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(sdist) if sdist else _pip_download(SDIST, Path(tmp), source=True)
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                rel = m.name.split("/", 1)[-1]
                if m.isfile() and rel.endswith(".py") and rel.startswith(("bigbench/api/", "bigbench/models/")) \
                        or rel == "bigbench/__init__.py":
                    m.name = rel
                    t.extract(m, root)
        wheel = _pip_download(T5, Path(tmp), source=False)
        with zipfile.ZipFile(wheel) as z:
            for name in ("t5/evaluation/metrics.py", "t5/evaluation/qa_utils.py"):
                z.extract(name, root)
    return root


def import_bigbench(root: Path):
    """BIG-bench's json_task and api modules, with the unused imports stubbed (see the docstring)."""
    import importlib.machinery

    import datasets  # before the stubs: it probes for TensorFlow when imported

    def stub(name: str, **attrs) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        m.__path__ = []  # a package, so that submodules can be stubbed below it
        m.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = m
        return m

    unused = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stubbed: not on the parity path"))  # noqa: E731
    tf = stub("tensorflow", logging=types.SimpleNamespace(info=lambda *a, **k: None), io=types.SimpleNamespace(gfile=None))
    tf.compat = stub("tensorflow.compat", v1=tf, v2=tf)
    sys.modules["tensorflow.compat.v1"] = sys.modules["tensorflow.compat.v2"] = tf
    stub("bigbench.benchmark_tasks")
    if not hasattr(datasets, "load_metric"):
        datasets.load_metric = unused
    stub("t5"), stub("t5.evaluation")
    sys.path.insert(0, str(root))
    sys.modules["t5"].__path__ = [str(root / "t5")]
    sys.modules["t5.evaluation"].__path__ = [str(root / "t5" / "evaluation")]
    import bigbench.api.json_task as json_task
    import bigbench.api.json_utils as json_utils
    import bigbench.api.model as model_api
    import bigbench.api.task_metrics as task_metrics
    import bigbench.models.model_utils as model_utils

    return types.SimpleNamespace(json_task=json_task, json_utils=json_utils, model=model_api,
                                 task_metrics=task_metrics, model_utils=model_utils)


def local_json_utils(bb):
    class LocalJsonUtils(bb.json_utils.JsonUtils):
        """GFileUtils with open() and os in place of TensorFlow's gfile."""

        def get_subdir_json_file_paths(self, base_dir):
            base_dir = os.path.abspath(os.path.expanduser(base_dir))
            dirs = [os.path.join(base_dir, d) for d in os.listdir(base_dir)]
            paths = [os.path.join(d, "task.json") for d in dirs if os.path.isdir(d)]
            return {os.path.split(os.path.split(p)[0])[-1]: p for p in paths if os.path.isfile(p)}

        def load_json_file(self, filepath):
            import collections

            with open(filepath, "rb") as f:
                return json.load(f, object_pairs_hook=collections.OrderedDict)

        task_json_paths = task_metadata = property(lambda self: {})

    return LocalJsonUtils()


def adapter(bb, model, tok, batch_size: int):
    import numpy as np
    import scipy.special
    import torch

    class Adapter(bb.model.Model):
        """BIG-bench's Model API over a PyTorch causal LM, as BIGBenchHFModel does it (greedy)."""

        def model_data(self):
            n = sum(p.numel() for p in model.parameters())
            return bb.model.ModelData(model_family="SmolLM2", model_name=MODEL, total_params=n, non_embedding_params=n,
                                      flop_matched_non_embedding_params=n, training_batch_size=1, training_steps=1,
                                      description="tunebench's embedded default model", decoding_params={})

        def cond_log_prob(self, inputs, targets, batch_size=batch_size, absolute_normalization=False):
            single = isinstance(inputs, str)
            input_list, target_list = ([inputs], [targets]) if single else (inputs, targets)
            flat = [(i, inp, t) for i, (inp, ts) in enumerate(zip(input_list, target_list)) for t in ts]
            scores = [[] for _ in input_list]
            for k in range(0, len(flat), batch_size):
                chunk = flat[k:k + batch_size]
                ctx = [tok(inp).input_ids for _, inp, _ in chunk]
                tgt = [tok(t, add_special_tokens=False).input_ids for _, _, t in chunk]
                n = max(len(c) + len(t) for c, t in zip(ctx, tgt))
                ids = torch.full((len(chunk), n), tok.pad_token_id, dtype=torch.long)
                att = torch.zeros((len(chunk), n), dtype=torch.long)
                for r, (c, t) in enumerate(zip(ctx, tgt)):
                    ids[r, : len(c) + len(t)], att[r, : len(c) + len(t)] = torch.tensor(c + t), 1
                with torch.inference_mode():
                    logp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits.float(), -1)
                for r, ((i, _, _), c, t) in enumerate(zip(chunk, ctx, tgt)):
                    pos = torch.arange(len(c) - 1, len(c) + len(t) - 1)
                    scores[i].append(float(logp[r, pos, torch.tensor(t, dtype=torch.long)].sum()) if t else 0.0)
            if not absolute_normalization:
                scores = [list(np.array(s) - scipy.special.logsumexp(s)) for s in scores]
            return scores[0] if single else scores

        def generate_text(self, inputs, max_length=0, stop_string=None, output_regex=None):
            max_length = max_length or 256
            single = isinstance(inputs, str)
            input_list = [inputs] if single else list(inputs)
            encoded = [tok(x).input_ids for x in input_list]
            out = [""] * len(input_list)
            order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
            for k in range(0, len(order), batch_size):
                idx = order[k:k + batch_size]
                n = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), n), tok.pad_token_id, dtype=torch.long)
                att = torch.zeros((len(idx), n), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, n - len(encoded[i]):], att[r, n - len(encoded[i]):] = torch.tensor(encoded[i]), 1
                with torch.inference_mode():
                    gen = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=max_length, do_sample=False,
                                         pad_token_id=tok.pad_token_id)
                for r, i in enumerate(idx):
                    out[i] = tok.decode(gen[r, n:], skip_special_tokens=True)
            out = bb.model_utils.postprocess_output(out, max_length, stop_string, output_regex)
            return out[0] if single else out

    return Adapter()


def run_bigbench(bb, task_file: Path, model_adapter, limit: int) -> dict:
    """BIG-bench's scores (per subtask and aggregate) and its per-example records."""
    import numpy as np

    rouge = bb.task_metrics.GENERATIVE_FN["rouge"]
    if getattr(rouge, "__name__", "") != "seeded_rouge":
        def seeded_rouge(targets, responses):
            np.random.seed(0)
            return rouge(targets, responses)
        bb.task_metrics.GENERATIVE_FN["rouge"] = seeded_rouge
    task = bb.json_task.JsonTask(str(task_file), shot_list=[0], max_examples=limit,
                                 task_json_utils=local_json_utils(bb))
    score_data = task.evaluate_model(model_adapter, max_examples=limit, random_seed=42)
    leaves = task.subtasks or [task]
    samples = {}
    for leaf in leaves:
        key = leaf.name.split(":", 1)[1] if ":" in leaf.name else ""
        for s in leaf.shot_examples[0]:
            # prompt, choices and targets: examples may share a prompt (hhh_alignment asks one question
            # with several pairs of answers, and does not append them)
            record = {"key": (leaf.task_prefix + s["input"], tuple(s.get("choice", ())), tuple(s["target"]))}
            if "log_prob" in s:
                pick = s["choice"][bb.task_metrics.argmax(s["log_prob"])]
                record.update(pick=pick, score=float(s["target_scores"][pick]))
            if "generative_response" in s:
                record["output"] = s["generative_response"]
            samples.setdefault(key, []).append(record)
    final = next(d for d in score_data if d.subtask_description == task.name)
    return {"scores": final.score_dict, "preferred": final.preferred_score, "samples": samples}


# ---------------------------------------------------------------------------- the comparison

def compare(name: str, tb_entry: dict, tb_rows: list[dict], bb_res: dict) -> dict:
    by_sub: dict = {}
    for r in tb_rows:
        by_sub.setdefault(r.get("subtask") or "", []).append(r)
    bb_samples = bb_res["samples"]
    if set(by_sub) != set(bb_samples) and len(bb_samples) == len(by_sub):
        # BIG-bench names subtasks by the `name` inside their files, tunebench by their folders: pair them in order
        by_sub = dict(zip(sorted(bb_samples), [by_sub[k] for k in sorted(by_sub)]))
    n = prompts = judged = outputs = 0
    for key, records in bb_samples.items():
        rows = {(r["context"], tuple(r.get("choices", ())), tuple(r.get("targets") or ())): r for r in by_sub.get(key, [])}
        for rec in records:
            n += 1
            row = rows.get(rec["key"])
            if row is None:
                prompts += 1
                continue
            if "score" in rec and "prediction" in row:
                judged += row["choices"][row["prediction"]] != rec["pick"] and \
                    row["choice_scores"][row["prediction"]] != rec["score"]
            if "output" in rec and "output" in row:
                outputs += row["output"] != rec["output"]
    pref = bb_res["preferred"]
    ours = tb_entry["scores"].get(pref)
    kind = "generative" if all("score" not in r for recs in bb_samples.values() for r in recs) else "multiple choice"
    return {"task": name, "kind": kind, "n": n, "preferred": pref, "tunebench": ours, "bigbench": bb_res["scores"].get(pref),
            "prompts_differ": prompts, "judged_differently": judged + (outputs if kind == "generative" else 0),
            "outputs_differ": outputs, "exact_str_match": (tb_entry["scores"].get("exact_str_match"),
                                                           bb_res["scores"].get("exact_str_match")),
            "all_scores": {"tunebench": tb_entry["scores"], "bigbench": bb_res["scores"]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", nargs="+", help="BIG-bench task folders (default: every task under the data root's bigbench/)")
    ap.add_argument("--limit", type=int, default=50, help="examples per task (BIG-bench's max_examples)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--bigbench-sdist", help="bigbench-1.0.0.tar.gz already downloaded (else pip fetches it)")
    ap.add_argument("--json", help="write the table here")
    add_device_arg(ap)
    args = ap.parse_args()
    pin_device(args.device)

    import torch

    from tunebench import models
    from tunebench.benchmarks.bigbench import load_bigbench_path
    from tunebench.benchmarks.tasks import data_root
    from tunebench.cli import main as tunebench

    torch.manual_seed(0)
    folders = [Path(t) for t in args.task] if args.task else \
        [Path(t.source).parent for t in load_bigbench_path(data_root() / "bigbench", "bigbench/")]
    bb = import_bigbench(bigbench_source(args.bigbench_sdist))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench"
        t0 = time.time()
        argv = ["bench", "--model", MODEL, "--limit", str(args.limit), "--select", "seeded", "--scoring", "bigbench",
                "--precision", "fp32", "--batch-size", str(args.batch_size), "--out", str(out)]
        for f in folders:
            argv += ["--task", str(f)]
        if tunebench(argv) != 0:
            raise SystemExit("tunebench bench failed")
        tb_seconds = time.time() - t0
        results = json.loads((out / "results.json").read_text())
        rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]

    model, tok, _ = models.load(MODEL, torch.float32)
    model_adapter = adapter(bb, model, tok, args.batch_size)
    table, t0 = [], time.time()
    for folder, entry in zip(folders, results["tasks"]):
        bb_res = run_bigbench(bb, folder / "task.json", model_adapter, args.limit)
        row = compare(entry["name"], entry, [r for r in rows if r["task"] == entry["name"]], bb_res)
        table.append(row)
        em = row["exact_str_match"]
        print(f"{row['task']:<44} {row['kind']:<15} n={row['n']:>3} {row['preferred']}: tunebench {row['tunebench']:.4f} "
              f"BIG-bench {row['bigbench']:.4f}; prompts differ {row['prompts_differ']}, judged differently "
              f"{row['judged_differently']}" + (f"; exact_str_match {em[0]:.4f} vs {em[1]:.4f}" if em[1] is not None else ""),
              flush=True)
    bb_seconds = time.time() - t0

    mc = [r for r in table if r["kind"] == "multiple choice"]
    gen = [r for r in table if r["exact_str_match"][1] is not None]  # every task that generates
    worst = min((1 - r["judged_differently"] / r["n"] for r in mc), default=1.0)
    gen_ok = all(r["exact_str_match"][0] == r["exact_str_match"][1] for r in gen)
    print(f"\nmultiple choice: {len(mc)} tasks, lowest agreement {worst:.1%} (target >= 99%); tasks that generate: {len(gen)}, "
          f"exact_str_match identical on {sum(r['exact_str_match'][0] == r['exact_str_match'][1] for r in gen)}/{len(gen)}; "
          f"prompts differing: {sum(r['prompts_differ'] for r in table)}; tunebench {tb_seconds:.0f} s, BIG-bench's code "
          f"{bb_seconds:.0f} s ({torch.get_num_threads()} threads, fp32)")
    if args.json:
        Path(args.json).write_text(json.dumps({"limit": args.limit, "tasks": table, "lowest_mc_agreement": worst,
                                               "generative_identical": gen_ok}, indent=2))
    return 0 if worst >= 0.99 and gen_ok else 1


if __name__ == "__main__":
    sys.exit(main())
