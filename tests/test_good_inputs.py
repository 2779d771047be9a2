"""The CLI on a corpus of good inputs saved the way real tools save them (tests/good_inputs/cases.yaml).

Each case runs `tunebench.cli.main` in-process and must exit 0, print nothing on stderr that looks
like an error, leave the corpus folder as it was, and give what its case says: prepared counts,
prompts and completions equal code point for code point, a training run's skip counts, a
benchmark's tasks and examples.
"""
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import materialise

from tunebench.cli import main

HERE = Path(__file__).resolve().parent / "good_inputs"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))
LOOKS_LIKE_AN_ERROR = re.compile(r"(?i)\b(error|traceback|exception|warning)\b")
SPLITS = ("train", "validation", "test")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """{suites}: the BIG-bench container of bigbench_suite_bom_crlf.json, written out byte for byte."""
    return materialise(HERE / "bigbench_suite_bom_crlf.json", tmp_path_factory.mktemp("suites")).parent


def _argv(args, tmp_path, tiny_llama, prepared, suites=None):
    subs = {"here": str(HERE), "out": str(tmp_path / "out"), "tmp": str(tmp_path / "tmp"), "tiny": str(tiny_llama),
            "prepared": str(prepared), "suites": str(suites)}
    return [re.sub(r"\{(\w+)\}", lambda m: subs[m.group(1)], a) for a in args]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own exit
        code = e.code
    out, err = capsys.readouterr()
    assert code == 0, f"{argv[0]} exited {code}: {err}"
    assert not LOOKS_LIKE_AN_ERROR.search(err), err
    return out


def test_the_corpus():
    assert len(CASES) >= 15
    assert len({c["name"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_good_input_works(case, tmp_path, tiny_llama, prepared, suites, capsys):
    before = _files(HERE)
    for args in case.get("before", []):
        _run(_argv(args, tmp_path, tiny_llama, prepared, suites), capsys)
    stdout = _run(_argv(case["args"], tmp_path, tiny_llama, prepared, suites), capsys)
    out = tmp_path / "out"
    for pattern in case.get("stdout", []):
        assert re.search(pattern, stdout, re.MULTILINE), f"{pattern!r} not in:\n{stdout}"
    if "counts" in case:
        rows = {s: _jsonl(out / f"{s}.jsonl") for s in SPLITS}
        assert {s: len(v) for s, v in rows.items()} == case["counts"]
        examples = [r for v in rows.values() for r in v]
        prompts, completions = {r["prompt"] for r in examples}, {r["completion"] for r in examples}
        for p in case.get("prompts", []):
            assert p in prompts, f"{p!r} not among the prompts {sorted(prompts)!r}"
        for c in case.get("completions", []):
            assert c in completions, f"{c!r} not among the completions {sorted(completions)!r}"
    if "summary" in case:
        summary = json.loads((out / "run.json").read_text(encoding="utf-8"))["summary"]
        assert {k: summary.get(k) for k in case["summary"]} == case["summary"]
    if "bench" in case:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        examples = _jsonl(out / "examples.jsonl")
        assert {"tasks": len(results["tasks"]), "examples": len(examples)} == case["bench"]
        contexts = [r.get("context", "") for r in examples]
        for text in case.get("contexts", []):
            assert any(text in c for c in contexts), f"{text!r} not in any context {contexts!r}"
    if "html" in case:
        page = (out / "report.html").read_text(encoding="utf-8")
        for text in case["html"]:
            assert text in page, f"{text!r} not in the report"
    assert _files(HERE) == before, "the command changed the corpus folder"


def test_recipe_with_bom_and_crlf_loads():
    from tunebench.config import load_recipe

    r = load_recipe(HERE / "recipe_bom_crlf.yaml")
    assert (r.name, r.out, r.data.dataset, r.data.task) == ("notes-fr", "runs/notes", "notes.jsonl", "prompt_completion")
    assert r.data.fields == {"prompt": "entrée_texte", "completion": "résumé"}
    assert (r.train.lr, r.train.max_length) == (1.0e-4, 256)


def test_the_files_are_byte_exact():
    """git must not have normalised line ends (tests/good_inputs/.gitattributes: * -text)."""
    assert (HERE / "bom.jsonl").read_bytes().startswith(b"\xef\xbb\xbf{")
    assert b"\r\n" in (HERE / "crlf.jsonl").read_bytes() and b"\n\n" not in (HERE / "crlf.jsonl").read_bytes()
    for name in ("crlf.csv", "crlf.tsv", "task_bom_crlf.yaml", "recipe_bom_crlf.yaml", "bigbench_bom_crlf.json"):
        raw = (HERE / name).read_bytes()
        assert raw.count(b"\r\n") == raw.count(b"\n") > 1, name
