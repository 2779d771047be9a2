"""`tunebench study`: a 2 x 2 grid of arms on the tiny model, a few steps each; the base model
evaluated once, arms resumed, and the arm-vs-arm intervals equal to a direct bootstrap."""
import json
import shutil

import pytest
import yaml
from conftest import CHROMIUM, DIALOGSUM, REPO, assert_not_blank, render_in_chromium

from tunebench.cli import main
from tunebench.io.runs import read_jsonl
from tunebench.metrics import per_example_rouge
from tunebench.metrics.stats import bootstrap_test
from tunebench.reports.study import dominance

ARMS = ["lora-single", "lora-multi", "full-single", "full-multi"]
STAGES = ("data", "train", "tuned", "tuned-bench")

@pytest.fixture(scope="module")
def study(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    recipe = root / "base.yaml"
    recipe.write_text(yaml.safe_dump({
        "out": "ignored", "model": {"model": str(tiny_llama)},
        "data": {"path": str(DIALOGSUM), "train_limit": 8, "validation_limit": 2, "test_limit": 5},
        "train": {"max_steps": 2, "batch_size": 4, "precision": "fp32", "report_to": ["none"], "merge": False},
        "evaluate": {"max_new_tokens": 6, "precision": "fp32"}, "contamination": {"enabled": False},
        "forgetting": {"suite": [], "task": ["superglue/copa", "glue/sst2"], "limit": 4, "precision": "fp32"}}))
    spec = root / "study.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tiny", "out": str(root / "out"), "recipe": "base.yaml", "set": {"train.lr": 1e-2},
        "factors": {"method": {"lora": {}, "full": {"train.method": "full", "train.lr": 1e-3}},
                    "tasks": {"single": {}, "multi": {"mixture": {"tasks": ["dialogsum", "sst2"], "total": 8,
                                                                  "validation_per_task": 1}}}}}, sort_keys=False))
    assert main(["study", str(spec)]) == 0
    return spec, root / "out"


def _manifests(out):
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.glob("*/*/run.json")) + sorted(out.glob("*/run.json"))}


def test_base_is_evaluated_once_and_every_arm_scored_on_its_examples(study):
    _, out = study
    s = json.loads((out / "study.json").read_text())
    assert [a["name"] for a in s["arms"]] == ARMS
    base = json.loads((out / "base" / "metrics.json").read_text())
    for arm in ARMS:
        assert not (out / arm / "base").exists() and not (out / arm / "base-bench").exists()
        assert json.loads((out / arm / "tuned" / "metrics.json").read_text())["data"] == base["data"]
        assert json.loads((out / arm / "compare.json").read_text())["base_run"] == str(out / "base")
        assert json.loads((out / arm / "forgetting.json").read_text())["base_run"] == str(out / "base-bench")
    assert {json.loads((out / a / "train" / "run.json").read_text())["config"]["train"]["method"] for a in ARMS} == {"lora", "full"}
    assert json.loads((out / "lora-multi" / "data" / "run.json").read_text())["summary"]["task"] == "mixture"
    for f in ("study.md", "study.json", "pareto.png", "report.html"):
        assert (out / f).is_file(), f
    # per arm, the change from base is the change of the metrics the runs themselves wrote
    for a in s["arms"]:
        tuned = json.loads((out / a["name"] / "tuned" / "metrics.json").read_text())
        for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"):
            assert a["task"][k]["change"] == pytest.approx(tuned[k] - base[k], abs=1e-9), (a["name"], k)
        f = json.loads((out / a["name"] / "forgetting.json").read_text())
        assert a["forgetting"]["macro"]["change"] == pytest.approx(f["macro"]["delta"], abs=1e-12)
        assert a["training"]["trainable_parameters"] > 0 and a["training"]["train_wall_s"] > 0


