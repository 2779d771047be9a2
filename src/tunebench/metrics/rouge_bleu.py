"""ROUGE and BLEU of free-form outputs (summaries) exactly as the reference implementations compute them.

This module owns the summary scores of metrics.json and compare.json: `score` (ROUGE and BLEU over
a split), `per_example_rouge` (the side-by-side examples, a study's intervals), `bleu_statistics` (a study's
BLEU intervals) and the sentence splitting rougeLsum needs.

ROUGE: rouge-score with stemming; per example `score_multi` (the best-matching reference per
ROUGE type, as HF `evaluate` does), F-measure, averaged over examples. rougeLsum needs one
sentence per line, otherwise it silently equals rougeL: predictions and references are split
into sentences first by `split_sentences` (a regex at . ! ? followed by whitespace).
BLEU: sacrebleu's corpus BLEU (13a tokenizer) with one reference stream per reference slot;
examples with fewer references leave None in the extra streams, which sacrebleu skips.
"""
from __future__ import annotations

import re
from functools import lru_cache

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SENTENCE_SPLITTER = "regex: split after . ! or ? followed by whitespace"
_SENT_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> str:
    """One sentence per line, for rougeLsum."""
    return "\n".join(s for s in _SENT_END.split(text.strip()) if s)


def rouge(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    _check(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, refs in zip(predictions, references):
        scores = scorer.score_multi([split_sentences(r) for r in refs], split_sentences(pred))
        for k in ROUGE_TYPES:
            totals[k] += scores[k].fmeasure
    return {k: v / len(predictions) for k, v in totals.items()}


def per_example_rouge(predictions: list[str], references: list[list[str]]) -> list[dict[str, float]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    return [{k: s[k].fmeasure for k in ROUGE_TYPES}
            for s in (scorer.score_multi([split_sentences(r) for r in refs], split_sentences(p))
                      for p, refs in zip(predictions, references))]


def bleu(predictions: list[str], references: list[list[str]]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, _streams(predictions, references)).score


def bleu_statistics(predictions: list[str], references: list[list[str]]) -> list[list[int]]:
    """sacrebleu's per-example sufficient statistics (lengths, n-gram matches and totals), the ones
    its corpus BLEU sums: `bleu_of_statistics` of their column sums is `bleu` of the examples, so a
    bootstrap can score a resample without tokenizing again."""
    return _bleu_metric()._extract_corpus_statistics(predictions, _streams(predictions, references))


def _streams(predictions: list[str], references: list[list[str]]) -> list[list[str | None]]:
    """Per-example references as sacrebleu's reference streams (None where an example has fewer)."""
    _check(predictions, references)
    width = max(len(r) for r in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def bleu_of_statistics(totals: list[int]) -> float:
    return _bleu_metric()._compute_score_from_stats(list(totals)).score


@lru_cache(maxsize=1)
def _bleu_metric():
    from sacrebleu.metrics import BLEU

    return BLEU()  # corpus_bleu's defaults (13a tokenizer, exponential smoothing)


def score(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    out = rouge(predictions, references)
    out["bleu"] = bleu(predictions, references)
    return out


def _check(predictions, references) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError("nothing to score")
