"""`bench --output-format lm-eval` against what lm-evaluation-harness itself writes.

lm-eval 0.4.13 runs for real on the tiny model: the multiple-choice task the way bench/w3_score.py
hands tunebench's rendered examples to it (`lm_eval_task_yaml`), and a generation task; its
EvaluationTracker saves them as lm-eval's own CLI does (`--output_path --log_samples`). tunebench's
files are then checked against those key by key, read with lm-eval's own readers, and on the
shared multiple-choice examples compared value by value (log-likelihoods, accuracies, hashes).
"""
import json
import sys
from dataclasses import fields
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from w3_score import lm_eval_task_yaml  # noqa: E402

from tunebench.cli import main  # noqa: E402

TASKS = ["superglue/copa", "bigbench/implicatures", "bigbench/object_counting"]
LIMIT = 3


def _gen_task_yaml(name: str, data_file: Path) -> str:
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data_file}\n"
            "test_split: test\noutput_type: generate_until\ndoc_to_text: context\ndoc_to_target: target\n"
            "generation_kwargs:\n  until: []\n  max_gen_toks: 4\n  do_sample: false\nmetric_list:\n  - metric: exact_match\n")


@pytest.fixture(scope="module")
def both(tiny_llama, tmp_path_factory):
    """(tunebench's lm-eval folder, its bench run, lm-eval's own output folder)."""
    out = tmp_path_factory.mktemp("bench") / "run"
    argv = ["bench", "--model", str(tiny_llama), "--limit", str(LIMIT), "--precision", "fp32", "--max-new-tokens", "4",
            "--output-format", "lm-eval", "--out", str(out)]
    for t in TASKS:
        argv += ["--task", t]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]

    # lm-eval on the same multiple-choice examples (as w3_score.py feeds it) and on a generation task
    work = tmp_path_factory.mktemp("lm-eval-tasks")
    copa = [r for r in rows if r["task"] == "superglue/copa"]
    (work / "mc.jsonl").write_text("".join(json.dumps({"context": r["context"], "choices": r["choices"], "gold": r["gold"]})
                                           + "\n" for r in copa))
    (work / "le_mc.yaml").write_text(lm_eval_task_yaml("le_mc", work / "mc.jsonl"))
    counting = [r for r in rows if r["task"] == "bigbench/object_counting"]
    (work / "gen.jsonl").write_text("".join(json.dumps({"context": r["context"], "target": r["targets"][0]}) + "\n"
                                            for r in counting))
    (work / "le_gen.yaml").write_text(_gen_task_yaml("le_gen", work / "gen.jsonl"))
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    reference = tmp_path_factory.mktemp("lm-eval-out")
    tracker = EvaluationTracker(output_path=str(reference))
    results = simple_evaluate(model="hf", model_args=f"pretrained={tiny_llama},dtype=float32", device="cpu", batch_size=4,
                              tasks=["le_mc", "le_gen"], task_manager=TaskManager(include_path=str(work), include_defaults=False),
                              log_samples=True, num_fewshot=0, evaluation_tracker=tracker)
    # what lm-eval's CLI does with them (lm_eval/_cli/run.py)
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return out / "lm-eval", out, reference


def _read(folder: Path) -> tuple[dict, dict[str, list[dict]], list[Path]]:
    (model_dir,) = [p for p in folder.iterdir() if p.is_dir()]  # one folder per model, as lm-eval's tracker makes
    files = sorted(model_dir.iterdir())
    (res,) = [p for p in files if p.name.startswith("results_")]
    samples = {}
    for p in files:
        if p.name.startswith("samples_"):
            from lm_eval.utils import get_file_task_name

            samples[get_file_task_name(p.name)] = [json.loads(line) for line in p.read_text().splitlines()]
    return json.loads(res.read_text()), samples, files


def test_files_are_laid_out_as_lm_eval_lays_them_out(both, tiny_llama):
    from lm_eval.utils import (
        get_file_datetime,
        get_results_filenames,
        get_sample_results_filenames,
        sanitize_model_name,
    )

    ours, _, theirs = both
    for folder, tasks in ((ours, {"superglue_copa", "bigbench_implicatures", "bigbench_object_counting"}),
                          (theirs, {"le_mc", "le_gen"})):
        results, samples, files = _read(folder)
        names = [f"{p.parent.name}/{p.name}" for p in files]  # as lm-eval lists a results repository's files
        assert len(get_results_filenames(names)) == 1 and len(get_sample_results_filenames(names)) == len(tasks)
        assert len({get_file_datetime(n).removesuffix(".json") for n in names}) == 1  # one run, one time stamp
        assert set(samples) == set(results["results"]) == set(results["configs"]) == tasks
    results, _, files = _read(ours)
    assert files[0].parent.name == results["model_name_sanitized"] == sanitize_model_name(str(tiny_llama))
    assert results["model_name"] == str(tiny_llama)


