"""examples/quickstart.py: the Python API's before/after on the real default model and real DialogSum."""
import json
import os
import subprocess
import sys

import pytest
from conftest import DATA, REPO

pytestmark = pytest.mark.e2e


def test_quickstart_runs_a_before_after_through_the_api(tmp_path):
    out = tmp_path / "quickstart"
    env = {**os.environ, "TUNEBENCH_DATA": str(DATA), "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py"), str(out)], env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731

    counts = {s: len(read(out / "data" / f"{s}.jsonl")) for s in ("train", "validation", "test")}
    assert counts == {"train": 32, "validation": 8, "test": 8} and lines[0] == f"prepared: {counts}"
    log = read(out / "train" / "log.jsonl")
    assert [row["step"] for row in log] == list(range(1, 9)) and "val_loss" in log[-1]
    assert lines[1] == f"trained: 8 steps, losses {[round(row['loss'], 3) for row in log]}"

    test_ids = [e["id"] for e in read(out / "data" / "test.jsonl")]
    metrics = {}
    for run, model in (("base", "smollm2-135m-instruct"), ("tuned", str(out / "train"))):
        assert [p["id"] for p in read(out / run / "predictions.jsonl")] == test_ids
        metrics[run] = json.loads((out / run / "metrics.json").read_text())
        assert (metrics[run]["n"], metrics[run]["model"]) == (8, model)
    assert (out / "train" / "adapter" / "adapter_model.safetensors").is_file()

    # the printed table is compare.json's, which holds both runs' metrics.json figures
    compare = json.loads((out / "compare.json").read_text())
    assert lines[2].split() == ["metric", "base", "tuned", "change", "relative_change"]
    printed = [line.split() for line in lines[3:8]]
    for row, (name, cells) in zip(compare["metrics"], ((p[0], p[1:]) for p in printed)):
        base, tuned = metrics["base"][row["metric"]], metrics["tuned"][row["metric"]]
        assert (row["base"], row["tuned"]) == (base, tuned)
        assert [name, *cells] == [row["metric"], f"{base:.4f}", f"{tuned:.4f}", f"{tuned - base:.4f}",
                                  f"{(tuned - base) / base:.4f}"]
    assert [p[0] for p in printed] == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
    assert lines[8] == f"written: {out / 'compare.md'}, {out / 'compare.json'}"
