"""W2: greedy generation throughput, tunebench vs the loops users write, side by side.

The workload is fixed so that numbers stay comparable: the embedded default model
(SmolLM2-135M-Instruct), the first 200 DialogSum test dialogues rendered with the default template
(summarize_conversation) in the model's chat template, greedy decoding, max_new_tokens 64, CPU
threads 2. Every tool gets the same prompt strings and the same weights in the same precision.

- tunebench: `tunebench.generation.generate`, the engine behind `tunebench generate` / `evaluate`
  (per-prompt prefill, an in-place KV buffer decoded in lock step, finished rows leaving the batch).
- one_at_a_time: the loop of the common course notebooks, one `model.generate` per dialogue.
- pipeline: transformers' text-generation `pipeline` with a batch size (the same as tunebench's)
  and left padding.

Figures: dialogues/s and generated tokens/s of each (model loading excluded), the share of
tunebench's and the pipeline's outputs that are identical to the one-at-a-time outputs, and peak
RSS. Each tool runs in a fresh process, so its peak RSS is its own. tunebench runs before and
after the peers and its time is the mean of its two runs (the machine's speed drifts over the
minutes the peers take).

    python bench/w2_generate.py [--quick] [--n 200] [--json out.json] [--precision fp32|bf16] [--device cpu|cuda]
                                [--model-size 135m|360m|1.7b]

`--model-size 360m|1.7b` generates with SmolLM2's configuration of that size and random weights
(bench/_models.py), the same directory for every tool. Random weights do not stop at EOS: every
dialogue runs to max_new_tokens in every tool, so the work stays equal; outputs are still compared
(same weights, greedy).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import add_device_arg, gpu_peak_mb, pin_device, run_child  # noqa: E402  (bench/ is the script's directory)
from _models import add_size_arg, model_name, model_path, model_record  # noqa: E402

MODEL = "smollm2-135m-instruct"  # --model-size 360m|1.7b: the built directory (bench/_models.py)
MAX_NEW = 64
PEERS = ("one_at_a_time", "pipeline")


def worker(name: str, work: Path, precision: str, batch_size: int, device: str) -> None:
    import torch

    from tunebench import models
    from tunebench.generation import _until_eos
    from tunebench.models import stop_ids

    prompts = json.loads((work / "prompts.json").read_text())
    model, tok, _ = models.load(MODEL, torch.bfloat16 if precision == "bf16" else torch.float32)
    model.to(device).eval()
    gen_tokens = 0
    if name == "tunebench":
        from tunebench.generation import generate
        from tunebench.models.batching import Formatter

        # the prompts are already rendered in the chat template: hand them over as raw text
        fmt = Formatter(tok, seq2seq=False, use_chat=False, raw=True)
        t0 = time.perf_counter()
        outputs, stats = generate(model, fmt, prompts, batch_size, MAX_NEW, progress=False)
        seconds = time.perf_counter() - t0
        gen_tokens = stats["generated_tokens"]
    elif name == "one_at_a_time":
        outputs, stop = [], stop_ids(model, tok)
        t0 = time.perf_counter()
        for p in prompts:
            inputs = tok(p, return_tensors="pt", add_special_tokens=False).to(device)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
            new = out[0, inputs["input_ids"].shape[1]:]
            gen_tokens += len(_until_eos(new.tolist(), stop, tok.pad_token_id, False))
            outputs.append(tok.decode(new, skip_special_tokens=True).strip())
        seconds = time.perf_counter() - t0
    else:
        from transformers import pipeline

        tok.padding_side = "left"
        pipe = pipeline("text-generation", model=model, tokenizer=tok, device=device)
        t0 = time.perf_counter()
        res = pipe(prompts, batch_size=batch_size, max_new_tokens=MAX_NEW, do_sample=False, return_full_text=False,
                   add_special_tokens=False)
        seconds = time.perf_counter() - t0
        outputs = [r[0]["generated_text"].strip() for r in res]
        gen_tokens = sum(len(tok(o, add_special_tokens=False).input_ids) for o in outputs)
    (work / f"{name}.json").write_text(json.dumps({"outputs": outputs, "seconds": seconds, "generated_tokens": gen_tokens,
                                                   "threads": torch.get_num_threads(), "peak_gpu_mb": gpu_peak_mb()}))


def prepare(work: Path, n: int) -> list[str]:
    from tunebench import models
    from tunebench.config import DataConfig
    from tunebench.data.examples import prepare as prepare_data
    from tunebench.models.batching import Formatter

    examples, _ = prepare_data(DataConfig(eval_template="summarize_conversation", test_limit=n), only=("test",))
    fmt = Formatter.for_model(models.load_tokenizer(models.resolve(MODEL).path), False)
    prompts = [fmt.prompt_text(e["prompt"]) for e in examples["test"]]
    (work / "prompts.json").write_text(json.dumps(prompts))
    return prompts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 dialogues")
    ap.add_argument("--n", type=int, default=200, help="DialogSum test dialogues")
    ap.add_argument("--batch-size", type=int, default=64, help="tunebench's and the pipeline's batch size")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="weights and compute, every tool alike")
    ap.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS)
    ap.add_argument("--threads", type=int, default=2)
    add_device_arg(ap)
    add_size_arg(ap)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global MODEL
    MODEL = model_name(args.model_size)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    pin_device(args.device)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        worker(args.worker, Path(args.work), args.precision, args.batch_size, args.device)
        return 0

    n = 40 if args.quick else args.n
    print(f"model: {args.model_size} ({model_path(args.model_size)})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="w2-"))
    try:
        prompts = prepare(work, n)
        res, runs = {}, []
        # tunebench runs before and after the peers, and its time is the mean of the two: this
        # machine's speed drifts by several percent over the minutes the one-at-a-time loop takes
        for name in ("tunebench", *args.peers, *(["tunebench"] if args.peers else [])):
            rss = run_child([sys.executable, __file__, "--worker", name, "--work", str(work), "--precision",
                              args.precision, "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                              "--device", args.device, "--model-size", args.model_size])
            r = {**json.loads((work / f"{name}.json").read_text()), "peak_rss_mb": rss}
            if name == "tunebench":
                runs.append(r)
            res[name] = r
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["tunebench"] = {**runs[0], "seconds": sum(r["seconds"] for r in runs) / len(runs),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
    runs_agree = all(r["outputs"] == runs[0]["outputs"] for r in runs)

    def rate(r):
        return len(prompts) / r["seconds"]

    tb = res["tunebench"]
    ref = res.get("one_at_a_time")
    same = {k: sum(a == b for a, b in zip(v["outputs"], ref["outputs"])) / len(prompts)
            for k, v in res.items() if ref and k != "one_at_a_time"}
    peers = {k: rate(res[k]) for k in args.peers}
    ratios = {k: rate(tb) / v for k, v in peers.items()}
    for k in args.peers:
        print(f"{k}: tunebench {rate(tb):.2f} dialogues/s ({tb['generated_tokens'] / tb['seconds']:.0f} generated tokens/s), "
              f"{k} {peers[k]:.2f} dialogues/s ({res[k]['generated_tokens'] / res[k]['seconds']:.0f} generated tokens/s), "
              f"ratio {ratios[k]:.2f}x; peak RSS {tb['peak_rss_mb']:.0f} MB vs {res[k]['peak_rss_mb']:.0f} MB"
              + (f", peak GPU memory {tb['peak_gpu_mb']:.0f} MB vs {res[k]['peak_gpu_mb']:.0f} MB" if args.device == "cuda" else ""))
    if ref:
        print(f"identical to one-at-a-time: tunebench {same['tunebench']:.1%}"
              + (f", pipeline {same['pipeline']:.1%}" if "pipeline" in same else "")
              + f" ({len(prompts)} dialogues, {args.precision}, batch {args.batch_size}, {args.threads} threads, {args.device})")
    if len(runs) > 1:
        print("tunebench runs: " + ", ".join(f"{r['seconds']:.1f} s" for r in runs)
              + f" (mean used); outputs {'identical' if runs_agree else 'DIFFER'} between runs")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "workload": "W2", "unit": "dialogues/s", "model": model_record(args.model_size),
            "tunebench": rate(tb), "peers": peers, "ratios": ratios,
            "extra": {"identical_to_one_at_a_time": same, "generated_tokens_per_s":
                      {k: v["generated_tokens"] / v["seconds"] for k, v in res.items()},
                      "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in res.items()},
                      "peak_gpu_mb": {k: v["peak_gpu_mb"] for k, v in res.items()}, "device": args.device,
                      "seconds": {k: v["seconds"] for k, v in res.items()}, "dialogues": len(prompts),
                      "tunebench_runs_seconds": [r["seconds"] for r in runs], "tunebench_runs_agree": runs_agree,
                      "precision": args.precision, "batch_size": args.batch_size, "threads": args.threads,
                      "max_new_tokens": MAX_NEW}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
