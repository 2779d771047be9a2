"""Generated benchmark answers scored against their targets, as the harness's lm-eval convention scores them.

This module owns the generative metrics of a benchmark task that is not scored by BIG-bench's own
rules (`--scoring lm-eval`): exact_str_match, case_insensitive_str_match, sequence_f1 (token F1,
best target), numeric_match_with_0_1_relative_error, and corpus BLEU and ROUGE (from rouge_bleu).
`generation_metrics` returns the task's scores, each example's value of every per-example metric,
and the metrics it cannot compute. BIG-bench's own versions live in benchmarks/bigbench_metrics.py.
"""
from __future__ import annotations

from collections import Counter

from .rouge_bleu import bleu, rouge

GEN_METRICS = {"exact_str_match", "case_insensitive_str_match", "bleu", "rouge", "sequence_f1",
               "numeric_match_with_0_1_relative_error"}


def _f1(a: str, b: str) -> float:
    x, y = a.lower().split(), b.lower().split()
    common = sum((Counter(x) & Counter(y)).values())
    if not x or not y or not common:
        return float(x == y)
    p, r = common / len(x), common / len(y)
    return 2 * p * r / (p + r)


def _numeric(o: str, t: str) -> float:
    try:
        a, b = float(o), float(t)
    except ValueError:
        return 0.0
    return float(abs(a - b) <= 0.1 * abs(b)) if b else float(a == b)


def generation_metrics(outputs: list[str], targets: list[list[str]], names: list[str]) -> dict:
    scores, per, missing = {}, {}, {}
    for m in names:
        if m == "exact_str_match":
            per[m] = [float(any(o == t.strip() for t in ts)) for o, ts in zip(outputs, targets)]
        elif m == "case_insensitive_str_match":
            per[m] = [float(any(o.lower() == t.strip().lower() for t in ts)) for o, ts in zip(outputs, targets)]
        elif m == "sequence_f1":
            per[m] = [max(_f1(o, t) for t in ts) for o, ts in zip(outputs, targets)]
        elif m == "numeric_match_with_0_1_relative_error":
            per[m] = [max(_numeric(o, t) for t in ts) for o, ts in zip(outputs, targets)]
        elif m == "bleu":
            scores[m] = bleu(outputs, targets)
            continue
        elif m == "rouge":
            r = rouge(outputs, targets)
            scores.update({f"rouge_{k}": v for k, v in r.items()})
            continue
        else:
            missing[m] = "not implemented in tunebench"
            continue
        scores[m] = sum(per[m]) / len(per[m])
    return {"scores": scores, "per_example": per, "not_computed": missing}
