"""Benchmark harness on tiny local models and small hand-written task files."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tunebench.batching import Formatter
from tunebench.benchmarks import bigbench
from tunebench.benchmarks.forgetting import compare_bench, paired_bootstrap
from tunebench.benchmarks.scoring import Scorer, postprocess
from tunebench.benchmarks.tasks import Example, registry, resolve_tasks
from tunebench.errors import UserError

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
    tasks = bigbench.load_bigbench_path(tmp_path / "suite")
    assert [t.name for t in tasks] == ["bigbench/a", "bigbench/b"] and tasks[1].kind == "generate"


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
            "--max-new-tokens", "4"]
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
    lo, hi = paired_bootstrap([1, 0] * 50, [0, 1] * 50)
    assert lo < 0 < hi

    def run(d, scores, chat=False):
        d.mkdir()
        fmt = {"chat_template": chat, "shots": 0}
        (d / "results.json").write_text(json.dumps({"model": str(d), "format": fmt, "tasks": [
            {"name": "t", "primary_metric": "accuracy", "primary": sum(scores) / len(scores)}]}))
        (d / "examples.jsonl").write_text("".join(json.dumps({"task": "t", "id": str(i), "score": s}) + "\n"
                                                  for i, s in enumerate(scores)))
    run(tmp_path / "a", [1.0] * 80 + [0.0] * 20)
    run(tmp_path / "b", [0.0] * 80 + [1.0] * 20)
    c = compare_bench(tmp_path / "a", tmp_path / "b")
    assert c["tasks"][0]["direction"] == "worse" and c["tasks"][0]["delta"] == pytest.approx(-0.6)
    assert "1 of 1 tasks significantly worse" in c["summary"]
    run(tmp_path / "c", [1.0] * 100, chat=True)
    with pytest.raises(UserError, match="different prompt formats"):
        compare_bench(tmp_path / "a", tmp_path / "c")


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
    tasks_mod._registry.cache_clear()
    try:
        task = tasks_mod.registry()["glue/sst2"]
        assert task.size is None
        with pytest.raises(UserError, match=r"glue/SST-2/dev\.tsv: benchmark data file not found"):
            task.load(0, 0)
    finally:
        tasks_mod._registry.cache_clear()
