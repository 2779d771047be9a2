"""The built-in task library over the real data, and the validation of a user's task files."""
import json
import re

import pytest

from tunebench.cli import main
from tunebench.data.sources import input_texts
from tunebench.data.templates import all_tasks, builtin_tasks, load_task_file
from tunebench.errors import UserError
from tunebench.pipeline import task_pool as pool

SOURCED = sorted(name for name, t in builtin_tasks().items() if t.data is not None)
EVERY_TEMPLATE = [(name, t.name) for name in SOURCED for t in builtin_tasks()[name].templates]


def test_the_library_covers_the_shared_data():
    assert {"dialogsum", "samsum", "amazon_reviews", "sst2", "rte", "cb", "mrpc", "boolq"} <= set(SOURCED)
    assert len(SOURCED) >= 9
    for name in SOURCED:
        task = builtin_tasks()[name]
        assert len(task.templates) >= 3, name
        assert any(t.inverted for t in task.templates), f"{name}: no template turns the task around"
        assert task.forward, f"{name}: no template does the task as declared"


@pytest.mark.parametrize("task_name,template", EVERY_TEMPLATE, ids=[f"{a}/{b}" for a, b in EVERY_TEMPLATE])
def test_every_builtin_template_renders_a_real_record(task_name, template):
    task = builtin_tasks()[task_name]
    record = pool(task).train[0]  # a record of the training pool, read from ../shared/data
    t = task.template(template)
    prompt, target = t.render(record), t.render_target(record)
    assert prompt.strip() and target.strip() and "{{" not in prompt + target and "{%" not in prompt + target
    # the record's own text reaches the model: some input is in the prompt, the rest (inverted) in the target
    assert any(text in prompt or text in target for text in input_texts(task, record))
    if not t.inverted and t.target == task.target:
        assert target == task.render_target(record)


def test_labels_are_verbalized_through_the_label_map():
    answers = {name: {r["answer"] for r in pool(builtin_tasks()[name]).train}
               for name in ("sst2", "rte", "cb", "mrpc", "boolq", "cola", "qnli", "wic")}
    assert answers["sst2"] == {"negative", "positive"}
    assert answers["cb"] == {"yes", "no", "it's impossible to say"}
    assert answers["boolq"] == answers["rte"] == answers["mrpc"] == answers["qnli"] == answers["wic"] == {"yes", "no"}
    assert answers["cola"] == {"acceptable", "unacceptable"}
    stars = {r["stars"] for r in pool(builtin_tasks()["amazon_reviews"]).train}
    assert stars == {"1", "2", "3", "4", "5"}


def test_pools_read_train_files_only_and_hold_out_validation():
    ds = pool(builtin_tasks()["dialogsum"])
    assert all(r["_id"].startswith("dialogsum/train_") for r in ds.train) and len(ds.train) == 12460
    assert all(r["_id"].startswith("dialogsum/dev_") for r in ds.validation)
    assert "test" not in " ".join(ds.files.values())
    sam = pool(builtin_tasks()["samsum"])
    assert sam.skipped == {"empty input field": 1} and "\r" not in sam.train[0]["dialogue"]
    sst2 = pool(builtin_tasks()["sst2"])
    assert len(sst2.validation) == 50 and not {r["_id"] for r in sst2.validation} & {r["_id"] for r in sst2.train}
    boolq = pool(builtin_tasks()["boolq"])
    assert any("overlap with the reserved rows" in k for k in boolq.skipped)  # later questions on a scored passage


TASK = """\
task: my_task
description: A user's task.
inputs: [text]
target: "{{ label }}"
source:
  train: ./rows.jsonl
  validation: {holdout: 2}
  fields: {text: body}
  label: {column: y, as: label, map: {"1": good, "0": bad}}
templates:
  - name: judge
    prompt: "{{ text }}\\nGood or bad?"
  - name: write
    prompt: "Write a {{ label }} sentence."
    target: "{{ text }}"
    inverted: true
"""


