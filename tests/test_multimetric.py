"""HELM-style metric families: hand-computed cases, and values pinned from crfm-helm's own functions.

crfm-helm is not installed by `make test` (it cannot be installed beside tunebench's datasets>=4),
so the values marked "crfm-helm 0.5.16" below were obtained by running crfm-helm 0.5.16's own
function, named at each, on the same inputs (bench/helm_parity.py reruns those comparisons live).
"""
import math
import random
import re

import pytest

from tunebench.benchmarks.perturbations import FAIRNESS, ROBUSTNESS, seeded
from tunebench.metrics.helm import (
    PeakMemory,
    bias,
    calibration,
    calibration_for_rows,
    choice_probabilities,
    efficiency,
    helm_word_tokenize,
    toxicity,
)


# ---------------------------------------------------------------------------- calibration
def test_ece_of_a_known_set():
    # 4 points -> 4 equal-mass bins, edges halfway between sorted neighbours: 0.6, 0.75, 0.9, 1.0;
    # the two 0.6 fall in the first bin (all right), the two 0.9 in the third (one right):
    # |1.0 - 0.6| * 2/4 + |0.5 - 0.9| * 2/4 = 0.4
    c = calibration([0.9, 0.9, 0.6, 0.6], [True, False, True, True])
    assert c["ece"] == pytest.approx(0.4)
    assert [(b["bin"], b["n"], b["accuracy"]) for b in c["reliability"]] == [
        ([0.0, 0.6], 2, 1.0), ([0.6, 0.75], 0, None), ([0.75, 0.9], 2, 0.5), ([0.9, 1.0], 0, None)]
    # 1 bin: |mean confidence 0.75 - accuracy 0.75|
    assert c["ece_1_bin"] == pytest.approx(0.0)
    # most confident first (ties kept in order): 1, 1/2, 2/3, 3/4; acc@10 = first int(0.1 * 4) + 1 = 1 example
    assert c["selective_accuracy_at_10pct"] == 1.0
    assert c["selective_coverage_accuracy_area"] == pytest.approx((1 + 1 / 2 + 2 / 3 + 3 / 4) / 4)
    assert calibration([1.0, 1.0], [True, True])["ece"] == 0.0


def test_calibration_equals_helm_on_25_examples():
    conf = [0.97, 0.31, 0.55, 0.55, 0.88, 0.42, 0.66, 0.99, 0.25, 0.73, 0.55, 0.81, 0.38, 0.91, 0.47, 0.62, 0.29,
            0.77, 0.55, 0.84, 0.93, 0.35, 0.58, 0.71, 0.44]
    ok = [bool(x) for x in [1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1]]
    c = calibration(conf, ok)
    # crfm-helm 0.5.16 basic_metrics.compute_calibration_metrics (uncertainty-calibration 0.1.4)
    assert c["ece"] == pytest.approx(0.10359999999999997, rel=1e-12)  # ece_10_bin
    assert c["ece_1_bin"] == pytest.approx(0.020399999999999974, rel=1e-12)  # ece_1_bin
    assert c["selective_coverage_accuracy_area"] == pytest.approx(0.8381869490644562, rel=1e-12)  # selective_cov_acc_area
    assert c["selective_accuracy_at_10pct"] == 1.0  # selective_acc@10
    # 10 parts of the 25 sorted points (3,3,3,3,3,2,2,2,2,2), edges halfway between parts; the edge
    # between the 3rd and 4th part falls on the tied 0.55s, so all four of them join the 3rd bin
    assert [b["n"] for b in c["reliability"]] == [3, 3, 6, 0, 3, 2, 2, 2, 2, 2]
    assert c["reliability"][2]["bin"] == [0.43, 0.55] and c["reliability"][3]["bin"] == [0.55, 0.565]


def test_choice_probabilities_and_rows():
    assert choice_probabilities([math.log(0.2), math.log(0.8)]) == pytest.approx([0.2, 0.8])
    rows = [{"scores": [math.log(0.2), math.log(0.8)], "prediction": 1, "correct": True},
            {"scores": [math.log(0.7), math.log(0.3)], "prediction": 0, "correct": False}]
    c = calibration_for_rows(rows)
    assert [r["confidence"] for r in rows] == pytest.approx([0.8, 0.7])
    assert c["mean_confidence"] == pytest.approx(0.75) and c["accuracy"] == 0.5
    # 2 points, 2 bins split at 0.75: |0 - 0.7| / 2 + |1 - 0.8| / 2
    assert c["ece"] == pytest.approx(0.5 * abs(1 - 0.8) + 0.5 * abs(0 - 0.7))
    assert "not_applicable" in calibration_for_rows([])


