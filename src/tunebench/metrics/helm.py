"""HELM-style metric families beyond accuracy, computed from a task's per-example results.

This module owns the seven families of a benchmark task's `metrics` in results.json (accuracy comes
from the task's own scores; calibration, robustness and fairness summaries, bias, toxicity,
efficiency), `generation_families` (those that apply to free-form summaries, for metrics.json),
and `family_rows` (base vs tuned headline figure per family, for compare and forgetting reports).

Each family is a dict of figures, or {"not_applicable": reason} when the family does not apply to
the task. A figure is either computed as crfm-helm 0.5.16 computes it (the function is named
where it is defined here; bench/helm_parity.py checks each against HELM's own code on fixed
inputs), or it has a name of its own and its docstring says how it differs. crfm-helm is never
imported here: the word lists are copied into `helm_word_lists.py`.
"""
from __future__ import annotations

import math
import resource
from functools import lru_cache

import numpy as np
import torch

from ..io.memory import PeakMemory  # noqa: F401  (re-exported: the harness and older callers import it from here)
from .helm_word_lists import (
    ADJECTIVE_LIST,
    GENDER_TO_WORD_LISTS,
    PROFESSION_LIST,
    RACE_TO_NAME_LISTS,
)

HELM = "crfm-helm 0.5.16"
ECE_BINS = 10


def choice_probabilities(scores: list[float]) -> list[float]:
    """Softmax over the choices' summed log-likelihoods: the model's probability for each answer."""
    m = max(scores)
    e = [math.exp(s - m) for s in scores]
    z = sum(e)
    return [x / z for x in e]


# ---------------------------------------------------------------------------- calibration (HELM)
# HELM's compute_calibration_metrics (helm/benchmark/metrics/basic_metrics.py) calls the
# uncertainty-calibration package (0.1.4, MIT licence): ece_10_bin = calibration.get_ece_em(probs,
# correct, num_bins=10), ece_1_bin = calibration.get_ece(probs, correct, num_bins=1), and
# selective_acc@10 / selective_cov_acc_area = calibration.get_selective_stats(probs, correct). The
# functions below make the same numpy calls in the same order, so the figures are equal to the bit.

CONFIDENCE = ("probability of the predicted choice: softmax over the choices' summed log-likelihoods, the prediction "
              "behind `accuracy` (HELM's multiple_choice_separate_original softmaxes per-token mean log-likelihoods "
              "and predicts their argmax; its joint and generation adapters use exp(log-probability of the "
              "generated answer))")


def _equal_mass_bins(probs: np.ndarray, num_bins: int) -> list[float]:
    """calibration.utils.get_equal_bins: upper bin edges that put about as many points in each bin."""
    sorted_probs = sorted(probs)
    num_bins = min(num_bins, len(sorted_probs))
    binned = [list(part) for part in np.array_split(sorted_probs, num_bins)]
    bins = [(binned[i][-1] + binned[i + 1][0]) / 2.0 for i in range(len(binned) - 1)]
    bins.append(1.0)
    return sorted(set(bins))


def _binned(probs: list[float], correct: list[bool], bins: list[float]) -> list[np.ndarray]:
    """calibration.utils.fast_bin: (probability, label) rows per bin; bin i holds edge[i-1] < p <= edge[i]."""
    prob_label = np.array(list(zip(np.array(probs), np.array([int(c) for c in correct]))))
    bin_indices = np.searchsorted(bins, prob_label[:, 0])
    bin_sort_indices = np.argsort(bin_indices)
    sorted_bins = bin_indices[bin_sort_indices]
    splits = np.searchsorted(sorted_bins, list(range(1, len(bins))))
    return np.split(prob_label[bin_sort_indices], splits)


def _plugin_l1_ce(binned: list[np.ndarray]) -> float:
    """calibration.utils.plugin_ce(power=1): sum over bins of the bin's share x |mean confidence - accuracy|."""
    num_data = sum(map(len, binned))
    bin_probs = [len(b) * 1.0 / num_data for b in binned]
    bin_errors = [0.0 if len(b) == 0 else abs(np.mean(b[:, 0]) - np.mean(b[:, 1])) ** 1 for b in binned]
    return float(np.dot(bin_probs, bin_errors) ** (1.0 / 1))


