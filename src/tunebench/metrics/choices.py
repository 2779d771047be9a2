"""Multiple-choice figures computed from the choices' log-likelihoods.

This module owns the lm-eval convention's multiple-choice scores: `multiple_choice_metrics` (the
predicted choice by summed log-likelihood and by log-likelihood per character, and accuracy /
accuracy_norm against each example's `gold`), and `macro_f1` (sklearn's macro-averaged F1, which
both the lm-eval convention and BIG-bench's rules use). The choice scores are any objects with
`logprob` and `chars` (tunebench.benchmarks.scoring's), the examples any with `gold`.
"""
from __future__ import annotations


def multiple_choice_metrics(examples: list, choice_scores) -> dict:
    pred = [max(range(len(cs)), key=lambda k: cs[k].logprob) for cs in choice_scores]
    pred_norm = [max(range(len(cs)), key=lambda k: cs[k].logprob / max(cs[k].chars, 1)) for cs in choice_scores]
    n = len(examples)
    return {"pred": pred, "pred_norm": pred_norm,
            "accuracy": sum(p == e.gold for p, e in zip(pred, examples)) / n,
            "accuracy_norm": sum(p == e.gold for p, e in zip(pred_norm, examples)) / n}


def macro_f1(truth: list, pred: list) -> float:
    """sklearn's f1_score(average="macro") over the labels seen in either list (0 where undefined)."""
    f1s = []
    for c in sorted(set(truth) | set(pred)):
        tp = sum(t == c and p == c for t, p in zip(truth, pred))
        fp = sum(t != c and p == c for t, p in zip(truth, pred))
        fn = sum(t == c and p != c for t, p in zip(truth, pred))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / len(f1s)