# ---------------------------------------------------------------------------- bias
def test_bias_measures_on_hand_checkable_texts():
    b = bias(["She is a nurse and her mother is a nurse.", "He fixed it."])
    # gender words: she, her, mother (female 3 of 20 words) vs he (male 1 of 20): TV distance from 50/50 = 0.25
    assert b["gender_demographic_representation"] == pytest.approx(0.25)
    assert b["gender_group_word_counts"] == {"female": 3, "male": 1}
    # "nurse" (twice) co-occurs only with female words: (3 x 2, 0) -> TV = 0.5; no other profession occurs
    assert b["gender_profession_stereotypical_association"] == pytest.approx(0.5)
    assert bias(["The meeting was moved to Tuesday."])["gender_demographic_representation"] is None


def test_bias_maxima_and_helm_normalisation():
    # one group only: 1 - 1/groups, i.e. 0.5 for gender and 2/3 for race (never 1)
    assert bias(["She and her mother."])["gender_demographic_representation"] == pytest.approx(0.5)
    assert bias(["Garcia called."])["race_demographic_representation"] == pytest.approx(2 / 3)
    assert bias(["x"])["max"] == {"gender": 0.5, "race": pytest.approx(2 / 3)}
    # counts are divided by the size of each list: 1 Asian name of 20, 1 Hispanic of 16, 1 white of 20
    # -> (4, 5, 4) / 13 against 1/3 each: TV = (1/39 + 2/39 + 1/39) / 2 = 2/39
    assert bias(["Garcia, Wong and Jones."])["race_demographic_representation"] == pytest.approx(2 / 39)
    # co-occurrence = target occurrences x group-word occurrences, per text, summed over texts:
    # nurse: female 1 x 2 + 0, male 0 + 1 x 1 -> (2, 1) -> TV 1/6 (counting each text once would give 0)
    assert bias(["she nurse nurse", "he nurse"])["gender_profession_stereotypical_association"] == pytest.approx(1 / 6)


def test_bias_equals_helm_on_fixed_texts():
    texts = ["The doctor said he would call his sister tomorrow.",
             "My aunt is a brilliant engineer; my uncle is a lazy accountant.",
             "Mr. Garcia and Dr. Wong met the new professor.",
             "Jones was an arrogant lawyer. Chen was a quiet, studious scientist.",
             "The nurse told the patient that she was busy. The surgeon said he was tired.",
             "Her daughter became a pilot. His son became a teacher.",
             "Lopez, a hardworking farmer, was honest and generous.",
             "Davis' sister was a nurse. The sisters' mother was a librarian."]
    b = bias(texts)
    # crfm-helm 0.5.16 BiasMetric(mode, demographic_category, target_category).evaluate_*(texts)
    assert b["gender_demographic_representation"] == pytest.approx(0.07142857142857145, rel=1e-12)
    assert b["gender_adjective_stereotypical_association"] == 0.0
    assert b["gender_profession_stereotypical_association"] == pytest.approx(0.16111111111111112, rel=1e-12)
    assert b["race_demographic_representation"] == pytest.approx(0.05128205128205124, rel=1e-12)
    assert b["race_adjective_stereotypical_association"] == pytest.approx(0.4666666666666667, rel=1e-12)
    assert b["race_profession_stereotypical_association"] == pytest.approx(0.5000000000000001, rel=1e-12)


def test_bias_tokenization_matches_helm_on_listed_words():
    text = "Mr. Wong's daughter is a nurse. Dr. Garcia is a surgeon.".lower()
    # crfm-helm 0.5.16 calls nltk.word_tokenize (Punkt's English model), which gives:
    helm = ["mr.", "wong", "'s", "daughter", "is", "a", "nurse", ".", "dr.", "garcia", "is", "a", "surgeon", "."]
    ours = helm_word_tokenize(text)
    # without the English model "mr." and "dr." end sentences here; no listed word is affected
    assert ours == ["mr", ".", "wong", "'s", "daughter", "is", "a", "nurse", ".", "dr", ".", "garcia", "is", "a",
                    "surgeon", "."]
    listed = {"wong", "daughter", "nurse", "garcia", "surgeon"}
    assert [t for t in ours if t in listed] == [t for t in helm if t in listed]


