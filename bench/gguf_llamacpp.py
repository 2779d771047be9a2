"""llama.cpp on `tunebench export --gguf`: greedy completions from the GGUF files against tunebench's.

Runs the export's f16 and q8_0 files with llama.cpp itself (llama-cpp-python) on the first N
prompts of a prepared test split (default 10 of runs/demo/data/test.jsonl) and compares, prompt by
prompt:

- llama.cpp's tokenization of the prompt text tunebench renders (chat template applied, special
  tokens parsed) against tunebench's prompt ids;
- llama.cpp's greedy completion (temperature 0, no repetition penalty, from tunebench's prompt ids,
  stopping at the GGUF's end-of-generation tokens) against tunebench's own generation on the run
  (fp32) and against transformers' greedy generation on the same GGUF file (the same rounded
  weights: what is left is the inference engine's arithmetic).

    python bench/gguf_llamacpp.py --llama-python /work/llamacpp-venv/bin/python [--run runs/demo/train]
        [--data runs/demo/data] [--export runs/demo/export] [--n 10] [--json F]

llama-cpp-python builds llama.cpp from source when installed, and is not a dependency of
tunebench: it lives in a virtual environment of its own (`--llama-python`), and this script runs
it there as a child process (`--worker`, reading a JSON job on stdin). Not part of `make test`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def worker() -> None:
    """In the llama.cpp environment: tokenize and complete what the job on stdin asks."""
    from llama_cpp import Llama

    job = json.load(sys.stdin)
    llm = Llama(model_path=job["gguf"], n_ctx=job["n_ctx"], n_threads=job["threads"], seed=0, verbose=False)
    rows = []
    for p in job["prompts"]:
        ids = llm.tokenize(p["text"].encode("utf-8"), add_bos=False, special=True)
        out = llm.create_completion(p["ids"], max_tokens=job["max_new_tokens"], temperature=0.0, top_k=1, top_p=1.0,
                                    min_p=0.0, repeat_penalty=1.0)
        rows.append({"ids": ids, "text": out["choices"][0]["text"]})
    json.dump(rows, sys.stdout)


def _llamacpp(python: str, gguf: Path, prompts: list[dict], max_new_tokens: int) -> list[dict]:
    import os

    job = {"gguf": str(gguf), "prompts": prompts, "max_new_tokens": max_new_tokens, "threads": os.cpu_count() or 1,
           "n_ctx": max(len(p["ids"]) for p in prompts) + max_new_tokens + 8}
    r = subprocess.run([python, __file__, "--worker"], input=json.dumps(job), capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"llama.cpp worker failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-python", required=True, help="python of the environment where llama-cpp-python is installed")
    ap.add_argument("--run", default="runs/demo/train")
    ap.add_argument("--data", default="runs/demo/data")
    ap.add_argument("--export", default="runs/demo/export", help="a `tunebench export --gguf f16 --gguf q8_0` of --run")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--json")
    args = ap.parse_args()

    import _common  # noqa: F401  (bench/ is the script's directory: sets the offline variables)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebench import models
    from tunebench.generation import generate
    from tunebench.io.runs import read_jsonl
    from tunebench.models.batching import Formatter
    from tunebench.models.to_gguf import GGUF_DIR, GGUF_TYPES, gguf_file_name

    export = Path(args.export)
    prompts = [r["prompt"] for r in read_jsonl(Path(args.data) / "test.jsonl")[: args.n]]
    model, tok, _ = models.load(args.run, torch.float32)
    fmt = Formatter.for_model(tok, False)
    ids = [fmt.prompt_ids(p) for p in prompts]
    ours, _ = generate(model, fmt, prompts, max_new_tokens=args.max_new_tokens, progress=False)
    report = {"run": args.run, "export": str(export), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens}
    for q in [q for q in GGUF_TYPES if (export / GGUF_DIR / gguf_file_name(q)).is_file()]:  # the types exported
        gguf = export / GGUF_DIR / gguf_file_name(q)
        got = _llamacpp(args.llama_python, gguf, [{"text": fmt.prompt_text(p), "ids": i} for p, i in zip(prompts, ids)],
                        args.max_new_tokens)
        hf = AutoModelForCausalLM.from_pretrained(export / GGUF_DIR, gguf_file=gguf_file_name(q), dtype=torch.float32)
        hf_tok = AutoTokenizer.from_pretrained(export / GGUF_DIR, gguf_file=gguf_file_name(q))
        theirs = []
        with torch.inference_mode():
            for i in ids:
                out = hf.generate(torch.tensor([i]), do_sample=False, max_new_tokens=args.max_new_tokens)
                theirs.append(hf_tok.decode(out[0, len(i):], skip_special_tokens=True).strip())
        texts = [g["text"].strip() for g in got]
        report[q] = {"ids_identical": sum(g["ids"] == i for g, i in zip(got, ids)),
                     "greedy_identical_to_tunebench": sum(a == b for a, b in zip(texts, ours)),
                     "greedy_identical_to_transformers_on_the_gguf": sum(a == b for a, b in zip(texts, theirs)),
                     "transformers_on_the_gguf_identical_to_tunebench": sum(a == b for a, b in zip(theirs, ours)),
                     "examples": [{"tunebench": a, "llama.cpp": b, "transformers_gguf": c} for a, b, c in zip(ours, texts, theirs)]}
        r = report[q]
        print(f"{q:>5}: llama.cpp prompt ids identical {r['ids_identical']}/{len(prompts)}, greedy completions identical "
              f"to tunebench {r['greedy_identical_to_tunebench']}/{len(prompts)}, to transformers on the same file "
              f"{r['greedy_identical_to_transformers_on_the_gguf']}/{len(prompts)} (transformers on the file vs tunebench "
              f"{r['transformers_on_the_gguf_identical_to_tunebench']}/{len(prompts)})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        sys.exit(main())