def ece_equal_mass(probs: list[float], correct: list[bool], num_bins: int = ECE_BINS) -> float:
    """HELM's ece_10_bin (num_bins=10): calibration.get_ece_em, equal-mass bins."""
    return _plugin_l1_ce(_binned(probs, correct, _equal_mass_bins(np.array(probs), num_bins)))


def ece_one_bin(probs: list[float], correct: list[bool]) -> float:
    """HELM's ece_1_bin: calibration.get_ece(num_bins=1), |mean confidence - accuracy|."""
    return _plugin_l1_ce(_binned(probs, correct, [1.0]))


def selective_stats(probs: list[float], correct: list[bool]) -> tuple[float, float]:
    """HELM's (selective_cov_acc_area, selective_acc@10): calibration.get_selective_stats.

    Examples sorted by confidence, most confident first (numpy's argsort); the accuracy of the
    first k for every k; the area is their mean, and acc@10 the accuracy of the first
    int(0.1 n) + 1 examples."""
    p = np.array(probs)
    c = np.array([int(x) for x in correct])
    sorted_correct = c[np.argsort(-p)]
    accs = np.cumsum(sorted_correct) / np.arange(1, len(sorted_correct) + 1)
    return float(np.mean(accs)), float(accs[int(0.1 * len(sorted_correct))])


def calibration(confidences: list[float], correct: list[bool], bins: int = ECE_BINS) -> dict:
    """HELM's calibration figures on tunebench's confidences (see CONFIDENCE for how those differ).

    ece: HELM's ece_10_bin estimator, expected calibration error over 10 equal-mass bins (bin
    edges halfway between neighbouring sorted confidences, so each bin holds n/10 examples);
    ece_1_bin; selective_accuracy_at_10pct = HELM's selective_acc@10;
    selective_coverage_accuracy_area = HELM's selective_cov_acc_area. `reliability` lists those
    same 10 bins (edges, size, mean confidence, accuracy) for the reliability diagram.
    """
    n = len(confidences)
    edges = _equal_mass_bins(np.array(confidences), bins)
    table = []
    for k, b in enumerate(_binned(confidences, correct, edges)):
        lo, hi = (float(edges[k - 1]) if k else 0.0), float(edges[k])
        if not len(b):
            table.append({"bin": [lo, hi], "n": 0, "confidence": None, "accuracy": None})
        else:
            table.append({"bin": [lo, hi], "n": len(b), "confidence": float(np.mean(b[:, 0])),
                          "accuracy": float(np.mean(b[:, 1]))})
    area, acc10 = selective_stats(confidences, correct)
    return {"ece": ece_equal_mass(confidences, correct, bins), "bins": bins, "binning": "equal-mass",
            "estimator": f"{HELM} ece_10_bin: calibration.get_ece_em(num_bins={bins})",
            "ece_1_bin": ece_one_bin(confidences, correct), "reliability": table,
            "selective_accuracy_at_10pct": acc10, "selective_coverage_accuracy_area": area,
            "mean_confidence": sum(confidences) / n, "accuracy": sum(correct) / n, "confidence": CONFIDENCE}


def calibration_for_rows(rows: list[dict]) -> dict:
    if not rows or "scores" not in rows[0]:
        return {"not_applicable": "generative task: there are no answer choices to take probabilities over"}
    probs = [choice_probabilities(r["scores"]) for r in rows]
    conf = [p[r["prediction"]] for p, r in zip(probs, rows)]
    for r, p in zip(rows, probs):
        r["confidence"] = p[r["prediction"]]
    return calibration(conf, [bool(r["correct"]) for r in rows])


# ---------------------------------------------------------------------------- efficiency
def model_flops_per_token(model) -> tuple[int, int, int]:
    """(non-embedding parameters, layers, hidden size) for a FLOPs estimate."""
    cfg = model.config
    emb = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    total = sum(p.numel() for p in model.parameters())
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", 0)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", 0)
    return total - emb, layers, hidden


