"""The contamination check on planted duplicates, on real pools, in the pipeline and from the CLI."""
import json

import pytest
from conftest import dialogsum_rows

from tunebench.cli import main
from tunebench.config import ContaminationConfig, DataConfig
from tunebench.data import contamination as contam
from tunebench.pipeline import prepare_stage

LONG = ("The committee met on Tuesday to discuss the budget for the new library, and after a long debate "
        "they agreed to postpone the vote until the spring.")           # 27 words
SHORT = "a gorgeous , witty , seductive movie ."                          # 6 words, SST-2 style
OTHER = ("Rain fell over the harbour all night while the fishing boats waited for the storm to pass "
         "before heading out again at dawn.")


def _sets():
    return {"bench/x": [("e1", [LONG]), ("e2", [SHORT]), ("e3", [OTHER]), ("e4", ["too short"])]}


def _row(i, prompt, completion="ok"):
    return {"id": i, "task": "t", "prompt": prompt, "completion": completion}


def test_planted_duplicates_are_found_listed_and_dropped():
    train = [
        _row("exact", LONG),
        # embedded in a longer text, with other case and punctuation: still the same words
        _row("embedded", "Summarize: " + LONG.upper().replace(",", " ;") + " Then answer briefly.", "The vote waits."),
        # a text under 13 words counts as one gram, found word for word inside the training text
        _row("short", "Review:\nA gorgeous, witty, seductive movie.\nIs it positive?", "positive"),
        # in the completion (an inverted template asks for the text itself)
        _row("in_completion", "Write a sentence.", "Oh: " + LONG),
        # 12 consecutive shared words are not 13: no overlap
        _row("near_miss", "Rain fell over the harbour all night while the fishing boats waited quietly for the sun."),
        _row("clean", "Totally unrelated text about cooking pasta with garlic and olive oil for dinner tonight."),
        # the 2-word eval text is below min_words: no evidence either way
        _row("tiny", "This is too short to matter."),
    ]
    index = contam.index_of(_sets(), n=13, min_words=4)
    report = contam.check(train, index)
    pairs = {(o["train_id"], o["eval_id"]) for o in report["overlaps"]}
    assert pairs == {("exact", "e1"), ("embedded", "e1"), ("short", "e2"), ("in_completion", "e1")}
    assert report["contaminated_train_ids"] == sorted(["exact", "embedded", "short", "in_completion"])
    gram = next(o["gram"] for o in report["overlaps"] if o["train_id"] == "short")
    assert gram == "a gorgeous witty seductive movie"
    assert report["eval_sets"]["bench/x"] == {"examples": 4, "overlapping": 2, "not_checked": 1}
    kept = contam.drop(train, report)
    assert [r["id"] for r in kept] == ["near_miss", "clean", "tiny"]
    assert report["dropped"] == ["exact", "embedded", "short", "in_completion"]
    assert "WARNING" not in contam.summary_line(report) and "4 of 7" in contam.summary_line(report)


def test_a_longer_n_misses_what_13_finds():
    train = [_row("embedded", "x " + LONG + " y")]
    assert contam.check(train, contam.index_of(_sets(), 13, 4))["contaminated_train"] == 1
    assert contam.check(train, contam.index_of(_sets(), 40, 30))["contaminated_train"] == 0


def test_bad_settings_are_refused():
    with pytest.raises(Exception, match="min_words"):
        contam.EvalIndex(n=5, min_words=9)