# ---------------------------------------------------------------------------- toxicity
def test_toxicity_counts_as_helm_toxic_frac():
    from profanity_check import predict_prob

    texts = ["You are a stupid idiot and I hate you", "fuck off", "Thank you for the summary of the meeting.",
             "#Person1# asks #Person2# about the refund.", ""]
    t = toxicity(texts)
    # 2 of 5 outputs score >= 0.5; the empty one is not scored and counts as not toxic (HELM's toxic_frac)
    assert t["toxic_fraction"] == 2 / 5
    assert t["mean_probability"] == pytest.approx(sum(predict_prob(texts[:4])) / 4)
    assert "alt-profanity-check" in t["classifier"] and t["threshold"] == 0.5


# ---------------------------------------------------------------------------- perturbations
def test_helm_perturbations_reproduce_helms_own_examples():
    # crfm-helm 0.5.16 augmentations/test_perturbation.py: inputs and expected outputs, HELM seeding Random("id0")
    r = ROBUSTNESS
    assert r["typos"]("After their marriage, she started a close collaboration with Karvelas.",
                      random.Random("id0")) == "After tjeir marriage, she xrwrted a cloae dollabpration with Iarvwlas."
    assert r["whitespace"]("Hello World!\nQuite a day, huh?", random.Random("id0")) == "Hello   World!\nQuite a  day,   huh?"
    assert r["contractions"]("She is a doctor, and I am a student", random.Random("id0")) == "She's a doctor, and I'm a student"
    assert FAIRNESS["gender"]("Did she mention that he was coming with his parents and their friends?",
                              random.Random("id0")) == "Did she mention that she was coming with her parents and their friends?"
    assert FAIRNESS["gender"]("She didn't, perhaps he didn't tell her!", random.Random("id0")) == \
        "She didn't, perhaps she didn't tell her!"
    assert r["lowercase"]("Hello World", random.Random("id0")) == "hello world"


def test_own_list_perturbations_follow_helms_algorithm():
    t1 = "Mary told Michael that she is not sure; he is going to ask Emily and James himself. MARY laughed."
    t2 = "You all are going to want to see this: nothing is the same with them, about to leave the the house."
    # crfm-helm 0.5.16 PersonNamePerturbation(prob=1.0, white_american -> black_american, first_name,
    # preserve_gender=True).perturb_with_persistency and DialectPerturbation(prob=1.0, SAE -> AAVE).perturb,
    # given tunebench's lists as their name/mapping files: same name every time, gender kept, case kept
    assert FAIRNESS["first_names_own_list"](t1, random.Random("id0")) == \
        "Latoya told Malik that she is not sure; he is going to ask Ebony and Jamal himself. LATOYA laughed."
    # HELM's pattern needs a non-word character on each side and matches cannot share one:
    # "You all" at the start, "them" after "with " and the second "the" stay
    assert FAIRNESS["dialect_own_list"](t2, random.Random("id0")) == \
        "You all are gonna want to see dis: nothin is da same wit them, finna leave da the house."


def test_perturbations_are_exact_for_a_seed():
    text = "So he said that John is not going to buy the big car. She cannot help him."
    out = {name: seeded(fn, name, 1234)(text, 0) for name, fn in {**ROBUSTNESS, **FAIRNESS}.items()}
    assert set(ROBUSTNESS) == {"typos", "lowercase", "whitespace", "contractions", "synonyms_own_list"}
    assert set(FAIRNESS) == {"gender", "first_names_own_list", "dialect_own_list"}
    assert out["lowercase"] == text.lower()
    assert out["contractions"] == "So he said that John isn't going to buy the big car. She can't help him."
    assert out["gender"] == "So she said that John is not going to buy the big car. She cannot help her."
    # one black-American male name drawn for "John" (HELM's preserve_gender)
    assert out["first_names_own_list"] == "So he said that Tyrone is not going to buy the big car. She cannot help him."
    # " is not " takes the space before "going", so HELM's pattern cannot match "going to" next to it
    assert out["dialect_own_list"] == "So he said dat John ain't going to buy da big car. She cannot help him."
    assert out["whitespace"] == ("So   he  said   that  John   is   not   going  to  buy  the   big  car.   She   cannot "
                                 "help  him.")
    assert out["typos"] == "So he said that John is noy boing to buy the big car. She cannot help him."
    assert out["synonyms_own_list"] == "So he stated that John is not going to purchase the big car. She cannot assist him."
    # pinned: the same seed gives the same perturbed text in every run and for every model
    assert seeded(ROBUSTNESS["typos"], "typos", 1234)(text, 0) == out["typos"]
    assert seeded(ROBUSTNESS["typos"], "typos", 1234)(text, 1) != out["typos"]
    assert seeded(FAIRNESS["first_names_own_list"], "first_names_own_list", 1234)(text, 0) == out["first_names_own_list"]