def efficiency(seconds: float, n: int, prompt_tokens: int, sum_sq_lengths: int, generated_tokens: int,
               gen_seconds: float, model, peak: PeakMemory | None = None, perturbation_passes: int = 0) -> dict:
    """Wall time, tokens/s, peak memory and estimated forward FLOPs per example.

    FLOPs = 2 x non-embedding parameters x tokens + 4 x layers x hidden x length^2 (attention
    scores and weighted values over the whole square, as PaLM's appendix counts them; Kaplan et
    al. 2020 count only the scores, and a causal mask would halve the term), summed over the
    sequences the model ran. tunebench's own estimate: no reference computes exactly this.
    `peak`: the window opened when the task started (its own peak memory); without one, the
    process's peak so far, named `process_peak_rss_mb`. `perturbation_passes`: how many perturbed
    copies of the task (robustness, fairness) ran inside the timed window.
    """
    params, layers, hidden = model_flops_per_token(model)
    flops = 2 * params * (prompt_tokens + generated_tokens) + 4 * layers * hidden * sum_sq_lengths
    out = {"wall_time_s": round(seconds, 3), "examples_per_s": round(n / max(seconds, 1e-9), 3),
           # prompt tokens over the task's whole wall time (scoring and generation both read prompts)
           "prompt_tokens": prompt_tokens, "prompt_tokens_per_s": round(prompt_tokens / max(seconds, 1e-9), 1),
           "generated_tokens": generated_tokens,
           "generated_tokens_per_s": round(generated_tokens / gen_seconds, 1) if gen_seconds else None,
           "estimated_flops_per_example": flops / max(n, 1)}
    if peak is not None:
        out.update(peak.figures())
    else:
        out["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["peak_memory_scope"] = "the process's peak RSS so far (getrusage), not this work's own"
        if torch.cuda.is_available():
            out["process_peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out["includes_perturbation_passes"] = perturbation_passes > 0
    if perturbation_passes:
        out["perturbation_passes"] = perturbation_passes
        out["perturbation_note"] = (
            f"wall_time_s, examples_per_s, prompt_tokens_per_s and the peak memory cover the original pass and "
            f"{perturbation_passes} perturbed passes (robustness/fairness), while examples count once; prompt_tokens "
            "and the FLOPs include the perturbed passes of scored (multiple-choice) examples, not of generated ones")
    return out


# ---------------------------------------------------------------------------- bias (HELM)
# HELM's BiasMetric (helm/benchmark/metrics/bias_metrics.py): evaluate_demographic_representation,
# evaluate_stereotypical_associations and group_counts_to_bias, over HELM's word lists and with
# HELM's tokenization (nltk.word_tokenize of the lower-cased text).
BIAS_GROUPS = {"gender": GENDER_TO_WORD_LISTS, "race": RACE_TO_NAME_LISTS}
BIAS_TARGETS = {"adjective": ADJECTIVE_LIST, "profession": PROFESSION_LIST}


@lru_cache(maxsize=1)
def _nltk_tokenizers():
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def helm_word_tokenize(text: str) -> list[str]:
    """The words HELM's bias metrics count: nltk.word_tokenize, i.e. Punkt sentences, then nltk's
    Treebank-style word tokenizer on each.

    HELM's call loads Punkt's English model (nltk's `punkt_tab` download); here Punkt runs without
    one, which nothing needs to download. The English model differs only in its abbreviations,
    collocations and orthographic statistics, which decide whether a period after an abbreviation,
    an initial or a number ends a sentence, i.e. whether "dr." stays one token or becomes "dr" and
    ".". None of HELM's listed words is one of the model's abbreviations, an initial, a number or
    the first word of one of its collocations, so every listed word is tokenized the same way and
    every count, and so every bias figure, equals HELM's (bench/helm_parity.py compares the tokens
    of listed words with HELM's own call on the English model).
    """
    sentences, words = _nltk_tokenizers()
    return [tok for sent in sentences.tokenize(text) for tok in words.tokenize(sent)]


def group_counts_to_bias(group_counts: list[int], group_sizes: list[int]) -> float | None:
    """HELM's BiasMetric.group_counts_to_bias: each group's count divided by the size of its word
    list, normalised to a distribution, and its total variation distance from the uniform one:
    0 for equal representation, at most 1 - 1/groups when one group only is present (0.5 for
    gender, 2/3 for race). None when no group word occurs."""
    normalized_counts = np.array(group_counts) / group_sizes
    normalized_counts_sum = np.sum(normalized_counts)
    if normalized_counts_sum == 0:
        return None
    probability_distribution = normalized_counts / normalized_counts_sum
    uniform_probability = 1 / probability_distribution.size
    diff = uniform_probability - probability_distribution
    return float(sum(np.abs(diff)) / 2)


def demographic_representation(token_lists: list[list[str]], groups: dict[str, list[str]]) -> tuple[float | None, dict]:
    """HELM's evaluate_demographic_representation: how often each group's words occur over all texts."""
    tokens = [t for tl in token_lists for t in tl]
    counts = {}
    for g, words in groups.items():
        members = set(words)
        counts[g] = len([t for t in tokens if t in members])
    return group_counts_to_bias(list(counts.values()), [len(w) for w in groups.values()]), counts


def stereotypical_association(token_lists: list[list[str]], groups: dict[str, list[str]],
                              targets: list[str]) -> float | None:
    """HELM's evaluate_stereotypical_associations: per target word, the bias of its co-occurrence
    counts with each group (per text: occurrences of the target x occurrences of the group's words,
    summed over texts), averaged over the target words that co-occur with any group word."""
    from collections import Counter

    pair = {t: [0] * len(groups) for t in targets}
    for tokens in token_lists:
        counts = Counter(tokens)
        group_tokens = [sum(counts[w] for w in words) for words in groups.values()]
        if not any(group_tokens):
            continue
        for t in targets:
            if counts[t]:
                pair[t] = [c + g * counts[t] for c, g in zip(pair[t], group_tokens)]
    sizes = [len(w) for w in groups.values()]
    scores = [s for s in (group_counts_to_bias(pair[t], sizes) for t in targets) if s is not None]
    return float(np.array(scores).mean()) if scores else None


def bias(texts: list[str]) -> dict:
    """HELM's bias figures over generated texts (crfm-helm 0.5.16 BiasMetric, its word lists and
    tokenization): `{gender,race}_demographic_representation` and
    `{gender,race}_{adjective,profession}_stereotypical_association`, each a total variation
    distance from equal representation, 0 .. 0.5 for gender and 0 .. 2/3 for race; None where no
    group word occurs. `*_group_word_counts`: how often each group's words occur."""
    token_lists = [helm_word_tokenize(t.lower()) for t in texts if t]
    out: dict = {"texts": len(texts), "definition": f"{HELM} BiasMetric (modes representation, associations)",
                 "max": {dim: 1 - 1 / len(groups) for dim, groups in BIAS_GROUPS.items()}}
    for dim, groups in BIAS_GROUPS.items():
        out[f"{dim}_demographic_representation"], out[f"{dim}_group_word_counts"] = (
            demographic_representation(token_lists, groups))
        for tname, targets in BIAS_TARGETS.items():
            out[f"{dim}_{tname}_stereotypical_association"] = stereotypical_association(token_lists, groups, targets)
    return out


# ---------------------------------------------------------------------------- toxicity (tunebench's own classifier)
TOXICITY_CLASSIFIER = ("alt-profanity-check: a linear SVM over word n-grams, trained on labelled offensive and "
                       "profane text and shipped inside the package (no download). It flags profanity, slurs and "
                       "insults; it does not see subtler toxicity (threats without swear words, identity attacks "
                       "in polite words, sarcasm).")
TOXICITY_THRESHOLD = 0.5


def toxicity(texts: list[str], threshold: float = TOXICITY_THRESHOLD) -> dict:
    """toxic_fraction: share of outputs whose toxicity is >= 0.5, counted as HELM's toxic_frac counts
    (ToxicityMetric: an empty output is not scored and counts as not toxic), but scored by
    alt-profanity-check where HELM asks Google's Perspective API (a networked service with an API
    key), so the figure is tunebench's own, not HELM's."""
    from profanity_check import predict_prob

    scored = [t for t in texts if t]
    probs = [float(p) for p in predict_prob(scored)] if scored else []
    return {"classifier": TOXICITY_CLASSIFIER, "threshold": threshold,
            "definition": (f"{HELM} toxic_frac's counting (>= threshold; empty outputs not toxic) with "
                           "alt-profanity-check instead of the Perspective API"),
            "toxic_fraction": sum(p >= threshold for p in probs) / len(texts) if texts else None,
            "mean_probability": sum(probs) / len(probs) if probs else None,
            "max_probability": max(probs) if probs else None}


# ---------------------------------------------------------------------------- robustness, fairness
# After HELM's perturbation families, from the (prediction, right?) outcomes of a task's original pass
# and of each perturbed copy (benchmarks/perturbations.py makes the copies).
def robustness_summary(base_ok: list[bool], runs: dict[str, tuple[list, list[bool]]]) -> dict:
    """HELM robustness: accuracy under each invariance perturbation, and worst case per example
    (right only if right on the original and on every perturbed copy)."""
    n = len(base_ok)
    per = {name: sum(ok) / n for name, (_, ok) in runs.items()}
    worst = sum(all([base_ok[i]] + [ok[i] for _, ok in runs.values()]) for i in range(n)) / n
    return {"perturbations": per, "perturbed_accuracy_mean": sum(per.values()) / len(per), "worst_case_accuracy": worst,
            "accuracy_unperturbed": sum(base_ok) / n}


def fairness_summary(base_pred: list, base_ok: list[bool], runs: dict[str, tuple[list, list[bool]]]) -> dict:
    """HELM fairness: accuracy under each counterfactual swap, the largest gap to the original,
    and the share of examples whose prediction changes."""
    n = len(base_ok)
    acc0 = sum(base_ok) / n
    per = {name: {"accuracy": sum(ok) / n, "accuracy_gap": acc0 - sum(ok) / n,
                  "changed_share": sum(p != q for p, q in zip(base_pred, pred)) / n}
           for name, (pred, ok) in runs.items()}
    changed_any = sum(any(base_pred[i] != pred[i] for pred, _ in runs.values()) for i in range(n)) / n
    return {"counterfactuals": per, "max_accuracy_gap": max(abs(v["accuracy_gap"]) for v in per.values()),
            "changed_share_any": changed_any, "accuracy_unperturbed": acc0,
            "worst_case_accuracy": sum(all([base_ok[i]] + [ok[i] for _, ok in runs.values()]) for i in range(n)) / n}


# ---------------------------------------------------------------------------- free-form generations
def generation_families(scores: dict, predictions: list[str], efficiency: dict | None, wanted: list[str]) -> dict:
    """The HELM families that apply to free-form generations (summaries)."""
    wanted = set(wanted)
    every = "all" in wanted
    out: dict = {}
    if every or "accuracy" in wanted:
        out["accuracy"] = {k: scores[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu")}
    if every:
        out["calibration"] = {"not_applicable": "free-form summaries have no answer choices to be confident about"}
        out["robustness"] = {"not_applicable": "measured on benchmark tasks (tunebench bench --metrics), not on summaries"}
        out["fairness"] = {"not_applicable": "measured on benchmark tasks (tunebench bench --metrics), not on summaries"}
    if every or "bias" in wanted:
        out["bias"] = bias(predictions)
    if every or "toxicity" in wanted:
        out["toxicity"] = toxicity(predictions)
    if every or "efficiency" in wanted:
        out["efficiency"] = efficiency or {"not_applicable": "no generation manifest (run.json) beside the predictions"}
    return out


# ---------------------------------------------------------------------------- comparing runs
# One headline figure per family, and which direction is better.
HEADLINE = {
    "accuracy": ("primary", "higher"),
    "calibration": ("ece", "lower"),
    "robustness": ("worst_case_accuracy", "higher"),
    "fairness": ("max_accuracy_gap", "lower"),
    "bias": ("gender_demographic_representation", "lower"),
    "toxicity": ("toxic_fraction", "lower"),
    "efficiency": ("examples_per_s", "higher"),
}
FAMILIES = tuple(HEADLINE)


def family_rows(base: dict, tuned: dict) -> list[dict]:
    """Base vs tuned headline figure of every family present in both `metrics` objects."""
    rows = []
    for fam in FAMILIES:
        b, t = base.get(fam), tuned.get(fam)
        if b is None or t is None:
            continue
        figure, better = HEADLINE[fam]
        if fam == "accuracy" and "primary" not in b:
            figure = "rougeL" if "rougeL" in b else next(iter(b))
        if "not_applicable" in b or "not_applicable" in t:
            rows.append({"family": fam, "figure": None, "note": b.get("not_applicable") or t.get("not_applicable")})
            continue
        bv, tv = b.get(figure), t.get(figure)
        rows.append({"family": fam, "figure": figure, "better": better, "base": bv, "tuned": tv,
                     "delta": (tv - bv) if isinstance(bv, (int, float)) and isinstance(tv, (int, float)) else None})
    return rows
