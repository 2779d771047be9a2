"""BIG-bench's scoring rules (`--scoring bigbench`), each a transcription of bigbench 1.0.0's own:
`api/task_metrics.py` (metrics, tie-breaking argmax), `models/model_utils.py` (output
post-processing), `api/results.py` (`add_aggregate_scores`) and the T5 metric functions BIG-bench
calls for BLEU and ROUGE (`t5.evaluation.metrics`). `bench/bigbench_parity.py` runs BIG-bench's
own code beside these on the same model and prints where they differ.

Scales are those of the raw JsonTask scores: multiple_choice_grade, exact_str_match and the other
0..1 metrics in 0..1 (BIG-bench's result files multiply them by 100 when loaded), bleu, rouge*
and sequence_f1 in 0..100.
"""
from __future__ import annotations

import copy
import hashlib
import re
import statistics

import numpy as np
from scipy.special import logsumexp

from ..errors import UserError
from ..metrics.choices import macro_f1
from .bigbench import DEFAULT_REGEX, MAX_LENGTH

ROUGE_TYPES = ("rouge1", "rouge2", "rougeLsum")
# T5's ROUGE is the median of 1000 bootstrap means, drawn from numpy's global generator, which
# BIG-bench never seeds; tunebench seeds it here (and restores it after) so a score is repeatable.
ROUGE_BOOTSTRAP_SEED = 0


# ---------------------------------------------------------------------------- multiple choice

def argmax(values) -> int:
    """task_metrics.argmax: ties broken by a hash of the values' bytes, not by position."""
    a = np.asarray(values, dtype=np.float64)
    best = np.arange(len(a))[a == np.max(a)]
    return int(best[int(hashlib.sha256(a.tobytes()).hexdigest(), 16) % len(best)])


def log_probs(absolute: list[float], absolute_normalization: bool) -> list[float]:
    """json_task.evaluate_fixed_shot: log-probabilities renormalised over the choices, unless the
    task sets `absolute_normalization`."""
    if absolute_normalization:
        return [float(x) for x in absolute]
    return [float(x) for x in np.array(absolute, dtype=np.float64) - logsumexp(absolute)]


def _probabilities(log_prob: list[float], choices: list[str], target_scores: dict) -> tuple[np.ndarray, list[float]]:
    """task_metrics._probability_from_sample."""
    total = sum(target_scores.values())
    target_probs = [0.0] * len(choices) if total == 0 else [target_scores[c] / sum(target_scores[c] for c in choices)
                                                              for c in choices]
    lp = np.array(log_prob, dtype=np.float64)
    lp -= np.max(lp)
    return np.exp(lp) / np.sum(np.exp(lp)), target_probs


def mc_metrics(samples: list[dict], names: list[str]) -> tuple[dict, dict, dict]:
    """Scores, per-example values (where a metric has them) and metrics that cannot be computed.
    A sample: choice (list), target_scores (dict), log_prob, absolute_log_prob."""
    scores, per, missing = {}, {}, {}
    picks = [s["choice"][argmax(s["log_prob"])] for s in samples]
    for name in names:
        if name == "multiple_choice_grade":
            per[name] = [float(s["target_scores"][p]) for s, p in zip(samples, picks)]
            scores[name] = sum(per[name]) / len(samples)
        elif name == "calibration_multiple_choice_brier_score":
            total, count = 0.0, 0
            for s in samples:
                probs, target = _probabilities(s["log_prob"], s["choice"], s["target_scores"])
                brier = 0.0
                for t, p in zip(target, probs):
                    brier += t * (p - 1) ** 2 + (1 - t) * p ** 2
                    count += 1
                total += brier
            scores[name] = float(total / count)
        elif name == "expected_calibration_error":
            scores[name] = expected_calibration_error(samples)
        elif name in ("weighted_log_probabilities", "weighted_probabilities"):
            f = (lambda x: x) if name == "weighted_log_probabilities" else np.exp
            vals = [float(np.sum(np.array([s["target_scores"][c] for c in s["choice"]]) * f(np.array(s["absolute_log_prob"]))))
                    for s in samples]
            scores[name] = sum(vals) / len(samples)
        elif name == "macro_f1":
            if not all(list(s["target_scores"].values()).count(1) == 1 for s in samples):
                missing[name] = "BIG-bench's macro_f1 needs a single correct target (score 1) in every example"
            elif not all(sum(s["target_scores"].values()) == 1 for s in samples):
                missing[name] = "BIG-bench's macro_f1 needs target scores without partial credit"
            else:
                truth = [k for s in samples for k, v in s["target_scores"].items() if v == 1]
                scores[name] = macro_f1(truth, picks)
    return scores, per, missing


