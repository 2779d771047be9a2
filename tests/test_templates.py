import pytest
from conftest import dialogsum_rows

from tunebench.data.templates import builtin_tasks, get_task, load_task_file
from tunebench.errors import UserError


def test_dialogsum_has_five_or_more_flan_templates_rendering_a_real_record():
    task = get_task("dialogsum")
    assert len(task.templates) >= 5
    rec = dialogsum_rows("dev", 1)[0]
    for t in task.templates:
        text = t.render(rec) + "\n" + t.render_target(rec)  # inverted templates ask for the dialogue
        assert rec["dialogue"] in text and "{{" not in text
    assert task.render_target(rec) == rec["summary"]
    assert len(task.forward) == 7 and all(t.render_target(rec) == rec["summary"] for t in task.forward)
    assert {t.name for t in task.templates if t.inverted} == {"write_dialogue", "dialogue_from_topic"}


def test_sandbox_refuses_attribute_escapes(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("task: evil\ninputs: [x]\ntarget: '{{ y }}'\ntemplates:\n"
                 "  - name: t\n    prompt: \"{{ x.__class__.__mro__[1].__subclasses__() }}\"\n")
    with pytest.raises(UserError, match=r"reaches for '__\w+__': not allowed in the template sandbox"):
        load_task_file(f)


def test_unknown_variable_is_refused_at_load_and_a_missing_field_at_render(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("task: t\ninputs: [x]\ntarget: '{{ y }}'\ntemplates:\n  - name: t\n    prompt: '{{ x }} {{ typo }}'\n")
    with pytest.raises(UserError, match=r"t\.yaml:6: templates\[0\]\.prompt: unknown variable 'typo'"):
        load_task_file(f)
    f.write_text("task: t\ninputs: [x]\ntarget: '{{ y }}'\ntemplates:\n  - name: t\n    prompt: '{{ x }}'\n")
    with pytest.raises(UserError, match="'x' is undefined"):
        load_task_file(f).templates[0].render({"y": "b"})


def test_bad_task_files(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("task: t\ninputs: [x]\ntemplates: []\n")
    with pytest.raises(UserError, match="missing key 'target'"):
        load_task_file(f)
    f.write_text("task: t\ninputs: [x]\ntarget: a\ntemplates:\n  - name: t\n    prompt: '{{ x '\n")
    with pytest.raises(UserError, match="syntax error"):
        load_task_file(f)


def test_unknown_template_suggests_a_name():
    with pytest.raises(UserError, match="did you mean 'briefly_summarize'"):
        get_task("dialogsum").template("briefly_sumarize")
    assert "dialogsum" in builtin_tasks()
