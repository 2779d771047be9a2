"""The CLI's contract: a user's mistake is one line on stderr and exit code 2, never a traceback."""
import subprocess
import sys

from tunebench.cli import main


def _one_line_error(capsys, argv, pattern):
    import re

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(pattern, err), err


def test_unknown_model(capsys, prepared, tmp_path):
    _one_line_error(capsys, ["evaluate", "--model", "smolm2-135m-instruct", "--data", str(prepared), "--out", str(tmp_path / "e")],
                    r"unknown model 'smolm2-135m-instruct' \(did you mean 'smollm2-135m-instruct'\?\)")


def test_missing_recipe_and_bad_recipe(capsys, tmp_path):
    _one_line_error(capsys, ["run", str(tmp_path / "nope.yaml")], r"nope\.yaml: recipe file not found")
    (tmp_path / "r.yaml").write_text("train:\n  learning_rate: 0.1\n")
    _one_line_error(capsys, ["run", str(tmp_path / "r.yaml")], r"r\.yaml:2: train\.learning_rate: unknown key")


def test_bad_flag_value(capsys, prepared, tmp_path):
    _one_line_error(capsys, ["train", "--data", str(prepared), "--out", str(tmp_path / "t"), "--lr", "-1"],
                    r"--lr: Input should be greater than 0")


def test_missing_prepared_data(capsys, tmp_path):
    _one_line_error(capsys, ["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "t"), "--model",
                             "smollm2-135m-instruct"], r"train\.jsonl: not found")


def test_bad_data_file(capsys, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"dialogue": "A: hi"}\n')
    _one_line_error(capsys, ["prepare", "--dataset", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "p")],
                    r"d\.jsonl:1: field 'summary' is missing")


def test_templates_commands(capsys):
    assert main(["templates", "list"]) == 0
    out = capsys.readouterr().out
    assert "summarize_conversation" in out and "briefly_summarize" in out
    assert main(["templates", "show", "dialogsum/two_sentences"]) == 0
    assert "in two sentences or less" in capsys.readouterr().out


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tunebench.cli", "run", str(tmp_path / "missing.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