def expected_calibration_error(samples: list[dict], buckets: int = 15) -> float:
    """task_metrics.measure_expected_calibration_error: 15 equal-width buckets of the top
    probability; right = the first most likely choice is the first highest-scored one."""
    members: list[list[tuple[float, bool]]] = [[] for _ in range(buckets)]
    for s in samples:
        probs, target = _probabilities(s["log_prob"], s["choice"], s["target_scores"])
        conf = float(np.max(probs))
        j = next((j for j in range(buckets) if conf < (j + 1) / buckets), buckets - 1)
        members[j].append((conf, int(np.argmax(target)) == int(np.argmax(probs))))
    n = len(samples)
    return float(sum(len(m) / n * abs(np.mean([ok for _, ok in m]) - np.mean([c for c, _ in m])) for m in members if m))


# ---------------------------------------------------------------------------- generation

def postprocess(text: str, stop_string: str | None, output_regex: str | None, max_length: int = MAX_LENGTH) -> str:
    """model_utils.postprocess_output: cut to max_length characters; cut after the stop string
    when it is found past position 0 (keeping it); the first regex match ('' when none). No stripping."""
    text = text[:max_length] if max_length else text
    if stop_string:
        index = text.find(stop_string)
        if index > 0:
            text = text[: index + len(stop_string)]
    if output_regex:
        found = next(iter(re.findall(output_regex, text)), "")
        if isinstance(found, tuple):
            raise UserError(f"output_regex {output_regex!r} has several groups; BIG-bench needs non-capturing "
                            "groups (?:...)")
        text = found
    return text


_DELIMITERS = set(".?!;\n")


def settled(text: str, stop_string: str | None, output_regex: str | None, max_length: int = MAX_LENGTH) -> bool:
    """Whether more generated text can no longer change `postprocess(text)`: generation may stop.

    True once max_length characters are there, once the stop string stands past position 0, or,
    under the default regex, once a run of other characters has been closed by a delimiter.
    A task's own regex without a stop string is never settled early: a later character could
    still extend or move its first match."""
    if len(text) >= max_length and not text.endswith("\ufffd"):  # not mid-way through a multi-byte character
        return True
    if stop_string and text.find(stop_string) > 0:
        return True
    if output_regex == DEFAULT_REGEX and not stop_string:
        seen = False
        for ch in text:
            if ch not in _DELIMITERS:
                seen = True
            elif seen:
                return True
    return False


def _t5_rouge(targets: list[str], predictions: list[str]) -> dict[str, float]:
    """t5.evaluation.metrics.rouge: no stemming, " . " made a sentence break, the bootstrap
    median of the F-measure, times 100."""
    from rouge_score import rouge_scorer, scoring

    scorer = rouge_scorer.RougeScorer(rouge_types=list(ROUGE_TYPES))
    aggregator = scoring.BootstrapAggregator()
    for prediction, target in zip(predictions, targets):
        aggregator.add_scores(scorer.score(target=target.replace(" . ", " .\n"), prediction=prediction.replace(" . ", " .\n")))
    result = aggregator.aggregate()
    return {k: result[k].mid.fmeasure * 100 for k in ROUGE_TYPES}


def rouge(targets: list[list[str]], responses: list[str]) -> dict[str, float]:
    """task_metrics.rouge_fn: per example and ROUGE type, the best-scoring reference; then T5's
    corpus ROUGE against those references."""
    state = np.random.get_state()
    np.random.seed(ROUGE_BOOTSTRAP_SEED)
    try:
        best: dict[str, list[str]] = {k: [] for k in ROUGE_TYPES}
        for refs, resp in zip(targets, responses):
            per_ref = [_t5_rouge([t], [resp]) for t in refs]
            for k in ROUGE_TYPES:
                best[k].append(refs[max(range(len(per_ref)), key=lambda x: per_ref[x][k])])
        return {k: _t5_rouge(best[k], responses)[k] for k in ROUGE_TYPES}
    finally:
        np.random.set_state(state)


