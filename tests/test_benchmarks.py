"""Benchmark harness on tiny local models and small hand-written task files."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tunebench.benchmarks import bigbench
from tunebench.benchmarks.scoring import Scorer, postprocess
from tunebench.benchmarks.tasks import Example, examples_for, registry, resolve_tasks
from tunebench.errors import UserError
from tunebench.metrics.stats import bootstrap_test, holm, paired_bootstrap
from tunebench.models.batching import Formatter
from tunebench.reports.forgetting import compare_bench

TASK = {
    "name": "tiny_mc", "description": "d", "keywords": ["k"], "metrics": ["multiple_choice_grade"],
    "task_prefix": "Answer.\n", "example_input_prefix": "\nQ: ", "example_output_prefix": "\nA: ",
    "append_choices_to_input": "false", "few_shot_example_separator": "\n--\n",
    "examples": [
        {"input": "Is fire hot?", "target_scores": {"yes": 1, "no": 0}},
        {"input": "Is ice hot?", "target_scores": {"yes": 0, "no": 1}},
        {"input": "Is ice hot?", "target_scores": {"yes": 0, "no": 1}},  # exact duplicate: dropped
        {"input": "Is the sun cold?", "target_scores": {"yes": 0, "no": 1, "maybe": 0.5}},
    ],
}
GEN = {"name": "tiny_gen", "description": "d", "keywords": ["k"], "metrics": ["exact_str_match", "bleu"],
       "output_regex": "[-+]?\\d+",
       "examples": [{"input": "What is 1 plus 1?", "target": "2"}, {"input": "What is 2 plus 2?", "target": ["4", "four"]}]}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def test_bigbench_prompt_follows_the_task_file(tmp_path):
    task = bigbench.task_from_file(_write(tmp_path / "t" / "task.json", TASK))
    assert task.kind == "multiple_choice" and task.size == 3
    ex = task.load(0, 0)
    assert ex[0].context == "Answer.\n\nQ: Is fire hot?\nA: "
    assert ex[0].choices == ["yes", "no"] and ex[0].gold == 0
    assert ex[2].choice_scores == [0.0, 1.0, 0.5] and ex[2].gold == 1
    shot = task.load(1, 0)[0].context
    assert shot.startswith("Answer.\n\nQ: ") and "\n--\n\nQ: Is fire hot?\nA: " in shot


def test_bigbench_defaults_append_choices(tmp_path):
    data = {k: v for k, v in TASK.items() if k not in ("append_choices_to_input", "task_prefix", "example_input_prefix",
                                                        "example_output_prefix")}
    ex = bigbench.task_from_file(_write(tmp_path / "task.json", data)).load(0, 0)[0]
    assert ex.context.startswith("\nQ: Is fire hot?\n  choice: ") and ex.context.endswith("\nA: ")
    assert sorted(ex.context.split("\n  choice: ")[1:])[0].startswith("no")


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("metrics"), "missing key 'metrics'"),
    (lambda d: d.pop("examples"), "missing key 'examples'"),
    (lambda d: d["examples"][0].update(target_scores={}), r"examples\[0\]: 'target_scores' must be a non-empty object"),
    (lambda d: d["examples"][0].update(target="maybe"), r"examples\[0\]: target 'maybe' is not among the choices"),
    (lambda d: d["examples"][1].pop("input"), r"examples\[1\]: missing key 'input'"),
    (lambda d: d["examples"][1].pop("target_scores"), r"examples\[1\]: needs 'target_scores' or 'target'"),
])
def test_bad_task_files_give_one_line_errors(tmp_path, mutate, message):
    data = json.loads(json.dumps(TASK))
    mutate(data)
    with pytest.raises(UserError, match=message):
        bigbench.task_from_file(_write(tmp_path / "task.json", data))


def test_directory_of_tasks_with_a_container(tmp_path):
    _write(tmp_path / "suite" / "task.json", {"name": "container", "description": "d", "keywords": [], "metrics": []})
    _write(tmp_path / "suite" / "a" / "task.json", TASK)
    _write(tmp_path / "suite" / "b" / "task.json", GEN)
    _write(tmp_path / "more" / "c" / "task.json", GEN)
    tasks = bigbench.load_bigbench_path(tmp_path)
    # a container is one task (its subtasks average into it); a folder without task.json is no task
    assert [t.name for t in tasks] == ["bigbench/more_c", "bigbench/suite"]
    assert [s.name for s in tasks[1].subtasks] == ["bigbench/suite:a", "bigbench/suite:b"] and tasks[1].kind == "mixed"
    [one] = bigbench.load_bigbench_path(tmp_path / "suite" / "task.json")
    assert one.subtasks and one.size == 5


def test_every_registered_task_loads_on_the_real_data():
    reg = registry()
    assert {"glue/sst2", "glue/rte", "glue/mrpc", "glue/cola", "glue/qnli", "superglue/boolq", "superglue/cb",
            "superglue/copa", "superglue/wic", "superglue/rte", "superglue/wsc", "mmlu/anatomy",
            "mmlu_cloze/anatomy", "bigbench/emoji_movie", "bigbench/logical_deduction_three_objects"} <= set(reg)
    assert len([n for n in reg if n.startswith("mmlu/")]) == 57
    for name, task in reg.items():
        if name.startswith(("mmlu/", "mmlu_cloze/")) and "anatomy" not in name:
            continue
        ex = task.load(0, 1234)
        assert len(ex) == task.size, name
        if task.family == "bigbench":
            assert len(examples_for(task, 0, None, None, "first", "bigbench")) == task.size, name
        for e in ex[:20]:
            assert e.context and (e.targets or e.choices), name
            if task.kind == "multiple_choice":
                assert 0 <= e.gold < len(e.choices), name


def test_mmlu_prompts_match_lm_eval():
    t = registry()["mmlu/abstract_algebra"]
    e = t.load(0, 0)[0]
    assert e.context == ("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                         "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
                         "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert e.choices == [" A", " B", " C", " D"] and e.gold == 1
    five = t.load(5, 0)[0].context
    assert five.count("\nAnswer:") == 6 and five.count("\n\n") >= 6
    cloze = registry()["mmlu_cloze/abstract_algebra"].load(0, 0)[0]
    assert cloze.choices == [" 0", " 4", " 2", " 6"] and cloze.context.endswith("over Q.\nAnswer:")


def test_suites_resolve():
    tasks, limit = resolve_tasks(suite_names=["forgetting-core"])
    assert len(tasks) == 12 and limit == 100
    with pytest.raises(UserError, match="did you mean 'forgetting-core'"):
        resolve_tasks(suite_names=["forgeting-core"])


def _mc_examples():
    return [Example(id=str(i), context=c, choices=ch, gold=0) for i, (c, ch) in enumerate([
        ("The weather today is", [" sunny and warm", " cold", " a banana split with extra cream"]),
        ("Question: what do cats say?\nAnswer:", [" meow", " woof woof", " moo"]),
        ("#Person1#: Hello.\n#Person2#: Hi there, how are", [" you?", " things going today at the office?"]),
        ("A", [" B", " C"]),
    ])]


def test_packed_scoring_equals_one_row_per_choice_and_ignores_batch_size(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    fmt = Formatter.for_model(tok, False, "off", raw=True)
    ex = _mc_examples()
    packed = Scorer(model, fmt, batch_size=16, packed=True).score(ex)
    rows = Scorer(model, fmt, batch_size=1, packed=False).score(ex)
    single = Scorer(model, fmt, batch_size=1, packed=True).score(ex)
    for a, b, c in zip(packed, rows, single):
        for x, y, z in zip(a, b, c):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4) and x.logprob == pytest.approx(z.logprob, abs=1e-4)
    # the reference computation: one full forward per choice, no batching
    ctx, conts = Scorer(model, fmt).encode(ex[1].context, ex[1].choices)
    ids = torch.tensor([ctx + conts[1]])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0].float(), -1)
    ref = sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(conts[1]))
    assert packed[1][1].logprob == pytest.approx(ref, abs=1e-4)


def test_seq2seq_scoring(tiny_t5):
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    fmt = Formatter.for_model(tok, True, "off", raw=True)
    a = Scorer(model, fmt, batch_size=4).score(_mc_examples())
    b = Scorer(model, fmt, batch_size=1).score(_mc_examples())
    assert all(x.logprob == pytest.approx(y.logprob, abs=1e-4) for p, q in zip(a, b) for x, y in zip(p, q))
    assert all(x.logprob < 0 for p in a for x in p)


def test_postprocess():
    assert postprocess(" 42 apples\nQ: next", None, "[-+]?\\d+") == "42"
    assert postprocess("op 3 = 7.\nnext", "\n", "([-+]?\\d+)[.]{0,1}$") == "7"
    assert postprocess("  geese\nmore", None, None) == "geese"
    assert postprocess("no number", None, "\\d+") == ""


def test_bench_run_results_and_resume(tiny_llama, tmp_path, capsys):
    from tunebench.cli import main

    _write(tmp_path / "tasks" / "mc" / "task.json", TASK)
    _write(tmp_path / "tasks" / "gen" / "task.json", GEN)
    argv = ["bench", "--model", str(tiny_llama), "--task", str(tmp_path / "tasks"), "--out", str(tmp_path / "run"),
            "--max-new-tokens", "4", "--scoring", "lm-eval"]
    assert main(argv) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    names = [t["name"] for t in res["tasks"]]
    assert names == ["bigbench/gen", "bigbench/mc"]
    gen, mc = res["tasks"]
    assert gen["kind"] == "generate" and set(gen["scores"]) == {"exact_str_match", "bleu"} and gen["n"] == 2
    assert mc["kind"] == "multiple_choice" and {"accuracy", "accuracy_norm", "multiple_choice_grade"} <= set(mc["scores"])
    assert 0 <= mc["scores"]["accuracy"] <= 1 and mc["shots"] == 0 and mc["model"] == str(tiny_llama)
    families = ["accuracy", "calibration", "robustness", "fairness", "bias", "toxicity", "efficiency"]
    assert list(mc["metrics"]) == families and list(gen["metrics"]) == families
    assert 0 <= mc["metrics"]["calibration"]["ece"] <= 1 and "not_applicable" in gen["metrics"]["calibration"]
    assert "not_applicable" in mc["metrics"]["toxicity"] and "toxic_fraction" in gen["metrics"]["toxicity"]
    assert "not_run" in mc["metrics"]["robustness"]
    eff = gen["metrics"]["efficiency"]
    assert eff["generated_tokens"] > 0 and eff["estimated_flops_per_example"] > 0 and eff["peak_rss_mb"] > 0
    rows = [json.loads(l) for l in (tmp_path / "run" / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all("score" in r for r in rows)
    assert {"choices", "scores", "prediction", "gold", "score"} <= set(rows[-1])
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("done earlier, kept") == 2


def test_paired_bootstrap_and_forgetting_compare(tmp_path):
    lo, hi = paired_bootstrap([0.0] * 50, [1.0] * 50)
    assert lo == hi == 1.0
    # every resampled mean of a +1/-1 mixture is a multiple of 1/50 near 0: the interval is pinned by the seed
    assert paired_bootstrap([1, 0] * 50, [0, 1] * 50) == (-0.2, 0.2)
    lo, hi, p = bootstrap_test([0.0] * 30, [1.0] * 30)
    assert (lo, hi, p) == (1.0, 1.0, 0.0)  # no resampled mean on the far side of 0
    assert bootstrap_test([0.0] * 10, [0.0] * 10)[2] == 1.0

    def run(d, tasks, fmt=None, weights=None):
        d.mkdir()
        fmt = fmt or {"chat_template": False, "shots": 0, "scoring": "bigbench", "precision": "bfloat16"}
        (d / "results.json").write_text(json.dumps({"model": str(d), "format": fmt, "tasks": [
            {"name": t, "primary_metric": "accuracy", "primary": sum(sc) / len(sc)} for t, sc in tasks.items()]}))
        (d / "examples.jsonl").write_text("".join(
            json.dumps({"task": t, "id": str(i), "score": x} | ({"weight": weights[i]} if weights else {})) + "\n"
            for t, sc in tasks.items() for i, x in enumerate(sc)))

    # three tasks: one clearly worse, one a little worse (significant alone, not after Holm), one unchanged
    run(tmp_path / "a", {"t1": [1.0] * 80 + [0.0] * 20, "t2": [1.0] * 13 + [0.0] * 87, "t3": [1.0] * 50 + [0.0] * 50})
    run(tmp_path / "b", {"t1": [0.0] * 80 + [1.0] * 20, "t2": [0.0] * 13 + [1.0] * 4 + [0.0] * 83,
                         "t3": [1.0] * 50 + [0.0] * 50})
    c = compare_bench(tmp_path / "a", tmp_path / "b")
    t1, t2, t3 = c["tasks"]
    assert t1["delta"] == pytest.approx(-0.6) and t2["delta"] == pytest.approx(-0.09) and t3["delta"] == 0
    assert (t1["direction"], t2["direction"], t3["direction"]) == ("worse", "worse", "no significant change")
    # 2 x the share of 2,000 resampled means at or above 0 (seed 0); the interval excludes 0 alike
    assert (t1["p_value"], t2["p_value"], t3["p_value"]) == (0.0, 0.033, 1.0) and t2["ci95"][1] < 0
    # Holm: the sorted p-values (0, 0.033, 1) times (3, 2, 1), kept monotone
    assert (t1["p_holm"], t2["p_holm"], t3["p_holm"]) == (0.0, 0.066, 1.0)
    assert [t["direction_holm"] for t in c["tasks"]] == ["worse", "no significant change", "no significant change"]
    assert c["summary"].startswith("LoRA: 1 of 3 tasks significantly worse, 0 significantly better (Holm-Bonferroni") \
        or c["summary"].startswith("tuned: 1 of 3 tasks significantly worse, 0 significantly better (Holm-Bonferroni")
    assert "without the adjustment 2 worse, 0 better" in c["summary"]
    run(tmp_path / "c", {"t1": [1.0] * 100}, fmt={"chat_template": True, "shots": 0, "scoring": "bigbench", "precision": "bfloat16"})
    with pytest.raises(UserError, match="different prompt formats"):
        compare_bench(tmp_path / "a", tmp_path / "c")
    run(tmp_path / "d", {"t1": [1.0] * 100}, fmt={"chat_template": False, "shots": 0, "scoring": "lm-eval", "precision": "bfloat16"})
    with pytest.raises(UserError, match=r"different conventions \(bigbench vs lm-eval\)"):
        compare_bench(tmp_path / "a", tmp_path / "d")
    run(tmp_path / "e", {"t1": [1.0] * 100}, fmt={"chat_template": False, "shots": 0, "scoring": "bigbench", "precision": "float32"})
    with pytest.raises(UserError, match="'precision': \\('bfloat16', 'float32'\\)"):
        compare_bench(tmp_path / "a", tmp_path / "e")
    # weighted examples (a container's): the change is the weighted mean of the per-example changes
    run(tmp_path / "w1", {"t": [1.0, 1.0, 0.0, 0.0]}, weights=[0.125, 0.125, 0.375, 0.375])
    run(tmp_path / "w2", {"t": [0.0, 1.0, 0.0, 1.0]}, weights=[0.125, 0.125, 0.375, 0.375])
    w = compare_bench(tmp_path / "w1", tmp_path / "w2")["tasks"][0]
    assert (w["base"], w["tuned"], w["delta"]) == (0.25, 0.5, 0.25)


def test_holm_adjustment_by_hand():
    # p sorted: 0.01 (x4), 0.02 (x3), 0.03 (x2), 0.04 (x1) -> 0.04, 0.06, 0.06 (monotone), 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # 0.8 x 2 capped at 1; 0.9 x 1 raised to keep the order


# ---------------------------------------------------------------------------- BIG-bench's own conventions
# Expected strings and numbers below were produced by bigbench 1.0.0's own code (api/json_task.py,
# api/task_metrics.py, models/model_utils.py; T5 0.9.4's metrics for BLEU and ROUGE), imported as
# bench/bigbench_parity.py imports it, on the same inputs.

def test_bigbench_prompts_and_choice_order_are_bigbench_own(tmp_path):
    from tunebench.benchmarks.bigbench import DEFAULTS, format_example

    sun = {"input": "Is the sun cold?", "target_scores": {"yes": 0, "no": 1, "maybe": 0.5}}
    pick = {"input": "Pick one", "target_scores": {"b": 1, "a": 0, "c": 0, "d": 0}, "target": "b"}
    # default_format_fn(..., random_seed=42) and random_seed=7
    assert format_example(sun, DEFAULTS, 42)["input"] == "\nQ: Is the sun cold?\n  choice: maybe\n  choice: no\n  choice: yes\nA: "
    assert format_example(sun, DEFAULTS, 7)["input"] == "\nQ: Is the sun cold?\n  choice: yes\n  choice: no\n  choice: maybe\nA: "
    assert format_example(pick, DEFAULTS, 42)["input"] == "\nQ: Pick one\n  choice: b\n  choice: d\n  choice: a\n  choice: c\nA: "
    assert format_example(pick, DEFAULTS, 7)["input"] == "\nQ: Pick one\n  choice: c\n  choice: b\n  choice: a\n  choice: d\nA: "
    assert format_example(sun, DEFAULTS, 42)["choice"] == ["yes", "no", "maybe"]  # scored in file order
    # "false" as a string is true in Python: BIG-bench appends the choices (the lm-eval convention does not)
    task = bigbench.task_from_file(_write(tmp_path / "t" / "task.json", TASK))
    ex = bigbench.bigbench_examples(task.bigbench, 0, 42, None, "first")
    assert ex[2].context == "Answer.\n\nQ: Is the sun cold?\n  choice: maybe\n  choice: no\n  choice: yes\nA: "
    assert ex[2].choices == ["yes", "no", "maybe"] and ex[2].choice_scores == [0.0, 1.0, 0.5] and ex[2].gold == 1
    assert task.load(0, 42)[2].context == "Answer.\n\nQ: Is the sun cold?\nA: "


def test_bigbench_example_selection_and_shots_are_bigbench_own():
    from tunebench.benchmarks.bigbench import nshot
    from tunebench.benchmarks.tasks import examples_for

    # make_nshot_dataset(10 samples, 0 shots, random_seed=42, max_examples=4) picks samples 8, 1, 5, 0
    assert [i for i, _ in nshot([{"input": str(i), "target": [str(i)]} for i in range(10)], 0, 42, "\n", 4)] == [8, 1, 5, 0]
    emoji = registry()["bigbench/emoji_movie"]
    assert [e.id for e in examples_for(emoji, 0, None, 5, "seeded", "bigbench")] == ["83", "53", "70", "45", "44"]
    assert [e.id for e in examples_for(emoji, 0, None, 5, "first", "bigbench")] == ["0", "1", "2", "3", "4"]
    one = examples_for(emoji, 1, None, 3, "seeded", "bigbench")[0].context
    assert one == ("\nQ: What movie does this emoji describe? \U0001f466\U0001f9f8\U0001f920\U0001f468\u200d\U0001f680\n"
                   "  choice: for a few dollars more\n  choice: toy story\n  choice: thelma & louise\n"
                   "  choice: beauty and the beast\n  choice: throne of blood\nA: toy story\n\n"
                   "Q: What movie does this emoji describe? \U0001f466\U0001f453\u26a1\ufe0f\n  choice: harry potter\n"
                   "  choice: shutter island\n  choice: inglourious basterds\n  choice: die hard\n  choice: moonlight\nA: ")


def test_bigbench_metrics_are_bigbench_own():
    from tunebench.benchmarks import bigbench_metrics as bbm

    samples = [
        {"choice": ["yes", "no", "maybe"], "target_scores": {"yes": 0, "no": 1, "maybe": 0.5},
         "log_prob": [-0.2, -2.0, -1.9], "absolute_log_prob": [-1.2, -3.0, -2.9]},
        {"choice": ["a", "b"], "target_scores": {"a": 0, "b": 1}, "log_prob": [-1.5, -0.25], "absolute_log_prob": [-4.0, -2.75]},
        {"choice": ["x", "y", "z"], "target_scores": {"x": 0.25, "y": 0, "z": 1},
         "log_prob": [-0.5, -1.2, -2.3], "absolute_log_prob": [-0.9, -1.6, -2.7]},
    ]
    scores, per, _ = bbm.mc_metrics(samples, ["multiple_choice_grade", "calibration_multiple_choice_brier_score",
                                              "expected_calibration_error", "weighted_log_probabilities",
                                              "weighted_probabilities"])
    # partial credit by hand: picks yes (0), b (1), x (0.25)
    assert per["multiple_choice_grade"] == [0.0, 1.0, 0.25] and scores["multiple_choice_grade"] == 1.25 / 3
    assert scores == {"multiple_choice_grade": 0.4166666666666667,
                      "calibration_multiple_choice_brier_score": 0.3113130263995781,
                      "expected_calibration_error": 0.37362531611909505,
                      "weighted_log_probabilities": -3.375, "weighted_probabilities": 0.1033581557592249}
    # tie-breaking: task_metrics.argmax on these arrays
    assert [bbm.argmax(a) for a in ([-1.0, -1.0], [-0.7] * 4, [-2.0, -0.3, -0.3], [0.5] * 3)] == [0, 1, 1, 2]
    targets = [["the cat sat on the mat", "a cat was on the mat"], ["hello world . how are you"], ["one two three"]]
    responses = ["the cat is on the mat", "hello world . how are you today", "three two one"]
    # rouge_fn with numpy's generator seeded at 0 just before it, bleu_fn
    assert bbm.rouge(targets, responses) == {"rouge1": 91.41414141414143, "rouge2": 49.629629629629626,
                                             "rougeLsum": 69.1919191919192}
    assert bbm.bleu(targets, responses) == 58.282339541526504
    assert bbm.generative_metrics([["B I O O"], ["O O"]], ["B I B", "O O O"], ["sequence_f1"])[0] == {"sequence_f1": 87.5}
    assert bbm.log_likelihood([[-3.0], [-5.0]], [["ab cd"], ["efg"]]) == {
        "log_likelihood": -4.0, "log_likelihood_per_word": -3.25, "log_likelihood_per_char": -1.1333333333333333}
    # add_aggregate_scores: subtask means; normalized score of each preferred score over [low, high]
    agg, pref = bbm.aggregate([{"scores": {"multiple_choice_grade": 0.5}, "preferred": "multiple_choice_grade", "low": 0.25, "high": 1},
                               {"scores": {"multiple_choice_grade": 1.0}, "preferred": "multiple_choice_grade", "low": 0.5, "high": 1}],
                              container=True)
    assert pref == "multiple_choice_grade" and agg == {"multiple_choice_grade": 0.75,
                                                       "normalized_aggregate_score": pytest.approx((100 / 3 + 100) / 2)}


@pytest.mark.parametrize("text,stop,regex,max_length,expected", [
    # postprocess_output(text, max_length, stop_string, output_regex)
    ("op 3 = 7.\nnext", "\n", "([-+]?\\d+)[.]{0,1}$", 256, "7"),
    ("\nfoo\nbar", "\n", None, 256, "\nfoo\nbar"),      # a stop string at position 0 cuts nothing
    (" 42 apples. Q", None, "[^\\.\\?\\!\\;\\n]+", 256, " 42 apples"),  # the default regex; no stripping
    ("  geese\nmore", None, "[^\\.\\?\\!\\;\\n]+", 256, "  geese"),
    ("abcdef", None, None, 3, "abc"),
    ("x = 12 and 13", None, "[-+]?\\d+", 256, "12"),
])
def test_bigbench_postprocessing_is_bigbench_own(text, stop, regex, max_length, expected):
    from tunebench.benchmarks import bigbench_metrics as bbm

    assert bbm.postprocess(text, stop, regex, max_length) == expected


def test_generation_stops_only_where_more_text_cannot_change_the_output():
    import random

    from tunebench.benchmarks import bigbench_metrics as bbm
    from tunebench.benchmarks.bigbench import DEFAULT_REGEX

    rng = random.Random(0)
    alphabet = "ab 1.\n?;x"
    for stop, regex in ((None, DEFAULT_REGEX), ("\n", None), ("\n", "[-+]?\\d+"), (None, "[-+]?\\d+")):
        settled_seen = 0
        for _ in range(400):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            if bbm.settled(text, stop, regex, max_length=20):
                settled_seen += 1
                for _ in range(5):
                    more = text + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 15)))
                    assert bbm.postprocess(more, stop, regex, 20) == bbm.postprocess(text, stop, regex, 20)
        # the early stop does fire where it is sound (never for a task's own regex without a stop string)
        assert (settled_seen > 100) == (regex == DEFAULT_REGEX or stop is not None), (stop, regex)


def test_bigbench_scoring_end_to_end_on_a_tiny_model(tiny_llama, tmp_path):
    """A container of a partial-credit task and a generative one, `--scoring bigbench`: each choice's
    log-probability recomputed here with one plain forward per choice, the pick and its grade by hand."""
    from tunebench.cli import main

    _write(tmp_path / "box" / "task.json", {"name": "box", "description": "d", "keywords": [], "canary": "c"})
    _write(tmp_path / "box" / "mc" / "task.json", TASK)
    _write(tmp_path / "box" / "gen" / "task.json", GEN)
    out = tmp_path / "run"
    assert main(["bench", "--model", str(tiny_llama), "--task", str(tmp_path / "box"), "--out", str(out),
                 "--max-new-tokens", "6"]) == 0
    res = json.loads((out / "results.json").read_text())
    [entry] = res["tasks"]
    assert res["format"]["scoring"] == "bigbench" and entry["scoring"] == "bigbench"
    assert "greedy decoding" in res["scoring"]["bigbench"]["deviations"][0]
    rows = [json.loads(l) for l in (out / "examples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["gen:0", "gen:1", "mc:0", "mc:1", "mc:2"]
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    grades = []
    for r in rows[2:]:
        ctx = tok(r["context"]).input_ids  # the tokenizer's BOS on the context only
        lps = []
        for c in r["choices"]:
            ids = tok(c, add_special_tokens=False).input_ids
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ctx + ids])).logits[0].float(), -1)
            lps.append(sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(ids)))
        assert r["scores"] == pytest.approx(lps, abs=1e-4)
        pick = max(range(len(lps)), key=lambda k: lps[k])
        assert r["prediction"] == pick
        grades.append(r["choice_scores"][pick])
    mc_grade = sum(grades) / 3
    gen = entry["subtasks"]["gen"]["scores"]
    assert entry["subtasks"]["mc"]["scores"]["multiple_choice_grade"] == pytest.approx(mc_grade)
    # outputs: BIG-bench's post-processing of the raw text (GEN's regex), exact match against the targets
    assert [r["output"] for r in rows[:2]] == [bbm_post(r["generated"]) for r in rows[:2]]
    assert gen["exact_str_match"] == sum(r["output"] in r["targets"] for r in rows[:2]) / 2
    # the container: the mean over subtasks of each metric, preferred scores normalised and averaged
    assert entry["preferred_metric"] == "normalized_aggregate_score" == entry["primary_metric"]
    low_mc = (0.5 + 0.5 + 0.5) / 3  # chance: the mean target score of each distinct example
    expected = ((mc_grade - low_mc) / (1 - low_mc) * 100 + gen["exact_str_match"] * 100) / 2
    assert entry["primary"] == pytest.approx(expected)
    assert sum(r["weight"] * r["score"] for r in rows) == pytest.approx(expected)


def bbm_post(text: str) -> str:
    from tunebench.benchmarks import bigbench_metrics as bbm

    return bbm.postprocess(text, None, GEN["output_regex"])



def test_every_declared_format_scores_on_a_tiny_model(tiny_llama, tmp_path):
    from tunebench.benchmarks.harness import run_bench
    from tunebench.config import BenchConfig, ModelConfig

    names = ["glue/sst2", "glue/mrpc", "superglue/copa", "superglue/wsc", "mmlu/anatomy", "mmlu_cloze/anatomy",
             "bigbench/logical_deduction_three_objects", "bigbench/operators"]
    tasks, _ = resolve_tasks(names)
    cfg = BenchConfig(shots=1, max_new_tokens=4, batch_size=4)
    res = run_bench(ModelConfig(model=str(tiny_llama)), cfg, tasks, tmp_path / "run", limit=3)
    assert [t["name"] for t in res["tasks"]] == names
    assert all(t["n"] == 3 and t["shots"] == 1 for t in res["tasks"])
    assert set(res["aggregates"]["by_family"]) == {"glue", "superglue", "mmlu", "bigbench"}


def test_bad_task_file_through_the_cli(tmp_path, capsys):
    from tunebench.cli import main

    bad = json.loads(json.dumps(TASK))
    bad["examples"][0]["target"] = "perhaps"
    _write(tmp_path / "bad" / "task.json", bad)
    code = main(["bench", "--model", "smollm2-135m-instruct", "--task", str(tmp_path / "bad" / "task.json"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "target 'perhaps' is not among the choices" in err
    assert not (tmp_path / "o").exists()


def test_a_missing_benchmark_file_is_a_clear_error(tmp_path, monkeypatch):
    from tunebench.benchmarks import tasks as tasks_mod

    monkeypatch.setenv("TUNEBENCH_DATA", str(tmp_path))  # an empty data root
    tasks_mod.clear_registry()
    try:
        task = tasks_mod.registry()["glue/sst2"]
        assert task.size is None
        with pytest.raises(UserError, match=r"glue/SST-2/dev\.tsv: benchmark data file not found"):
            task.load(0, 0)
    finally:
        tasks_mod.clear_registry()


def test_the_lm_eval_convention_reads_the_files_own_fields(tmp_path):
    """BIG-bench's defaults (its output regex, a preferred score) belong to the bigbench convention
    only: under lm-eval a task without them post-processes and picks its primary metric as before."""
    plain = {k: v for k, v in GEN.items() if k != "output_regex"}
    task = bigbench.task_from_file(_write(tmp_path / "g" / "task.json", plain))
    assert (task.output_regex, task.stop_string, task.preferred) == (None, None, None)
    assert task.bigbench.output_regex == bigbench.DEFAULT_REGEX and task.bigbench.preferred == "exact_str_match"
    assert postprocess(" 7. yes\nno", task.stop_string, task.output_regex) == "7. yes"
