"""`tunebench export` round trip: the exported directory and GGUF files against tunebench's own loading.

Exports a training run (default: the demo's, runs/demo/train) with `--gguf f32`, `f16` and `q8_0`,
then on the first N prompts of a prepared test split (default 20 of runs/demo/data/test.jsonl),
formatted as tunebench formats them (through the chat template):

- prompt ids: tunebench's Formatter against a plain `apply_chat_template` on the export's tokenizer,
  and on the tokenizer (chat template included) that transformers builds from each GGUF;
- logits at every prompt position: the model as tunebench loads the run (fp32, LoRA merged) against
  plain `AutoModelForCausalLM.from_pretrained(DIR)` and against `from_pretrained(DIR/gguf, gguf_file=...)`
  for f32, f16 and q8_0 (max abs difference, and how often the next-token argmax agrees);
- greedy completions: tunebench's `generate` against plain `model.generate(do_sample=False)` on the
  export, and on each GGUF as transformers loads it (how many identical).

    python bench/gguf_roundtrip.py [--run runs/demo/train] [--data runs/demo/data] [--out DIR] [--n 20] [--json F]

Each GGUF's logits are also compared with those of the merged model whose matrices were rounded in
PyTorch as the file stores them (f16, or gguf's q8_0 round trip): that difference is the writer's
own error (names, Q/K permutation, tokenizer), the rest is the rounding's.

Exits 1 if plain transformers on the export differs from tunebench (ids, logits beyond 1e-5, or
any greedy completion), or if a GGUF's prompt ids differ or its logits differ from the merged
model rounded alike by more than 1e-4.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common  # noqa: F401  (bench/ is the script's directory: sets the offline variables)
import torch

from tunebench import models
from tunebench.generation import generate
from tunebench.io.layout import EXPORT_FILE
from tunebench.io.runs import read_jsonl
from tunebench.models.batching import Formatter
from tunebench.models.export import export
from tunebench.models.to_gguf import GGUF_DIR, GGUF_TYPES, gguf_file_name

F16_BOUND = 1e-2  # the bound for f16 against the fp32 merged model (reported, see README)


def _exported(run: str, out: Path) -> None:
    info = json.loads((out / EXPORT_FILE).read_text()) if (out / EXPORT_FILE).is_file() else {}
    if (info.get("source") == run and set(info.get("gguf", {})) == set(GGUF_TYPES)
            and all((out / g["file"]).is_file() for g in info["gguf"].values())):
        print(f"reusing {out} (exported from {run})")
        return
    export(run, out, GGUF_TYPES)
    print(f"exported {run} -> {out}")


def _chat_ids(tok, prompts: list[str]) -> list[list[int]]:
    """What a plain transformers user gets: the tokenizer's own chat template, tokenized."""
    return [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                    return_dict=True)["input_ids"] for p in prompts]


def _logits(model, ids: list[list[int]]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(torch.tensor([row])).logits[0].float() for row in ids]


def _compare(ref: list[torch.Tensor], other: list[torch.Tensor]) -> dict:
    diff = max((a - b).abs().max().item() for a, b in zip(ref, other))
    last = max((a[-1] - b[-1]).abs().max().item() for a, b in zip(ref, other))
    agree = sum((a.argmax(-1) == b.argmax(-1)).sum().item() for a, b in zip(ref, other))
    positions = sum(a.shape[0] for a in ref)
    return {"max_abs_diff": diff, "max_abs_diff_last_position": last, "argmax_agreement": agree / positions,
            "positions": positions}


def _rounded(model, qtype: str):
    """The model with every matrix rounded as the GGUF stores it (f16, or gguf's own q8_0 round trip;
    norms stay f32): what the file can at best reproduce. Q8_0 blocks run along a row, so
    llama.cpp's row permutation of Q and K does not change the rounding."""
    import copy

    import gguf

    q8 = gguf.GGMLQuantizationType.Q8_0
    m = copy.deepcopy(model)
    if qtype == "f32":
        return m
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float() if qtype == "f16" else
                        torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(p.numpy(), q8), q8)))
    return m


def _greedy(model, tok, ids: list[list[int]], max_new_tokens: int) -> list[str]:
    outs = []
    with torch.inference_mode():
        for row in ids:
            gen = model.generate(torch.tensor([row]), do_sample=False, max_new_tokens=max_new_tokens)
            outs.append(tok.decode(gen[0, len(row):], skip_special_tokens=True).strip())
    return outs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo/train")
    ap.add_argument("--data", default="runs/demo/data")
    ap.add_argument("--out", default="runs/demo/export", help="where the export is written (reused if it is this run's)")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--json")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(args.out)
    _exported(args.run, out)
    prompts = [r["prompt"] for r in read_jsonl(Path(args.data) / "test.jsonl")[: args.n]]
    model, tok, _ = models.load(args.run, torch.float32)
    fmt = Formatter.for_model(tok, False)
    ids = [fmt.prompt_ids(p) for p in prompts]
    ref = _logits(model, ids)
    ours, _ = generate(model, fmt, prompts, max_new_tokens=args.max_new_tokens, progress=False)

    plain_tok = AutoTokenizer.from_pretrained(out)
    plain_ids = _chat_ids(plain_tok, prompts)
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    report = {"run": args.run, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
              "plain": {"ids_identical": sum(a == b for a, b in zip(ids, plain_ids)), **_compare(ref, _logits(plain, ids))}}
    report["plain"]["greedy_identical"] = sum(a == b for a, b in zip(ours, _greedy(plain, plain_tok, ids, args.max_new_tokens)))
    for q in GGUF_TYPES:
        g_tok = AutoTokenizer.from_pretrained(out / GGUF_DIR, gguf_file=gguf_file_name(q))
        g = AutoModelForCausalLM.from_pretrained(out / GGUF_DIR, gguf_file=gguf_file_name(q), dtype=torch.float32)
        g_ids = _chat_ids(g_tok, prompts)
        g_logits = _logits(g, ids)
        report[q] = {"ids_identical": sum(a == b for a, b in zip(ids, g_ids)), **_compare(ref, g_logits),
                     "max_abs_diff_vs_rounded_merged": _compare(_logits(_rounded(model, q), ids), g_logits)["max_abs_diff"],
                     "greedy_identical": sum(a == b for a, b in zip(ours, _greedy(g, g_tok, ids, args.max_new_tokens)))}
    for k in ("plain", *GGUF_TYPES):
        r = report[k]
        rounded = f" ({r['max_abs_diff_vs_rounded_merged']:.3g} against the merged model rounded alike)" if k != "plain" else ""
        print(f"{k:>6}: prompt ids identical {r['ids_identical']}/{len(prompts)}, logits max abs diff {r['max_abs_diff']:.3g}"
              f"{rounded}, last position {r['max_abs_diff_last_position']:.3g}, next-token argmax agrees at "
              f"{r['argmax_agreement']:.4%} of {r['positions']} positions, greedy completions identical to tunebench "
              f"{r['greedy_identical']}/{len(prompts)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    p = report["plain"]
    ok = (p["ids_identical"] == len(prompts) and p["max_abs_diff"] <= 1e-5 and p["greedy_identical"] == len(prompts)
          and all(report[q]["ids_identical"] == len(prompts) and report[q]["max_abs_diff_vs_rounded_merged"] <= 1e-4
                  for q in GGUF_TYPES))
    if report["f16"]["max_abs_diff"] > F16_BOUND:
        print(f"f16: above the issue's {F16_BOUND} on logits; the merged model rounded to f16 in PyTorch differs as much")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