@pytest.mark.parametrize("old,new,expected", [
    ("description:", "descripton:", r"t\.yaml:2: descripton: unknown key \(did you mean 'description'\?\)"),
    ("    inverted: true", "    invert: true", r"t\.yaml:16: templates\[1\]\.invert: unknown key \(did you mean 'inverted'\?\)"),
    ('    target: "{{ text }}"', '    target: "{{ txt }}"', r"t\.yaml:15: templates\[1\]\.target: unknown variable 'txt' \(did you mean 'text'\?\)"),
    ("Good or bad?", "{{ secret }}", r"t\.yaml:12: templates\[0\]\.prompt: unknown variable 'secret' \(declared: label, text\)"),
    ("  - name: write", "  - name: judge", r"t\.yaml:13: templates\[1\]\.name: duplicate template name 'judge'"),
    ("  fields: {text: body}", "  fields: [body]", r"t\.yaml:8: source\.fields: a mapping of template variable -> column name"),
    ("map: {", "mapping: {", r"t\.yaml:9: source\.label: needs column, as \(a variable name\) and map"),
    ("  validation: {holdout: 2}", "  validation: {holdout: 0}", r"t\.yaml:7: source\.validation: a file path or"),
    ("  validation: {holdout: 2}", "  test: ./rows.jsonl", r"t\.yaml:7: source\.test: the test file is for evaluation only"),
    ("  fields: {text: body}", "  fields: {other: body}", r"t\.yaml:3: inputs: input 'text' has no column in source\.fields"),
    ("\\nGood", "{% if %}", r"t\.yaml(:\d+)?: .*template syntax error"),
])
def test_user_task_file_errors_are_one_line_with_file_line_and_key(tmp_path, old, new, expected):
    f = tmp_path / "t.yaml"
    assert old in TASK
    f.write_text(TASK.replace(old, new))
    with pytest.raises(UserError) as e:
        load_task_file(f)
    assert "\n" not in str(e.value) and re.search(expected, str(e.value)), str(e.value)


def _user_task(tmp_path):
    rows = [{"body": f"sentence number {i} is here", "y": str(i % 2)} for i in range(12)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(TASK)
    return tmp_path / "t.yaml"


def test_user_task_joins_a_mixture_from_the_cli(tmp_path, capsys):
    f = _user_task(tmp_path)
    assert load_task_file(f).data.base == str(tmp_path)
    with pytest.raises(UserError, match="already defined"):
        all_tasks([str(f), str(f)])
    out = tmp_path / "prep"
    assert main(["prepare", "--out", str(out), "--test-limit", "2", "--mixture-tasks", "my_task",
                 "--mixture-tasks", "{task: sst2, weight: 2}", "--mixture-task-files", str(f), "--mixture-total", "12",
                 "--mixture-cap", "10", "--mixture-seed", "5"]) == 0
    m = json.loads((out / "mixture.json").read_text())
    # my_task: 10 usable rows (2 held out), sst2 capped at 10 and weighted 2 -> 4 and 8
    assert {t["task"]: t["examples"] for t in m["tasks"]} == {"my_task": 4, "sst2": 8}
    assert {t["task"]: t["validation"] for t in m["tasks"]} == {"my_task": 2, "sst2": 8}
    assert "mixture: 12 training examples" in capsys.readouterr().out
    assert main(["prepare", "--out", str(out), "--mixture-tasks", "my_tsk", "--mixture-task-files", str(f)]) == 2
    assert "unknown task 'my_tsk' (did you mean 'my_task'?)" in capsys.readouterr().err


def test_templates_commands_list_and_render_real_records(tmp_path, capsys):
    assert main(["templates", "list"]) == 0
    out = capsys.readouterr().out
    for name in SOURCED:
        assert re.search(rf"^{name}\s+\d+\s+\d+\s+\S", out, re.M), name
    assert "glue/SST-2/dev.tsv" in out and "never trains on the first 100 of glue/sst2" in out
    assert main(["templates", "show", "sst2", "--template", "sentiment"]) == 0
    out = capsys.readouterr().out
    assert "it 's a charming and often affecting journey ." in out and "--- target ---\npositive" in out
    assert main(["templates", "show", "dialogsum", "--index", "1", "--shots", "1"]) == 0
    out = capsys.readouterr().out
    assert "record dialogsum/train_1" in out and "# dialogsum/write_dialogue (inverted)" in out and "(1-shot)" in out
    f = _user_task(tmp_path)
    assert main(["templates", "show", "my_task", "--task-file", str(f)]) == 0
    assert "sentence number 0 is here\nGood or bad?" in capsys.readouterr().out
    assert main(["templates", "list", "--task-file", str(f)]) == 0
    assert re.search(r"^my_task\s+2\s+1\s+\./rows\.jsonl", capsys.readouterr().out, re.M)
