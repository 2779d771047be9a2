"""`tunebench compare RUN RUN ...`: the base model and every tuned model of several recipe runs in one table."""
import json

from tunebench.cli import main

PREDS = [{"id": "test_0", "prompt": "Summarize: A", "references": ["a", "b"]},
         {"id": "test_1", "prompt": "Summarize: B", "references": ["c"]}]
FORMAT = {"chat_template": False, "shots": 0, "seed": 1234, "limit": 2}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, list) else "".join(json.dumps(r) + "\n" for r in obj))


def _metrics(r1):
    return {"rouge1": r1, "rouge2": r1 / 2, "rougeL": r1 * 0.8, "rougeLsum": r1 * 0.9, "bleu": r1 * 50, "n": 2,
            "model": "m", "data": "somewhere:test"}


def _bench(path, scores):
    _write(path / "results.json", {"model": "m", "format": FORMAT, "tasks": [
        {"name": t, "primary": sum(s) / len(s), "primary_metric": "accuracy", "n": len(s)} for t, s in scores.items()]})
    _write(path / "examples.jsonl", [{"task": t, "id": str(i), "score": v} for t, s in scores.items() for i, v in enumerate(s)])


def _run(root, name, tuned_r1, tuned_scores, prompts=PREDS, training=None):
    run = root / name
    for sub, r1 in (("base", 0.25), ("tuned", tuned_r1)):
        _write(run / sub / "metrics.json", _metrics(r1))
        _write(run / sub / "predictions.jsonl", [{**p, "prediction": "x"} for p in prompts])
    _bench(run / "base-bench", {"glue/sst2": [1, 0], "superglue/rte": [0, 0]})
    _bench(run / "tuned-bench", tuned_scores)
    _write(run / "forgetting.json", {"summary": f"LoRA: 0 of 2 tasks significantly worse ({name})"})
    if training:
        _write(run / "data" / "run.json", {"summary": training})
    return run


def test_three_way_table_from_the_runs_files(tmp_path, capsys):
    single = _run(tmp_path, "demo", 0.40, {"glue/sst2": [0, 0], "superglue/rte": [1, 0]},
                  training={"task": "dialogsum", "counts": {"train": 600}})
    multi = _run(tmp_path, "multitask", 0.35, {"glue/sst2": [1, 1], "superglue/rte": [1, 1]},
                 training={"task": "mixture", "counts": {"train": 999}, "mixture": {"a": 1, "b": 2}})
    assert main(["compare", str(single), str(multi), "--out", str(tmp_path)]) == 0
    c = json.loads((tmp_path / "comparison.json").read_text())
    assert [(r["name"], round(r["rouge1"], 3)) for r in c["summarization"]] == [("base", 0.25), ("demo", 0.4), ("multitask", 0.35)]
    assert c["summarization"][2]["training"] == "2-task mixture, 999 examples"
    assert c["bench_columns"] == ["base", "demo", "multitask"]
    assert c["bench"][0] == {"task": "glue/sst2", "metric": "accuracy", "n": 2, "base": 0.5, "demo": 0.0, "multitask": 1.0}
    assert c["bench_macro"] == {"base": 0.25, "demo": 0.25, "multitask": 1.0}
    md = (tmp_path / "comparison.md").read_text()
    assert "| multitask | 2-task mixture, 999 examples | 0.350 |" in md and "| **macro average** | | **0.250** |" in md
    assert "multitask: LoRA: 0 of 2 tasks significantly worse (multitask)" in capsys.readouterr().out


def test_runs_on_different_evaluation_sets_are_refused(tmp_path, capsys):
    a = _run(tmp_path, "a", 0.4, {"glue/sst2": [0, 0], "superglue/rte": [1, 0]})
    b = _run(tmp_path, "b", 0.4, {"glue/sst2": [0, 0], "superglue/rte": [1, 0]}, prompts=PREDS[:1])
    assert main(["compare", str(a), str(b)]) == 2
    assert "evaluated on different examples or prompts" in capsys.readouterr().err
