"""tunebench.metrics: every figure tunebench computes from model outputs, and nothing else.

rouge_bleu: ROUGE and BLEU of summaries (re-exported here: `from tunebench.metrics import score`).
generation: generated benchmark answers against their targets (exact and case-insensitive match,
sequence F1, numeric match, BLEU, ROUGE). choices: multiple-choice accuracy and macro F1.
helm: the HELM-style families (calibration, robustness, fairness, bias, toxicity, efficiency).
stats: paired bootstrap intervals and p-values, Holm's adjustment.
BIG-bench's own metric rules stay with its tasks, in tunebench.benchmarks.bigbench_metrics.
This package imports only tunebench.config, tunebench.io and tunebench.errors from tunebench.
"""
from .rouge_bleu import (
    ROUGE_TYPES,
    SENTENCE_SPLITTER,
    bleu,
    per_example_rouge,
    rouge,
    score,
    split_sentences,
)

__all__ = ["ROUGE_TYPES", "SENTENCE_SPLITTER", "bleu", "per_example_rouge", "rouge", "score", "split_sentences"]