def test_arm_vs_arm_intervals_equal_a_direct_bootstrap(study):
    _, out = study
    s = json.loads((out / "study.json").read_text())
    # the default pairs: every two arms that differ in one factor
    assert [(c["a"], c["b"]) for c in s["pairs"]] == [("lora-single", "lora-multi"), ("lora-single", "full-single"),
                                                      ("lora-multi", "full-multi"), ("full-single", "full-multi")]

    def scores(arm):
        rows = read_jsonl(out / arm / "tuned" / "predictions.jsonl")
        return per_example_rouge([r["prediction"] for r in rows], [r["references"] for r in rows])

    for c in s["pairs"]:
        a, b = scores(c["a"]), scores(c["b"])
        for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            lo, hi, p = bootstrap_test([x[k] for x in a], [x[k] for x in b], 2000)
            assert c["task"][k]["ci95"] == [lo, hi] and c["task"][k]["p_value"] == p, (c["a"], c["b"], k)
        assert c["task"]["bleu"]["a"] == pytest.approx(json.loads((out / c["a"] / "tuned" / "metrics.json").read_text())["bleu"])


def test_recommendation_agrees_with_the_pareto_computation(study):
    _, out = study
    s = json.loads((out / "study.json").read_text())
    points = {a["name"]: (a["forgetting"]["macro"]["change"], a["task"]["rougeL"]["change"]) for a in s["arms"]}
    dom = dominance(points)
    assert s["pareto"]["dominated"] == dom
    assert s["pareto"]["frontier"] == [n for n in ARMS if not dom[n]]
    text = s["recommendation"]
    assert f"{len(s['pareto']['frontier'])} of 4 arms " in text and "on the Pareto frontier" in text
    for n, by in dom.items():
        if by:
            best = max(by, key=lambda k: points[k][1])
            assert f"{n} is dominated by {best}" in text
            gap = s["pareto"]["gaps"][n]
            assert (gap["a"], gap["b"]) == (n, best)
        else:
            assert f"{n} is dominated" not in text
    md = (out / "study.md").read_text()
    assert "![Pareto plot](pareto.png)" in md and text in md
    html = (out / "report.html").read_text()
    assert "Study: which way of tuning" in html and text.split(":")[0] in html


def test_a_rerun_skips_every_stage_and_a_removed_stage_alone_is_redone(study, capsys):
    spec, out = study
    before = _manifests(out)
    assert main(["study", str(spec)]) == 0
    printed = capsys.readouterr().out
    assert _manifests(out) == before
    assert printed.count("already complete, skipped") == 3 + 4 * len(STAGES)  # shared data, base, base-bench; each arm's
    shutil.rmtree(out / "full-multi" / "tuned")
    assert main(["study", str(spec)]) == 0
    after = _manifests(out)
    assert {k for k in after if after[k] != before.get(k)} == {"full-multi/tuned/run.json"}
    assert main(["study", str(spec), "--check"]) == 0
    plan = capsys.readouterr().out
    assert plan.count("complete with these settings: skipped") == 2 + 4 * 3 and "shared by the study" in plan


def test_dominance():
    assert dominance({"a": (0.0, 0.1), "b": (-0.1, 0.1), "c": (0.1, 0.0)}) == {"a": [], "b": ["a"], "c": []}
    assert dominance({"a": (0.0, 0.1), "b": (0.0, 0.1)}) == {"a": [], "b": []}  # equal: neither dominates
    assert dominance({"a": (0.1, 0.2), "b": (0.0, 0.1), "c": (-0.1, 0.0)}) == {"a": [], "b": ["a"], "c": ["a", "b"]}
    assert dominance({"a": (None, 0.2), "b": (None, 0.1)}) == {"a": [], "b": ["a"]}  # no forgetting: task gain alone


def test_demo_study_recipe_checks(capsys):
    assert main(["study", str(REPO / "recipes" / "dialogsum-study.yaml"), "--check", "--set", "out=/tmp/never-run"]) == 0
    plan = capsys.readouterr().out
    for arm in ARMS:
        assert f"arm {arm}:" in plan
    assert "train (full)" in plan and "mixture of 11 tasks: 500 training examples" in plan


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_study_report_renders_in_headless_chromium(study, tmp_path):
    """The study's report.html as test_report renders a run's: no console error, every image drawn
    (the Pareto plot among them), not blank."""
    _, out = study
    shot = tmp_path / "pareto.png"
    errors, images = render_in_chromium(out / "report.html", shot, "img[alt^='task gain against forgetting']")
    assert errors == []
    # the Pareto plot first; then the base model's benchmark run (its reliability diagram)
    assert [alt for alt, *_ in images] == ["task gain against forgetting (Pareto plot)", "reliability diagram"]
    assert all(ok and w > 300 and h > 200 for _, ok, w, h in images)
    assert_not_blank(shot)
