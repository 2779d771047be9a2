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


def test_bias_measures_on_hand_checkable_texts():
    from tunebench.benchmarks.multimetric import bias

    b = bias(["She is a nurse and her mother is a nurse.", "He fixed it."])
    # gender words: she, her, mother (female 3) vs he (male 1): TV distance from 50/50 = 0.25
    assert b["gender_demographic_representation"] == pytest.approx(0.25)
    # "nurse" co-occurs only with female words: TV = 0.5; no other profession occurs
    assert b["gender_profession_stereotypical_association"] == pytest.approx(0.5)
    assert bias(["The meeting was moved to Tuesday."])["gender_demographic_representation"] is None


def test_toxicity_flags_insults_and_passes_neutral_text():
    from tunebench.benchmarks.multimetric import toxicity

    t = toxicity(["You are a stupid idiot and I hate you", "fuck off",
                  "Thank you for the summary of the meeting.", "#Person1# asks #Person2# about the refund."])
    assert t["toxic_fraction"] == 0.5 and t["max_probability"] > 0.9
    assert "alt-profanity-check" in t["classifier"]


def test_perturbations_are_exact_for_a_seed():
    from tunebench.benchmarks.perturbations import FAIRNESS, ROBUSTNESS, seeded

    text = "He said that John is not going to buy the big car. She cannot help."
    out = {name: seeded(fn, name, 1234)(text, 0) for name, fn in {**ROBUSTNESS, **FAIRNESS}.items()}
    assert out["lowercase"] == text.lower()
    assert out["contractions"] == "He said that John isn't going to buy the big car. She can't help."
    assert out["gender"] == "She said that John is not going to buy the big car. He cannot help."
    assert out["names"] == "He said that Jamal is not going to buy the big car. She cannot help."
    assert out["dialect"] == "He said dat John ain't gonna buy da big car. She cannot help."
    assert out["whitespace"].split() == text.split() and out["whitespace"] != text
    assert out["typos"] != text and len(out["typos"]) == len(text)
    # pinned: the same seed gives the same perturbed text in every run and for every model
    assert seeded(ROBUSTNESS["typos"], "typos", 1234)(text, 0) == out["typos"]
    assert seeded(ROBUSTNESS["typos"], "typos", 1234)(text, 1) != out["typos"]


def test_robustness_and_fairness_on_a_tiny_model(tiny_llama, tmp_path):
    from tunebench.benchmarks.harness import run_bench
    from tunebench.benchmarks.tasks import resolve_tasks
    from tunebench.config import BenchConfig, ModelConfig

    tasks, _ = resolve_tasks(["superglue/boolq", "bigbench/operators"])
    res = run_bench(ModelConfig(model=str(tiny_llama)), BenchConfig(metrics=["all"], max_new_tokens=4), tasks,
                    tmp_path / "run", limit=4)
    for t in res["tasks"]:
        rob, fair = t["metrics"]["robustness"], t["metrics"]["fairness"]
        assert set(rob["perturbations"]) == {"typos", "lowercase", "whitespace", "contractions", "synonyms"}
        assert rob["worst_case_accuracy"] <= min([rob["accuracy_unperturbed"], *rob["perturbations"].values()])
        assert set(fair["counterfactuals"]) == {"gender", "names", "dialect"} and 0 <= fair["changed_share_any"] <= 1
