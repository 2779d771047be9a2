"""W3: multiple-choice scoring, tunebench vs lm-evaluation-harness, side by side.

Same model directory (the embedded SmolLM2-135M-Instruct, as cached safetensors), same tasks
(an MMLU subject and a BIG-bench multiple-choice task, 0-shot), same prompts: tunebench's
rendered contexts and choices are handed to lm-eval as a JSON task, so both tools score
identical strings. BIG-bench tasks are rendered with the lm-eval scoring convention
(`registry()[name].load(shots, seed)`), the one lm-eval's own BIG-bench tasks use. Prints
examples/s of both, the ratio, and whether every per-example choice (and log-likelihood) agrees.

Both tools are timed over the same window, scoring only: the model is loaded and the examples
built before it starts, and it holds tokenization and the forwards. For tunebench that is its
`Scorer.score` calls; for lm-eval, which builds its tasks and requests inside `simple_evaluate`,
the one `lm.loglikelihood` call that `evaluate` makes with every request. examples/s and the
ratio are over that window. Each tool's whole-process wall time (interpreter start-up, imports,
model load, building, scoring, writing) is printed beside it and recorded in the JSON.

    python bench/w3_score.py [--quick] [--limit 200] [--json out.json] [--tasks mmlu/anatomy bigbench/emoji_movie]
                             [--model-size 135m|360m|1.7b]

`--model-size 360m|1.7b` scores with SmolLM2's configuration of that size and random weights
(bench/_models.py), the same directory for both tools: accuracy is then chance, but both tools
score the same weights, so choices and log-likelihoods are still compared.

Needs lm-eval (`pip install -e '.[bench]'`); it is not a dependency of tunebench itself. Each tool
scores in a process of its own, so each peak RSS is that tool's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import add_device_arg, gpu_peak_mb, pin_device, run_child  # noqa: E402  (bench/ is the script's directory)
from _models import add_size_arg, model_name, model_path, model_record  # noqa: E402

MODEL = "smollm2-135m-instruct"  # --model-size 360m|1.7b: the built directory (bench/_models.py)


def lm_eval_task_yaml(name: str, data_file: Path) -> str:
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data_file}\n"
            "test_split: test\noutput_type: multiple_choice\ndoc_to_text: context\ndoc_to_choice: choices\n"
            "doc_to_target: gold\ntarget_delimiter: \"\"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")


def worker(name: str, tmp: Path, tasks: dict, batch_size: int, lm_eval_batch_size: int, device: str) -> None:
    """Score every task with one tool; per-example predictions and log-likelihoods, and the seconds of
    each phase, to TMP/NAME.json. `scoring_s` is the window both tools are compared over: the model
    is loaded and the examples built before it starts; it holds tokenization and forwards only."""
    import torch

    from tunebench import models

    res, phases = {}, {}
    if name == "tunebench":
        from tunebench.benchmarks.scoring import Scorer
        from tunebench.benchmarks.tasks import registry
        from tunebench.metrics.choices import multiple_choice_metrics
        from tunebench.models.batching import Formatter

        t0 = time.perf_counter()
        reg = registry()
        examples = {t: [e for e in reg[t].load(0, 1234)][:n] for t, (_, n) in tasks.items()}
        phases["build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, tok, _ = models.load(MODEL, torch.float32)
        model.to(device)
        scorer = Scorer(model, Formatter.for_model(tok, False, "off", raw=True), batch_size=batch_size)
        phases["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = {t: scorer.score(ex, desc=t) for t, ex in examples.items()}
        phases["scoring_s"] = time.perf_counter() - t0
        for t, ex in examples.items():
            res[t] = {"pred": multiple_choice_metrics(ex, scores[t])["pred"],
                      "ll": [[c.logprob for c in cs] for cs in scores[t]]}
    else:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        t0 = time.perf_counter()
        lm = HFLM(pretrained=models.resolve(MODEL).path, dtype="float32",
                  batch_size=lm_eval_batch_size, device=device)
        phases["load_s"] = time.perf_counter() - t0
        # lm-eval builds its tasks and requests inside simple_evaluate, then hands all requests of a
        # type to one `lm.loglikelihood` call (tokenization and forwards): that call is its scoring window
        scoring, loglikelihood = [], lm.loglikelihood

        def timed_loglikelihood(requests, *a, **kw):
            start = time.perf_counter()
            out = loglikelihood(requests, *a, **kw)
            scoring.append(time.perf_counter() - start)
            return out

        lm.loglikelihood = timed_loglikelihood
        t0 = time.perf_counter()
        tm = TaskManager(include_path=str(tmp), include_defaults=False)
        out = simple_evaluate(model=lm, tasks=[safe for safe, _ in tasks.values()], task_manager=tm, log_samples=True,
                              num_fewshot=0, bootstrap_iters=0)
        phases["simple_evaluate_s"] = time.perf_counter() - t0
        assert len(scoring) == 1, scoring  # one request type, one call
        phases["scoring_s"] = scoring[0]
        for t, (safe, _) in tasks.items():
            samples = sorted(out["samples"][safe], key=lambda s: s["doc_id"])
            ll = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
            res[t] = {"pred": [max(range(len(x)), key=x.__getitem__) for x in ll], "ll": ll,
                      "acc": out["results"][safe]["acc,none"]}
    (tmp / f"{name}.json").write_text(json.dumps({"tasks": res, "phases": phases, "threads": torch.get_num_threads(),
                                                  "peak_gpu_mb": gpu_peak_mb()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["mmlu/high_school_psychology", "bigbench/emoji_movie"])
    ap.add_argument("--limit", type=int, default=200, help="examples per task")
    ap.add_argument("--quick", action="store_true", help="40 examples per task")
    ap.add_argument("--batch-size", type=int, default=8, help="tunebench: questions per forward")
    ap.add_argument("--lm-eval-batch-size", type=int, default=32, help="lm-eval: (question, choice) rows per forward")
    add_device_arg(ap)
    add_size_arg(ap)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global MODEL
    MODEL = model_name(args.model_size)
    limit = 40 if args.quick else args.limit
    pin_device(args.device)

    if args.worker:
        work = Path(args.work)
        worker(args.worker, work, json.loads((work / "tasks.json").read_text()), args.batch_size,
               args.lm_eval_batch_size, args.device)
        return 0

    from tunebench.benchmarks.tasks import registry

    reg = registry()
    print(f"model: {args.model_size} ({model_path(args.model_size)})", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="w3-"))
    tasks, examples = {}, {}
    for name in args.tasks:
        ex = reg[name].load(0, 1234)[:limit]
        safe = "tb_" + name.replace("/", "_")
        data = tmp / f"{safe}.jsonl"
        data.write_text("".join(json.dumps({"context": e.context, "choices": e.choices, "gold": e.gold}) + "\n" for e in ex))
        (tmp / f"{safe}.yaml").write_text(lm_eval_task_yaml(safe, data))
        tasks[name], examples[name] = (safe, len(ex)), ex
    (tmp / "tasks.json").write_text(json.dumps(tasks))
    res, rss, process_s = {}, {}, {}
    try:
        for tool in ("tunebench", "lm_eval"):
            t0 = time.perf_counter()
            rss[tool] = run_child([sys.executable, __file__, "--worker", tool, "--work", str(tmp), "--batch-size",
                                   str(args.batch_size), "--lm-eval-batch-size", str(args.lm_eval_batch_size),
                                   "--device", args.device, "--model-size", args.model_size])
            process_s[tool] = time.perf_counter() - t0  # the whole worker process: start-up, imports, load, build, score
            res[tool] = json.loads((tmp / f"{tool}.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tb, le = res["tunebench"]["tasks"], res["lm_eval"]["tasks"]

    same_choice, total, max_ll_diff, per_task = 0, 0, 0.0, {}
    for name, ex in examples.items():
        agree = sum(a == b for a, b in zip(le[name]["pred"], tb[name]["pred"]))
        diff = max(abs(a - b) for x, y in zip(le[name]["ll"], tb[name]["ll"]) for a, b in zip(x, y))
        acc_tb = sum(p == e.gold for p, e in zip(tb[name]["pred"], ex)) / len(ex)
        acc_le = le[name]["acc"]
        per_task[name] = {"n": len(ex), "identical_choices": agree, "max_loglik_diff": diff,
                          "acc_tunebench": acc_tb, "acc_lm_eval": acc_le}
        same_choice += agree
        total += len(ex)
        max_ll_diff = max(max_ll_diff, diff)
        print(f"{name}: n={len(ex)} acc tunebench {acc_tb:.4f} lm-eval {acc_le:.4f}; identical choices {agree}/{len(ex)}; "
              f"max |loglik diff| {diff:.2e}")

    scoring_s = {tool: r["phases"]["scoring_s"] for tool, r in res.items()}
    tb_rate, le_rate = total / scoring_s["tunebench"], total / scoring_s["lm_eval"]
    print(f"lm_eval: tunebench {tb_rate:.2f} examples/s, lm-eval {le_rate:.2f} examples/s, ratio {tb_rate / le_rate:.2f}x "
          f"(scoring only: {scoring_s['tunebench']:.1f} s vs {scoring_s['lm_eval']:.1f} s; {total} examples, fp32, "
          f"{res['tunebench']['threads']} threads, {args.device}); whole process {process_s['tunebench']:.1f} s vs "
          f"{process_s['lm_eval']:.1f} s ({process_s['lm_eval'] / process_s['tunebench']:.2f}x); "
          f"peak RSS {rss['tunebench']:.0f} MB vs {rss['lm_eval']:.0f} MB"
          + (f", peak GPU memory {res['tunebench']['peak_gpu_mb']:.0f} MB vs {res['lm_eval']['peak_gpu_mb']:.0f} MB"
             if args.device == "cuda" else ""))
    print(f"identical choices: {same_choice}/{total}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "workload": "W3", "unit": "examples/s", "model": model_record(args.model_size),
            "tunebench": tb_rate, "peers": {"lm_eval": le_rate},
            "ratios": {"lm_eval": tb_rate / le_rate},
            "extra": {"window": "scoring only (model loaded, examples built; tokenization and forwards): tunebench's "
                                "Scorer.score calls, lm-eval's lm.loglikelihood call inside simple_evaluate",
                      "scoring_seconds": scoring_s, "process_seconds": process_s,
                      "phases": {tool: r["phases"] for tool, r in res.items()}, "examples": total,
                      "identical_choices": same_choice / total, "max_loglik_diff": max_ll_diff, "tasks": per_task,
                      "peak_rss_mb": rss, "peak_gpu_mb": {k: v["peak_gpu_mb"] for k, v in res.items()},
                      "device": args.device, "threads": res["tunebench"]["threads"], "precision": "fp32"}}, indent=2))
    return 0 if same_choice == total else 1


if __name__ == "__main__":
    sys.exit(main())
