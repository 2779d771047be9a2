"""A recipe checked whole before any work (`run --check`), and the data found from any directory."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunebench.cli import main

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TUNEBENCH_DATA", REPO.parent / "shared" / "data"))

FIVE_MISTAKES = """\
name: five-mistakes
out: {here}/notes.txt/run
model:
  model: smollm3-135m-instruct
data:
  dataset: {here}/no_such_records.jsonl
  task: prompt_completion
train:
  report_to: [tensorboard, wandb]
forgetting:
  suite: [forgeting-core]
"""


def test_run_check_reports_five_mistakes_at_once_without_loading_a_model(tmp_path, capsys, monkeypatch):
    import transformers

    from tunebench import models

    def no_model(*a, **k):
        raise AssertionError("run --check loaded a model")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoModelForSeq2SeqLM):
        monkeypatch.setattr(cls, "from_pretrained", no_model)
    monkeypatch.setattr(models, "load_model", no_model)
    monkeypatch.setattr(models, "_materialise_smollm2", no_model)
    monkeypatch.setitem(models.REGISTRY, "smollm2-135m-instruct", no_model)
    (tmp_path / "notes.txt").write_text("a file where the recipe wants a folder\n")
    recipe = tmp_path / "five.yaml"
    recipe.write_text(FIVE_MISTAKES.format(here=tmp_path))

    t0 = time.perf_counter()
    code = main(["run", str(recipe), "--check"])
    seconds = time.perf_counter() - t0
    lines = capsys.readouterr().err.splitlines()
    assert code == 2
    expected = [  # in recipe order, each with file:line and key
        r"five\.yaml:2: out: .*notes\.txt/run: cannot create output directory \(.*notes\.txt is a file\)",
        r"five\.yaml:4: model\.model: unknown model 'smollm3-135m-instruct' \(did you mean 'smollm2-135m-instruct'\?\)",
        r"five\.yaml:6: data\.dataset: .*no_such_records\.jsonl: no such file or directory",
        r"five\.yaml:9: train\.report_to\[1\]: tracker 'wandb' is not installed",
        r"five\.yaml:11: forgetting\.suite\[0\]: unknown suite 'forgeting-core' \(did you mean 'forgetting-core'\?\)",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected):
        assert line.startswith("tunebench: error: ") and re.search(pattern, line), (line, pattern)
    assert seconds < 10, f"run --check took {seconds:.1f} s"  # the bound; about 3 s here
    assert not (tmp_path / "notes.txt").is_dir()


def test_schema_mistakes_and_the_other_checks_come_together(tmp_path, capsys):
    """A wrong value in one key does not hide a missing tracker in the same section."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("out: {}\ntrain:\n  lr: -1\n  report_to: [wandb]\n  batch_size: 0\n".format(tmp_path / "o"))
    assert main(["run", str(recipe), "--check"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [re.search(r"r\.yaml:(\d+): (\S+):", x).groups() for x in lines] == [
        ("3", "train.lr"), ("4", "train.report_to[0]"), ("5", "train.batch_size")]


def test_run_check_prints_the_plan(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["run", str(REPO / "recipes" / "dialogsum-lora.yaml"), "--check", "--set", f"out={out}"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "no problems found" in text
    assert re.search(r"1/7 prepare +-> .*demo/data", text)
    assert "train 600 of 12460, validation 48 of 500, test 500" in text
    assert "500 test examples, batch 64" in text
    assert "600 examples x 1 epoch(s), batch 8x1: 75 steps" in text
    assert re.search(r"12 tasks, \d+ examples per model", text)
    assert f"{out}/report.html" in text
    assert text.count("; runs") == 4  # nothing done yet: every resumable stage runs
    assert not out.exists()


def test_the_plan_says_what_is_skipped_and_resumed(tmp_path, capsys, tiny_llama):
    """After a real prepare and a killed generation, the plan says prepare is skipped and the base
    evaluation resumes from its journal."""
    from tunebench.config import load_recipe
    from tunebench.io.runs import Journal
    from tunebench.pipeline import prepare_stage, recipe_stages

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"out: {tmp_path / 'run'}\nmodel:\n  model: {tiny_llama}\n"
                           "data:\n  train_limit: 8\n  validation_limit: 2\n  test_limit: 4\n"
                           "contamination:\n  enabled: false\n")
    recipe = load_recipe(recipe_file)
    prepare_stage(recipe.data, tmp_path / "run" / "data", None, recipe.contamination, None)
    base_dir, base_cfg = recipe_stages(recipe)["base"]
    base_dir.mkdir(parents=True)
    Journal(base_dir / "predictions.partial.jsonl", {"x": 1}).append([{"key": "0", "prediction": "p"}])
    assert main(["run", str(recipe_file), "--check"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"train 8 of \d+, validation 2 of \d+, test 4 of \d+; complete with these settings: skipped", text)
    assert "resumes: 1 predictions already journaled" in text


# ---------------------------------------------------------------------------- the data from any directory

def _commands(tiny, prepared, out, recipe):
    """Every command that reads the data root, with arguments that make it cheap."""
    return {
        "run --check": ["run", str(recipe), "--check", "--set", f"out={out}"],
        "prepare": ["prepare", "--dataset", "dialogsum", "--train-limit", "4", "--validation-limit", "2",
                    "--test-limit", "2", "--out", str(out)],
        "bench": ["bench", "--model", str(tiny), "--task", "mmlu/anatomy", "--limit", "2", "--precision", "fp32",
                  "--out", str(out)],
        "bench --list": ["bench", "--list"],
        "templates show": ["templates", "show", "dialogsum"],
        "contamination": ["contamination", "--data", str(prepared), "--task", "mmlu/anatomy", "--limit", "5",
                          "--out", str(out)],
    }


@pytest.mark.parametrize("command", ["run --check", "prepare", "bench", "bench --list", "templates show", "contamination"])
def test_every_command_finds_the_data_from_another_directory(command, tmp_path, monkeypatch, capsys, tiny_llama, prepared):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("TUNEBENCH_DATA", raising=False)
    recipe = tmp_path / "demo.yaml"  # the demo's recipe, away from the repository (the search starts from it too)
    recipe.write_text((REPO / "recipes" / "dialogsum-lora.yaml").read_text())
    argv = _commands(tiny_llama, prepared, tmp_path / "out", recipe)[command]

    assert main(argv) == 2  # nothing to find above a temporary folder: one line says how to point at it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no data root" in err[0] and "--data-root DIR" in err[0], err

    assert main(argv[:1] + ["--data-root", str(DATA)] + argv[1:]) == 0
    assert main(["--data-root", str(DATA)] + argv) == 0  # before the command name too
    monkeypatch.setenv("TUNEBENCH_DATA", str(DATA))
    assert main(argv) == 0


def test_the_data_is_found_from_inside_the_repository(monkeypatch, capsys):
    if not (REPO.parent / "shared" / "data").is_dir():
        pytest.skip("the data is not beside the repository here")
    monkeypatch.chdir(REPO / "src" / "tunebench")
    monkeypatch.delenv("TUNEBENCH_DATA", raising=False)
    assert main(["templates", "show", "dialogsum/two_sentences"]) == 0
    assert "dialogsum.train.jsonl" in capsys.readouterr().out


def test_a_recipes_data_root_is_relative_to_the_recipe(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "data").symlink_to(DATA)
    (folder / "r.yaml").write_text(f"out: {tmp_path / 'run'}\ndata_root: data\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNEBENCH_DATA", raising=False)
    assert main(["run", str(folder / "r.yaml"), "--check"]) == 0
    assert f"data root  {folder / 'data'} (from " in capsys.readouterr().out


def test_library_chatter_stays_out_of_the_one_line(tmp_path):
    """A Hub dataset id with no network: huggingface_hub retries five times and logs each retry to
    stderr (`--verbose` shows them); the user sees tunebench's one line."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(PYTHONPATH=str(REPO / "src"), TUNEBENCH_ALLOCATOR="system")
    argv = [sys.executable, "-m", "tunebench.cli", "prepare", "--dataset", "tunebench-test/no-such-dataset",
            "--out", str(tmp_path / "o")]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith("tunebench: error: tunebench-test/no-such-dataset: the Hub dataset could not be loaded")
    assert not (tmp_path / "o").exists()
