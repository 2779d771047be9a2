"""HELM-style metric families beyond accuracy, computed from a task's per-example results.

Implemented here: calibration (multiple-choice tasks) and efficiency. Each family is a dict of
figures, or {"not_applicable": reason} when the family does not apply to the task.
"""
from __future__ import annotations

import math
import resource

import torch

ECE_BINS = 10


def choice_probabilities(scores: list[float]) -> list[float]:
    """Softmax over the choices' summed log-likelihoods: the model's probability for each answer."""
    m = max(scores)
    e = [math.exp(s - m) for s in scores]
    z = sum(e)
    return [x / z for x in e]


def calibration(confidences: list[float], correct: list[bool], bins: int = ECE_BINS) -> dict:
    """Expected calibration error (equal-width bins), reliability diagram data, selective accuracy.

    ECE = sum over bins of |accuracy - mean confidence| weighted by the bin's share of examples.
    Selective accuracy at 10% coverage: accuracy on the 10% of examples the model is most sure of.
    """
    n = len(confidences)
    table = []
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidences) if (lo < c <= hi) or (b == 0 and c == 0.0)]
        if not idx:
            table.append({"bin": [lo, hi], "n": 0, "confidence": None, "accuracy": None})
            continue
        conf = sum(confidences[i] for i in idx) / len(idx)
        acc = sum(correct[i] for i in idx) / len(idx)
        ece += len(idx) / n * abs(acc - conf)
        table.append({"bin": [lo, hi], "n": len(idx), "confidence": conf, "accuracy": acc})
    k = max(1, math.ceil(0.1 * n))
    top = sorted(range(n), key=lambda i: -confidences[i])[:k]
    return {"ece": ece, "bins": bins, "reliability": table,
            "selective_accuracy_at_10pct": sum(correct[i] for i in top) / k,
            "mean_confidence": sum(confidences) / n, "accuracy": sum(correct) / n}


def calibration_for_rows(rows: list[dict]) -> dict:
    if not rows or "scores" not in rows[0]:
        return {"not_applicable": "generative task: there are no answer choices to take probabilities over"}
    probs = [choice_probabilities(r["scores"]) for r in rows]
    conf = [p[r["prediction"]] for p, r in zip(probs, rows)]
    for r, p in zip(rows, probs):
        r["confidence"] = p[r["prediction"]]
    return calibration(conf, [bool(r["correct"]) for r in rows])


def model_flops_per_token(model) -> tuple[int, int, int]:
    """(non-embedding parameters, layers, hidden size) for a FLOPs estimate."""
    cfg = model.config
    emb = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    total = sum(p.numel() for p in model.parameters())
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", 0)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", 0)
    return total - emb, layers, hidden


def efficiency(seconds: float, n: int, prompt_tokens: int, sum_sq_lengths: int, generated_tokens: int,
               gen_seconds: float, model) -> dict:
    """Wall time, tokens/s, peak memory and estimated forward FLOPs per example.

    FLOPs = 2 x non-embedding parameters x tokens + 4 x layers x hidden x length^2 (attention
    scores and weighted values), summed over the sequences the model ran (Kaplan et al. 2020).
    """
    params, layers, hidden = model_flops_per_token(model)
    flops = 2 * params * (prompt_tokens + generated_tokens) + 4 * layers * hidden * sum_sq_lengths
    out = {"wall_time_s": round(seconds, 3), "examples_per_s": round(n / max(seconds, 1e-9), 3),
           # prompt tokens over the task's whole wall time (scoring and generation both read prompts)
           "prompt_tokens": prompt_tokens, "prompt_tokens_per_s": round(prompt_tokens / max(seconds, 1e-9), 1),
           "generated_tokens": generated_tokens,
           "generated_tokens_per_s": round(generated_tokens / gen_seconds, 1) if gen_seconds else None,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "estimated_flops_per_example": flops / max(n, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
