"""Metric parity with the reference implementations on real DialogSum text."""
import re

import numpy as np
import pytest
import sacrebleu
from conftest import dialogsum_rows
from rouge_score import rouge_scorer

from tunebench import metrics


@pytest.fixture(scope="module")
def test_summaries():
    rows = dialogsum_rows("test")
    # each test dialogue's first summary scored against its other two
    return [r["summary1"] for r in rows], [[r["summary2"], r["summary3"]] for r in rows]


def test_rouge_equals_rouge_score(test_summaries):
    preds, refs = test_summaries
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    nl = lambda s: "\n".join(x for x in re.split(r"(?<=[.!?])\s+", s.strip()) if x)
    expected = {k: [] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    for p, rs in zip(preds, refs):
        per_ref = [scorer.score(nl(r), nl(p)) for r in rs]
        for k in expected:
            expected[k].append(max(s[k].fmeasure for s in per_ref))
    got = metrics.rouge(preds, refs)
    for k in expected:
        assert abs(got[k] - float(np.mean(expected[k]))) < 1e-9, k
    # sentence splitting is what makes rougeLsum differ from rougeL
    assert got["rougeLsum"] != got["rougeL"]
    # pinned values: a silent change in tokenization or aggregation fails here
    assert got["rouge1"] == pytest.approx(0.5950254867587279, abs=1e-12)


def test_bleu_equals_sacrebleu_with_all_streams(test_summaries):
    preds, refs = test_summaries
    expected = sacrebleu.corpus_bleu(preds, [[r[0] for r in refs], [r[1] for r in refs]]).score
    assert abs(metrics.bleu(preds, refs) - expected) < 1e-9


def test_variable_reference_counts():
    preds = ["the cat sat on the mat", "a dog barked loudly"]
    refs = [["the cat sat on a mat", "a cat was on the mat"], ["the dog barked"]]
    expected = sacrebleu.corpus_bleu(preds, [["the cat sat on a mat", "the dog barked"], ["a cat was on the mat", None]]).score
    assert metrics.bleu(preds, refs) == pytest.approx(expected, abs=1e-9)


def test_sentence_splitter():
    assert metrics.split_sentences("Hi there. How are you? Fine!") == "Hi there.\nHow are you?\nFine!"
