"""How each bench ratio and each tool's peak memory change with the model's size: a Markdown table
from the `--json` files of bench/w1_train.py, w2_generate.py and w3_score.py (any mix of workloads
and `--model-size`s).

One row per workload, peer and size: tunebench's figure and the peer's, the ratio and whether it
meets the workload's target, MFU where the workload has it (W1), each tool's peak RSS (and peak GPU
memory where it was measured), the change of the ratio and of tunebench's peak RSS from the
next smaller size of the same workload, peer and device, and whether the tools agreed (W1's loss
curve against trl_tuned, W2's outputs identical to one-at-a-time's, W3's identical choices). A file written before `--model-size`
existed (no `model` entry) is the embedded 135m model.

    python bench/size_table.py runs/bench/w1-135m.json runs/bench/w1-360m.json ... [--out table.md]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORDER = {"W1": 0, "W1-demo": 1, "W2": 2, "W3": 3}
SIZE_ORDER = {"135m": 0, "360m": 1, "1.7b": 2}
# the issue's targets: ratio at least this much against each peer; W1's MFU (vs the measured peak) at least 0.40
TARGETS = {("W1", "trl_defaults"): 3.0, ("W1", "trl_tuned"): 2.0, ("W2", "one_at_a_time"): 5.0,
           ("W2", "pipeline"): 1.5, ("W3", "lm_eval"): 2.0}
MFU_TARGET = 0.40


def load(path: Path) -> dict:
    d = json.loads(Path(path).read_text())
    for key in ("workload", "unit", "tunebench", "peers", "ratios"):
        if key not in d:
            raise SystemExit(f"{path}: not a bench --json file (no '{key}')")
    model = d.get("model") or {"size": "135m", "parameters": None, "path": None}
    return {**d, "model": model, "file": str(path), "extra": d.get("extra") or {}}


def rows(runs: list[dict]) -> list[dict]:
    """One row per (run, peer), sorted by workload, peer, device and size, with the change from the
    next smaller size of the same workload, peer and device."""
    out = []
    for r in runs:
        ex = r["extra"]
        rss, gpu, tools = ex.get("peak_rss_mb") or {}, ex.get("peak_gpu_mb") or {}, ex.get("tools") or {}
        for peer, figure in r["peers"].items():
            out.append({"workload": r["workload"], "device": ex.get("device", "cpu"), "size": r["model"]["size"],
                        "parameters": r["model"].get("parameters"), "unit": r["unit"], "peer": peer,
                        "tunebench": r["tunebench"], "peer_figure": figure, "ratio": r["ratios"][peer],
                        "target": TARGETS.get((r["workload"], peer)),
                        "mfu": (tools.get("tunebench", {}).get("mfu_vs_measured_peak", ex.get("mfu_vs_measured_peak")),
                                tools.get(peer, {}).get("mfu_vs_measured_peak")) if "mfu_vs_measured_peak" in ex else None,
                        "rss": (rss.get("tunebench"), rss.get(peer)), "gpu": (gpu.get("tunebench"), gpu.get(peer)),
                        "agreement": agreement(r, peer), "file": r.get("file")})
    out.sort(key=lambda x: (ORDER.get(x["workload"], 9), x["workload"], x["peer"], x["device"],
                            SIZE_ORDER.get(x["size"], 9), x["parameters"] or 0))
    prev = {}
    for x in out:
        key = (x["workload"], x["peer"], x["device"])
        p = prev.get(key)
        x["change"] = None if p is None or p["size"] == x["size"] else {
            "from": p["size"], "ratio": x["ratio"] / p["ratio"],
            "rss": x["rss"][0] / p["rss"][0] if x["rss"][0] and p["rss"][0] else None}
        prev[key] = x
    return out


def _gb(mb: float | None) -> str:
    return "–" if mb is None else f"{mb / 1024:.1f} GB"


def _num(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3g}"


def agreement(r: dict, peer: str) -> str | None:
    """What the run says about the tools computing the same thing: W1's loss curve against trl_tuned
    (identical batches), W2's outputs identical to one-at-a-time's, W3's identical choices."""
    ex = r["extra"]
    if r["workload"].startswith("W1") and peer == "trl_tuned" and ex.get("loss_match_trl_tuned"):
        return f"loss max abs diff {ex['loss_match_trl_tuned']['max_abs_diff']:.3g}"
    same = ex.get("identical_to_one_at_a_time")
    if same is not None:
        return ", ".join(f"{k} {v:.0%} identical" for k, v in same.items() if k in ("tunebench", peer))
    if "identical_choices" in ex:
        return f"{ex['identical_choices']:.0%} identical choices"
    return None


def _params(n: int | None) -> str:
    if not n:
        return "–"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M"


def table(runs: list[dict]) -> str:
    rs = rows(runs)
    gpu = any(v is not None for x in rs for v in x["gpu"])
    head = ["workload", "size", "parameters", "unit", "tunebench", "peer", "peer figure", "ratio", "target",
            "MFU tunebench / peer", "peak RSS tunebench / peer"]
    head += ["peak GPU tunebench / peer"] if gpu else []
    head += ["ratio change", "tunebench RSS change", "agreement"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in ("tunebench", "peer figure", "ratio", "parameters")
                                                            else "---" for h in head) + "|"]
    for x in rs:
        meets = "" if x["target"] is None else f">= {x['target']:g}x " + ("yes" if x["ratio"] >= x["target"] else "**no**")
        mfu = "–"
        if x["mfu"] is not None:
            tb, peer = x["mfu"]
            mfu = (f"{tb:.1%}" + (" (**below 40%**)" if tb is not None and tb < MFU_TARGET else "")
                   + (f" / {peer:.1%}" if peer is not None else ""))
        ch = x["change"]
        cells = [x["workload"] + ("" if x["device"] == "cpu" else f" ({x['device']})"), x["size"], _params(x["parameters"]),
                 x["unit"], _num(x["tunebench"]), x["peer"], _num(x["peer_figure"]), f"{x['ratio']:.2f}x", meets or "–",
                 mfu, f"{_gb(x['rss'][0])} / {_gb(x['rss'][1])}"]
        cells += [f"{_gb(x['gpu'][0])} / {_gb(x['gpu'][1])}"] if gpu else []
        cells += ["–" if ch is None else f"x{ch['ratio']:.2f} vs {ch['from']}",
                  "–" if ch is None or ch["rss"] is None else f"x{ch['rss']:.2f} vs {ch['from']}", x["agreement"] or "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="--json files of w1_train.py, w2_generate.py, w3_score.py")
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args(argv)
    text = table([load(Path(f)) for f in args.files])
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