def test_every_key_lm_eval_writes_is_there(both):
    from lm_eval.config.task import TaskConfig

    ours, _, theirs = both
    mine, my_samples, _ = _read(ours)
    ref, ref_samples, _ = _read(theirs)
    assert set(mine) == set(ref)
    assert set(mine["config"]) == set(ref["config"])
    kinds = {"superglue_copa": "le_mc", "bigbench_implicatures": "le_mc", "bigbench_object_counting": "le_gen"}
    task_config_fields = {f.name for f in fields(TaskConfig)}
    for task, like in kinds.items():
        for key in ("versions", "n-shot", "higher_is_better", "n-samples", "task_hashes"):
            assert task in mine[key], (key, task)
        assert set(mine["n-samples"][task]) == set(ref["n-samples"][like])
        # the fixed keys of a task's entry, then "metric,filter" and "metric_stderr,filter" pairs
        entry = mine["results"][task]
        assert {"name", "alias", "sample_len"} <= set(entry) and {"name", "alias", "sample_len"} <= set(ref["results"][like])
        metrics = {k.split(",")[0] for k in entry if "," in k}
        assert all(f"{m.removesuffix('_stderr')},none" in entry for m in metrics)
        # a TaskConfig as lm-eval dumps it (None fields left out): tunebench reads its own files, so no dataset_kwargs
        assert set(mine["configs"][task]) == set(ref["configs"][like]) - {"dataset_kwargs"}, task
        assert set(mine["configs"][task]) <= task_config_fields
        assert set(mine["configs"][task]["fewshot_config"]) == set(ref["configs"][like]["fewshot_config"])
        # every sample line has the keys of lm-eval's line for the same output type, and its metrics' values
        mine_line, ref_line = my_samples[task][0], ref_samples[like][0]
        fixed = set(ref_line) - set(ref_line["metrics"])
        assert set(mine_line) - set(mine_line["metrics"]) == fixed, task
        assert set(mine_line["metrics"]) <= {k.split(",")[0] for k in entry}
        assert set(mine_line["arguments"]["gen_args_0"]) == set(ref_line["arguments"]["gen_args_0"])
        assert _shape(mine_line["resps"]) == _shape(ref_line["resps"]) and \
            _shape(mine_line["filtered_resps"]) == _shape(ref_line["filtered_resps"])
    # the same output types, the same metric names: whole lines alike
    assert set(my_samples["superglue_copa"][0]) == set(ref_samples["le_mc"][0])
    assert set(my_samples["bigbench_object_counting"][0]) == set(ref_samples["le_gen"][0])
    assert set(mine["results"]["superglue_copa"]) == set(ref["results"]["le_mc"])


def _shape(x):
    """Nesting of lists down to the leaves, leaves by type: what a reader indexes into."""
    return [_shape(v) for v in x[:1]] if isinstance(x, list) else type(x).__name__


def test_values_agree_with_the_run_and_with_lm_eval_on_the_same_examples(both):
    ours, run, theirs = both
    mine, my_samples, _ = _read(ours)
    ref, ref_samples, _ = _read(theirs)
    tb = {t["name"]: t for t in json.loads((run / "results.json").read_text())["tasks"]}
    for task, name in (("superglue_copa", "superglue/copa"), ("bigbench_implicatures", "bigbench/implicatures"),
                       ("bigbench_object_counting", "bigbench/object_counting")):
        entry = mine["results"][task]
        assert entry["alias"] == name and entry["sample_len"] == LIMIT == mine["n-samples"][task]["effective"]
        for metric, value in tb[name]["scores"].items():
            assert entry[{"accuracy": "acc", "accuracy_norm": "acc_norm", "exact_str_match": "exact_match"}.get(metric, metric)
                         + ",none"] == value
    # copa: the examples lm-eval scored are tunebench's, so lm-eval's lines and tunebench's say the same
    a, b = my_samples["superglue_copa"], sorted(ref_samples["le_mc"], key=lambda s: s["doc_id"])
    assert [s["doc"] for s in a] == [s["doc"] for s in b]
    for key in ("doc_hash", "prompt_hash", "target_hash", "target", "arguments", "acc", "acc_norm"):
        assert [s[key] for s in a] == [s[key] for s in b], key
    assert mine["task_hashes"]["superglue_copa"] == ref["task_hashes"]["le_mc"]
    for x, y in zip(a, b):
        assert [float(r[0]) for r in x["filtered_resps"]] == pytest.approx([float(r[0]) for r in y["filtered_resps"]], abs=1e-4)
    assert mine["results"]["superglue_copa"]["acc,none"] == ref["results"]["le_mc"]["acc,none"]
    assert mine["results"]["superglue_copa"]["acc_stderr,none"] == pytest.approx(ref["results"]["le_mc"]["acc_stderr,none"])


def test_lm_eval_prints_tunebench_results(both):
    """lm-eval's own table maker reads tunebench's results file."""
    from lm_eval.utils import make_table

    mine, _, _ = _read(both[0])
    table = make_table(mine)
    for alias in ("superglue/copa", "bigbench/implicatures", "bigbench/object_counting"):
        assert alias in table


def test_a_second_write_replaces_the_first(both, tiny_llama):
    """Running the bench again (every task kept) rewrites the lm-eval files: one results file, not two."""
    ours, run, _ = both
    before = sorted(p.name for p in ours.glob("*/*"))
    argv = ["bench", "--model", str(tiny_llama), "--limit", str(LIMIT), "--precision", "fp32", "--max-new-tokens", "4",
            "--output-format", "lm-eval", "--out", str(run)] + [x for t in TASKS for x in ("--task", t)]
    assert main(argv) == 0
    after = sorted(p.name for p in ours.glob("*/*"))
    assert len(after) == len(before) == 1 + len(TASKS) and after != before