def bleu(targets: list[list[str]], responses: list[str]) -> float:
    """task_metrics.bleu_fn over t5.evaluation.metrics.bleu: shorter reference lists padded with
    their first reference, sacrebleu's corpus BLEU with the 'intl' tokenizer and exp smoothing."""
    import sacrebleu

    refs = copy.deepcopy(targets)
    most = max(len(t) for t in refs)
    for t in refs:
        t += [t[0]] * (most - len(t))
    streams = [[t[i] for t in refs] for i in range(most)]
    return sacrebleu.corpus_bleu(responses, streams, smooth_method="exp", smooth_value=0.0, force=False,
                                 lowercase=False, tokenize="intl", use_effective_order=False).score


def generative_metrics(targets: list[list[str]], responses: list[str], names: list[str]) -> tuple[dict, dict, dict]:
    scores, per, missing = {}, {}, {}
    for name in names:
        if name == "exact_str_match":
            per[name] = [float(r in t) for t, r in zip(targets, responses)]
        elif name == "case_insensitive_str_match":
            per[name] = [float(r.strip().lower() in [x.strip().lower() for x in t]) for t, r in zip(targets, responses)]
        elif name == "numeric_match_with_0_1_relative_error":
            if any(len(t) != 1 for t in targets):
                missing[name] = "BIG-bench's numeric match takes exactly one target per example"
                continue
            per[name] = [float(_within(r, t[0], 0.1)) for t, r in zip(targets, responses)]
        elif name == "sequence_f1":
            vals = []
            for t, r in zip(targets, responses):
                pred, gold = r.split(" "), t[0].split(" ")
                pred = pred[: len(gold)] + ["O"] * (len(gold) - len(pred))
                vals.append(100 * float(np.mean([p == g for p, g in zip(pred, gold)])))
            scores[name] = float(np.mean(vals))
            continue
        elif name == "bleu":
            scores[name] = bleu(targets, responses)
            continue
        elif name == "rouge":
            scores.update(rouge(targets, responses))
            continue
        elif name == "bleurt":
            missing[name] = "BLEURT needs its checkpoint downloaded at run time; tunebench runs offline"
            continue
        scores[name] = sum(per[name]) / len(per[name])
    return scores, per, missing


def _within(value: str, target: str, rel_error: float) -> bool:
    """task_metrics.check_if_numeric_value_is_within_relative_error."""
    try:
        ftarget, fvalue = float(target), float(value)
    except ValueError:
        return False
    return abs(fvalue - ftarget) / (ftarget if ftarget != 0 else 1) <= rel_error


def log_likelihood(log_probs_gen: list[list[float]], targets: list[list[str]]) -> dict[str, float]:
    """task_metrics.log_likelihood_fn (absolute log-probabilities of the targets)."""
    if any(len(t) > 1 for t in targets):
        return {"log_likelihood": float(np.mean([logsumexp(x) for x in log_probs_gen]))}
    n = len(log_probs_gen)
    return {"log_likelihood": sum(x[0] for x in log_probs_gen) / n,
            "log_likelihood_per_word": sum(x[0] / len(t[0].split()) for x, t in zip(log_probs_gen, targets)) / n,
            "log_likelihood_per_char": sum(x[0] / len(t[0]) for x, t in zip(log_probs_gen, targets)) / n}


# ---------------------------------------------------------------------------- aggregates

def normalized(score: float, low: float, high: float) -> float:
    return (score - low) / (high - low) * 100


def aggregate(subtasks: list[dict], container: bool) -> tuple[dict, str]:
    """results.add_aggregate_scores for one shot count: each metric's mean over the subtasks that
    have it, and normalized_aggregate_score, the mean of each subtask's preferred score rescaled
    from [low, high] to [0, 100]. A subtask: {scores, preferred, low, high}; a task without
    subtasks is its own single one. Returns the scores and the aggregate's preferred score."""
    metrics = sorted({m for s in subtasks for m in s["scores"] if m != "normalized_aggregate_score"})
    out = {m: statistics.mean(s["scores"][m] for s in subtasks if m in s["scores"]) for m in metrics}
    out["normalized_aggregate_score"] = statistics.mean(
        normalized(s["scores"][s["preferred"]], s["low"], s["high"]) for s in subtasks)
    preferred = {s["preferred"] for s in subtasks}
    return out, ("multiple_choice_grade" if preferred == {"multiple_choice_grade"} else
                 subtasks[0]["preferred"] if not container else "normalized_aggregate_score")
