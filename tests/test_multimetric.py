"""HELM-style metric families on hand-checkable cases."""
import math

import pytest

from tunebench.benchmarks.multimetric import calibration, calibration_for_rows, choice_probabilities


def test_ece_of_a_known_set():
    # two examples at confidence 0.9 (one right), two at 0.6 (both right):
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.4
    c = calibration([0.9, 0.9, 0.6, 0.6], [True, False, True, True])
    assert c["ece"] == pytest.approx(0.4)
    filled = [b for b in c["reliability"] if b["n"]]
    assert [(b["n"], b["accuracy"]) for b in filled] == [(2, 1.0), (2, 0.5)]
    assert c["selective_accuracy_at_10pct"] == 1.0  # the single most confident example is right
    assert calibration([1.0, 1.0], [True, True])["ece"] == 0.0


def test_choice_probabilities_and_rows():
    assert choice_probabilities([math.log(0.2), math.log(0.8)]) == pytest.approx([0.2, 0.8])
    rows = [{"scores": [math.log(0.2), math.log(0.8)], "prediction": 1, "correct": True},
            {"scores": [math.log(0.7), math.log(0.3)], "prediction": 0, "correct": False}]
    c = calibration_for_rows(rows)
    assert c["mean_confidence"] == pytest.approx(0.75) and c["accuracy"] == 0.5
    assert c["ece"] == pytest.approx(0.5 * abs(1 - 0.8) + 0.5 * abs(0 - 0.7))
    assert "not_applicable" in calibration_for_rows([])