# ---------------------------------------------------------------------------- efficiency
class _Tiny:
    """A model shaped object: 20 non-embedding parameters, 2 layers, hidden size 4."""

    def __init__(self):
        import torch

        self.lin = torch.nn.Linear(4, 4)
        self.config = type("C", (), {"num_hidden_layers": 2, "hidden_size": 4})()

    def named_parameters(self):
        return self.lin.named_parameters()

    def parameters(self):
        return self.lin.parameters()


def test_efficiency_flops_and_perturbation_passes():
    e = efficiency(2.0, 2, 10, 100, 5, 1.0, _Tiny(), PeakMemory(), perturbation_passes=8)
    # 2 x 20 x (10 + 5) + 4 x 2 layers x 4 hidden x 100 = 3800 FLOPs over 2 examples
    assert e["estimated_flops_per_example"] == 1900
    assert e["examples_per_s"] == 1.0 and e["generated_tokens_per_s"] == 5.0
    assert e["includes_perturbation_passes"] is True and e["perturbation_passes"] == 8
    assert "8 perturbed passes" in e["perturbation_note"]
    e0 = efficiency(2.0, 2, 10, 100, 5, 1.0, _Tiny(), PeakMemory())
    assert e0["includes_perturbation_passes"] is False and "perturbation_note" not in e0


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_peak_memory_is_the_windows_own():
    big = bytearray(400 * 2**20)
    big[::4096] = b"\x01" * len(big[::4096])  # touch every page: 400 MB resident
    del big
    before = _hwm_mb()  # the process's peak includes the 400 MB
    window = PeakMemory("task")
    small = bytearray(50 * 2**20)
    small[::4096] = b"\x01" * len(small[::4096])
    fig = window.figures()
    del small
    # the window's peak is what it held (about the resident size now, 50 MB of it this array), not the 400 MB before
    assert fig["peak_rss_mb"] <= before - 300
    assert fig["peak_memory_scope"].startswith("this task's own peak RSS (Linux VmHWM")
    assert "process_peak_rss_mb" not in fig


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_peak_memory_windows_nest_a_stage_keeps_the_peak_of_its_tasks():
    stage = PeakMemory("stage")
    big = bytearray(300 * 2**20)
    big[::4096] = b"\x01" * len(big[::4096])
    del big
    task = PeakMemory("task")  # resets the kernel's counter: the stage must not lose its 300 MB
    t, s = task.figures()["peak_rss_mb"], stage.figures()["peak_rss_mb"]
    task.close(), stage.close()
    assert s >= t + 250


def test_peak_memory_falls_back_to_the_process_peak_and_says_so(monkeypatch):
    from tunebench.io import memory

    monkeypatch.setattr(memory, "_vm_hwm_kb", lambda: None)  # a system without /proc
    fig = PeakMemory("task").figures()
    assert "peak_rss_mb" not in fig and "process_peak_rss_mb" in fig
    assert fig["peak_memory_scope"].startswith("the process's peak RSS so far (getrusage), not this task's own")


def test_robustness_and_fairness_on_a_tiny_model(tiny_llama, tmp_path):
    from tunebench.benchmarks.harness import run_bench
    from tunebench.benchmarks.tasks import resolve_tasks
    from tunebench.config import BenchConfig, ModelConfig

    tasks, _ = resolve_tasks(["superglue/boolq", "bigbench/operators"])
    res = run_bench(ModelConfig(model=str(tiny_llama)), BenchConfig(metrics=["all"], max_new_tokens=4), tasks,
                    tmp_path / "run", limit=4)
    for t in res["tasks"]:
        rob, fair, eff = t["metrics"]["robustness"], t["metrics"]["fairness"], t["metrics"]["efficiency"]
        assert set(rob["perturbations"]) == set(ROBUSTNESS)
        assert rob["worst_case_accuracy"] <= min([rob["accuracy_unperturbed"], *rob["perturbations"].values()])
        assert set(fair["counterfactuals"]) == set(FAIRNESS)
        # 5 robustness + 3 fairness passes ran inside the task's timed window, and the figures say so
        assert eff["includes_perturbation_passes"] is True and eff["perturbation_passes"] == 8
        assert eff["peak_memory_scope"].startswith("this task's own")
