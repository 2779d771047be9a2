"""Statistics for comparing two models on the same examples.

This module owns the significance machinery of the forgetting report (forgetting.json/md):
`bootstrap_test`, a paired bootstrap of the (weighted) mean per-example change giving a 95%
percentile interval and a two-sided p-value of "no change"; `paired_bootstrap`, the interval alone;
and `holm`, Holm-Bonferroni adjusted p-values across a suite's tasks. Resampling uses Python's
`random.Random(seed)`, so a given seed always gives the same figures.
"""
from __future__ import annotations

import random
from typing import Callable, Iterator


def paired_bootstrap(base: list[float], tuned: list[float], reps: int = 2000, seed: int = 0,
                     weights: list[float] | None = None) -> tuple[float, float]:
    """95% interval of mean(tuned - base), resampling examples (the same ones for both models)."""
    lo, hi, _ = bootstrap_test(base, tuned, reps, seed, weights)
    return lo, hi


def bootstrap_test(base: list[float], tuned: list[float], reps: int = 2000, seed: int = 0,
                   weights: list[float] | None = None) -> tuple[float, float, float]:
    """The 95% percentile interval of the (weighted) mean change over `reps` paired resamples of
    the examples, and the two-sided bootstrap p-value of "no change": twice the share of resampled
    means on the far side of 0, capped at 1. The interval excludes 0 exactly when p <= 0.05."""
    diffs = [t - b for b, t in zip(base, tuned)]
    w = weights or [1.0] * len(diffs)
    means = [sum(w[i] * diffs[i] for i in idx) / sum(w[i] for i in idx) for idx in resamples(len(diffs), reps, seed)]
    return _percentiles(means, reps)


def bootstrap_statistic(n: int, change: Callable[[list[int]], float], reps: int = 2000,
                        seed: int = 0) -> tuple[float, float, float]:
    """As `bootstrap_test`, for a change that is not a mean of per-example changes (corpus BLEU of
    the tuned model minus the base model's): `change(idx)` on each resample of the n examples, the
    same resamples `bootstrap_test` draws for the same n, reps and seed."""
    return _percentiles([change(idx) for idx in resamples(n, reps, seed)], reps)


def resamples(n: int, reps: int, seed: int = 0) -> Iterator[list[int]]:
    """`reps` resamples (with replacement) of the indices of n paired examples."""
    rng = random.Random(seed)
    for _ in range(reps):
        yield [rng.randrange(n) for _ in range(n)]


def _percentiles(changes: list[float], reps: int) -> tuple[float, float, float]:
    changes = sorted(changes)
    below, above = sum(m <= 0 for m in changes), sum(m >= 0 for m in changes)
    return changes[int(0.025 * reps)], changes[min(int(0.975 * reps), reps - 1)], min(1.0, 2 * min(below, above) / reps)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979): the k-th smallest p times the number of
    hypotheses not yet rejected, made monotone; a hypothesis is rejected at level a when its
    adjusted p <= a. Controls the chance of any false verdict across the m tests at a."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        adjusted[i] = running
    return adjusted