def test_pipeline_drops_planted_copies_of_the_test_split_and_a_benchmark(tmp_path, capsys):
    """A user dataset whose training split holds a DialogSum test dialogue and an SST-2 sentence the suite scores."""
    test = dialogsum_rows("test", 3)
    sst2_first = "unflinchingly bleak and desperate"  # example 1 of glue/sst2 (file line 3): 4 words
    train = [{"id": f"r{i}", "dialogue": r["dialogue"], "summary": r["summary"]} for i, r in enumerate(dialogsum_rows("dev", 6))]
    train.append({"id": "planted_test", "dialogue": "#Person1#: Hi.\n" + test[1]["dialogue"], "summary": "x y z"})
    train.append({"id": "planted_sst2", "dialogue": f"#Person1#: The critics called it {sst2_first}!", "summary": "a film"})
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (d / "test.jsonl").write_text("".join(json.dumps({"id": r["fname"], "dialogue": r["dialogue"], "summary1": r["summary1"],
                                                       "summary2": r["summary2"]}) + "\n" for r in test))
    cfg = DataConfig(dataset=str(d), id_field="id", validation_fraction=0.0)
    evaluation = {"split": "test", "limit": None, "benchmarks": {"task": ["glue/sst2"], "limit": 10}}
    out = tmp_path / "prepared"
    summary = prepare_stage(cfg, out, contamination=ContaminationConfig(drop=True), evaluation=evaluation)
    report = json.loads((out / "contamination.json").read_text())
    assert {(o["train_id"], o["eval_set"], o["eval_id"]) for o in report["overlaps"]} == {
        ("planted_test", "dialogsum/test", "test_1"), ("planted_sst2", "glue/sst2", "1")}
    assert report["eval_sets"]["glue/sst2"]["examples"] == 10 and report["eval_sets"]["dialogsum/test"]["examples"] == 3
    kept = [json.loads(line)["id"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert sorted(kept) == [f"r{i}" for i in range(6)] and summary["counts"]["train"] == 6
    printed = capsys.readouterr().out
    assert "WARNING: contamination: 2 of 8 training examples" in printed and "2 dropped" in printed
    # without drop: warned and listed, nothing removed
    prepare_stage(cfg, tmp_path / "kept", contamination=ContaminationConfig(drop=False), evaluation=evaluation)
    assert len((tmp_path / "kept" / "train.jsonl").read_text().splitlines()) == 8
    assert "not dropped" in capsys.readouterr().out


def test_builtin_pools_never_overlap_what_forgetting_core_scores():
    """The reserved rows of every dev-only task are out of its pool: 0 overlap with the suite at limit 100."""
    from tunebench.benchmarks.tasks import benchmark_sets, resolve_tasks
    from tunebench.data.sources import input_texts
    from tunebench.data.templates import builtin_tasks
    from tunebench.pipeline import task_pool as pool

    tasks, limit = resolve_tasks(suite_names=["forgetting-core"])
    index = contam.index_of(benchmark_sets([t for t in tasks if not t.name.startswith("bigbench/")], limit), 13, 4)
    for name in ("sst2", "boolq", "rte", "cb", "mrpc", "cola", "wic"):
        task = builtin_tasks()[name]
        p = pool(task)
        hits = [r["_id"] for r in p.train if any(index.find(t) for t in input_texts(task, r))]
        assert hits == [], (name, hits[:3])
    # and what was reserved is really gone: SST-2's first 100 dev rows are not in its pool
    sst2 = pool(builtin_tasks()["sst2"])
    assert min(int(r["_id"].split("/")[1]) for r in sst2.train) == 101


def test_cli_contamination_against_a_benchmark(tmp_path, capsys):
    d = tmp_path / "prepared"
    d.mkdir()
    rows = [{"id": "a", "prompt": "Review: unflinchingly bleak and desperate\nPositive?", "completion": "negative"},
            {"id": "b", "prompt": "Review: a fine film\nPositive?", "completion": "positive"}]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["contamination", "--data", str(d), "--task", "glue/sst2", "--limit", "5", "--drop"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: contamination: 1 of 2" in out and 'a <-> glue/sst2 #1: "unflinchingly bleak and desperate"' in out
    assert [json.loads(line)["id"] for line in (d / "train.jsonl").read_text().splitlines()] == ["b"]
    assert json.loads((d / "contamination.json").read_text())["dropped"] == ["a"]
    assert main(["contamination", "--data", str(d)]) == 2
    assert "nothing to check against" in capsys.readouterr().err
