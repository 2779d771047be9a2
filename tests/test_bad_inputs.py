"""The CLI's contract on a corpus of malformed inputs (tests/bad_inputs/cases.yaml).

A user's mistake ends with one line on stderr naming the file and line or the key, exit code 2,
no traceback, and nothing left behind.
"""
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import yaml
from conftest import materialise

from tunebench.cli import main

HERE = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture(scope="module")
def run(tiny_llama, prepared, tmp_path_factory):
    """A small but real evaluation run, for the commands that read one."""
    from tunebench.config import GenerateConfig, ModelConfig
    from tunebench.pipeline import evaluate_stage

    out = tmp_path_factory.mktemp("eval-run")
    evaluate_stage(ModelConfig(model=str(tiny_llama)), GenerateConfig(limit=2, max_new_tokens=4, precision="fp32"),
                   prepared, out)
    return out


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """{suites}: the BIG-bench containers of bigbench_suites.json, written out."""
    return materialise(HERE / "bigbench_suites.json", tmp_path_factory.mktemp("suites"))


def _argv(case, tmp_path, tiny_llama, prepared, run=None, suites=None):
    return [_sub(a, tmp_path, tiny_llama, prepared, run, suites) for a in case["args"]]


def _sub(text, tmp_path, tiny_llama, prepared, run=None, suites=None):
    subs = {"here": str(HERE), "out": str(tmp_path / "out"), "tiny": str(tiny_llama), "prepared": str(prepared),
            "run": str(run), "suites": str(suites)}
    return re.sub(r"\{(\w+)\}", lambda m: subs[m.group(1)], text)


def _place(case, tmp_path, monkeypatch, *fixtures):
    """The case's working directory (`cwd: elsewhere`: a folder with no shared/data above it) and
    environment (`env`: a value, or null to unset)."""
    for key, value in case.get("env", {}).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, _sub(value, tmp_path, *fixtures))
    if case.get("cwd") == "elsewhere":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        assert not any((p / "shared" / "data").is_dir() for p in (elsewhere, *elsewhere.parents))
        monkeypatch.chdir(elsewhere)


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 80
    assert len({c["name"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_is_refused_cleanly(case, tmp_path, tiny_llama, prepared, run, suites, capsys, monkeypatch):
    if "free_bytes" in case:
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**12 - case["free_bytes"], case["free_bytes"]))
    _place(case, tmp_path, monkeypatch, tiny_llama, prepared, run)
    before = (_files(HERE), _files(tmp_path), _files(prepared), _files(run))
    try:
        code = main(_argv(case, tmp_path, tiny_llama, prepared, run, suites))
    except SystemExit as e:  # argparse's own exit
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert re.search(case["error"], lines[0]), lines[0]
    assert (_files(HERE), _files(tmp_path), _files(prepared), _files(run)) == before, "partial output left behind"


@pytest.mark.parametrize("name", ["broken JSON line", "recipe section typo", "misspelt flag"])
def test_as_a_process(name, tmp_path, tiny_llama, prepared):
    case = next(c for c in CASES if c["name"] == name)
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1] / "src"))
    r = subprocess.run([sys.executable, "-m", "tunebench.cli", *_argv(case, tmp_path, tiny_llama, prepared)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert re.search(case["error"], r.stderr)
