"""The multi-task recipe end to end on the real default model, with tiny limits (about a minute)."""
import json

import pytest
from conftest import REPO

from tunebench.cli import main

pytestmark = pytest.mark.e2e


def test_multitask_recipe_end_to_end(tmp_path, capsys):
    out = tmp_path / "multitask"
    argv = ["run", str(REPO / "recipes" / "multitask-lora.yaml"), "--set", f"out={out}",
            "--set", "mixture.total=16", "--set", "mixture.validation_per_task=1", "--set", "data.test_limit=4",
            "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "evaluate.max_new_tokens=24",
            "--set", "forgetting.suite=[]", "--set", "forgetting.task=[glue/sst2, superglue/boolq]",
            "--set", "forgetting.limit=5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "data" / "mixture.json").read_text())
    train = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert m["totals"]["examples"] == len(train) and sum(t["planned"] for t in m["tasks"]) == 16
    assert len(m["tasks"]) == 11 and "mixture: " in printed
    c = json.loads((out / "data" / "contamination.json").read_text())
    assert set(c["eval_sets"]) == {"dialogsum/test", "glue/sst2", "superglue/boolq"}
    assert c["eval_sets"]["glue/sst2"]["overlapping"] == 0 and c["eval_sets"]["superglue/boolq"]["overlapping"] == 0
    assert "contamination: " in printed
    assert json.loads((out / "tuned" / "metrics.json").read_text())["n"] == 4
    assert [r["task"] for r in json.loads((out / "forgetting.json").read_text())["tasks"]] == ["glue/sst2", "superglue/boolq"]
    log = [json.loads(line) for line in (out / "train" / "log.jsonl").read_text().splitlines()]
    summary = json.loads((out / "train" / "run.json").read_text())["summary"]
    validation = (out / "data" / "validation.jsonl").read_text().splitlines()
    # every example of the mixture is trained on or counted as over-long; one validation example per
    # task, scored at the end of training (the value itself is pinned by the demo recipe's e2e test)
    assert summary["train_examples"] + summary["skipped_overlong"] == len(train)
    assert summary["validation_examples"] + summary["validation_skipped_overlong"] == len(validation) == len(m["tasks"])
    assert [r["step"] for r in log] == [1, 2] and summary["final_val_loss"] == log[-1]["val_loss"] == summary["best_val_loss"]
    # compared with itself as a second run: one base column and two tuned ones from the same files
    assert main(["compare", str(out), str(out), "--out", str(tmp_path)]) == 0
    cmp = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["name"] for r in cmp["summarization"]] == ["base", "multitask#1", "multitask#2"]
