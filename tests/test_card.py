"""The model card (RUN/README.md) and `tunebench push --dry-run`, on small real runs of the tiny model.

"Validates" here means what huggingface_hub checks without the network: `ModelCard.load` parses
the YAML block and `ModelCardData` turns the model-index into `EvalResult`s
(`model_index_to_eval_results`, which raises on a malformed entry). `RepoCard.validate` posts the
card to the Hub's /api/validate-yaml and is not run here (no test reaches the network).
"""
import json
import shlex

import pytest
import yaml
from conftest import DIALOGSUM, REPO

from tunebench.cli import main

TASKS = ["superglue/copa", "bigbench/object_counting"]


@pytest.fixture(scope="module")
def recipe_run(tiny_llama, tmp_path_factory):
    """The demo recipe end to end on the tiny model, its forgetting suite in lm-eval's layout too."""
    out = tmp_path_factory.mktemp("card") / "demo"
    argv = ["run", str(REPO / "recipes" / "dialogsum-lora.yaml"), "--set", f"out={out}",
            "--set", f"model.model={tiny_llama}", "--set", f"data.path={DIALOGSUM}",
            "--set", "data.train_limit=8", "--set", "data.validation_limit=2", "--set", "data.test_limit=3",
            "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "evaluate.max_new_tokens=8",
            "--set", "forgetting.suite=[]", "--set", f"forgetting.task=[{', '.join(TASKS)}]",
            "--set", "forgetting.limit=4", "--set", "forgetting.max_new_tokens=4",
            "--set", "forgetting.output_format=lm-eval"]
    assert main(argv) == 0
    return out, argv


@pytest.fixture(scope="module")
def train_run(tiny_llama, prepared, tmp_path_factory):
    """`tunebench train` alone, no merge: an adapter-only run with no results."""
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", "--data", str(prepared), "--out", str(out), "--model", str(tiny_llama), "--max-steps", "1",
                 "--batch-size", "4", "--lr", "1e-3", "--no-merge", "--report-to", "none"]) == 0
    return out


def test_recipe_card_parses_and_holds_the_runs_numbers(recipe_run):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    out, _ = recipe_run
    card = ModelCard.load(out / "train" / "README.md")
    meta = card.data.to_dict()
    compare = json.loads((out / "compare.json").read_text())
    forgetting = json.loads((out / "forgetting.json").read_text())
    recipe = json.loads((out / "recipe.json").read_text())["recipe"]
    assert meta["library_name"] == "transformers"  # the run saved a merged model: that is what push uploads
    assert "base_model" not in meta  # a local tiny model has no Hub id to cite
    assert meta["datasets"] == ["knkarthick/dialogsum"]
    assert meta["tags"] == ["tunebench", "lora", "summarization", "forgetting-suite"]
    assert card.data.model_name == recipe["name"]
    raw = yaml.safe_load((out / "train" / "README.md").read_text().split("---")[1])
    name, results = model_index_to_eval_results(raw["model-index"])
    assert name == recipe["name"] and results == card.data.eval_results
    values = {(r.task_name, r.metric_name): r.metric_value for r in results}
    assert len(values) == len(results) == 2 * (len(compare["metrics"]) + len(TASKS))
    for r in compare["metrics"]:
        assert values[("dialogsum summarization", r["metric"])] == r["tuned"]
        assert values[("dialogsum summarization", r["metric"] + " (base model, before tuning)")] == r["base"]
    summarization = [r for r in results if r.task_type == "summarization"]
    assert {(r.dataset_type, r.dataset_split) for r in summarization} == {("knkarthick/dialogsum", "test[:3]")}
    for t in forgetting["tasks"]:
        assert values[(t["task"], t["metric"])] == t["tuned"]
        assert values[(t["task"], t["metric"] + " (base model, before tuning)")] == t["base"]
    by_task = {r.task_name: r for r in results}
    assert (by_task["superglue/copa"].task_type, by_task["superglue/copa"].dataset_type,
            by_task["superglue/copa"].dataset_config) == ("multiple-choice", "aps/super_glue", "copa")
    assert by_task["bigbench/object_counting"].task_type == "text-generation"


def test_recipe_card_body(recipe_run):
    from huggingface_hub import ModelCard

    out, _ = recipe_run
    text = ModelCard.load(out / "train" / "README.md").text
    compare = json.loads((out / "compare.json").read_text())
    forgetting = json.loads((out / "forgetting.json").read_text())
    for r in compare["metrics"]:
        assert f"| {r['metric']} | {r['base']:.4f} | {r['tuned']:.4f} | {r['change']:+.4f} |" in text
    assert forgetting["summary"] in text
    for t in forgetting["tasks"]:
        assert f"| {t['task']} | {t['metric']} | {t['n']} | {t['base']:.3f} | {t['tuned']:.3f} |" in text
        assert t["direction_holm"] in text.split(f"| {t['task']} |", 1)[1].split("\n", 1)[0]
    manifest = json.loads((out / "train" / "run.json").read_text())
    for k, v in manifest["config"]["train"].items():
        assert f"| {k} | " in text, k
    assert f"| steps | {manifest['summary']['steps']} |" in text
    # the recipe as run, in the card, is the recipe that ran
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == json.loads((out / "recipe.json").read_text())["recipe"]


def test_card_rewritten_when_every_stage_is_skipped(recipe_run, capsys):
    out, argv = recipe_run
    card = out / "train" / "README.md"
    before = card.read_text()
    card.unlink()
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("already complete") == 4 and f"model card -> {card}" in printed
    assert card.read_text() == before


def test_a_malformed_model_index_is_refused(recipe_run, tmp_path):
    """What the offline validation catches: a metric without a value."""
    from huggingface_hub import ModelCard

    out, _ = recipe_run
    text = (out / "train" / "README.md").read_text()
    broken = text.replace("    - type: rouge1\n      value:", "    - type: rouge1\n      valu:", 1)
    assert broken != text
    (tmp_path / "README.md").write_text(broken)
    with pytest.raises(ValueError, match="model_index"):
        ModelCard.load(tmp_path / "README.md")


def test_card_when_training_ends(train_run, tmp_path):
    """No results yet; the training settings, and a command that reproduces exactly this stage."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(train_run / "README.md")
    meta = card.data.to_dict()
    assert "model-index" not in meta and meta["library_name"] == "peft" and meta["tags"] == ["tunebench", "lora", "summarization"]
    assert "Not measured yet" in card.text
    command = card.text.split("```bash\n", 1)[1].split("\n```", 1)[0]
    argv = shlex.split(command)
    assert argv[:2] == ["tunebench", "train"]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert main(argv[1:]) == 0
    first = json.loads((train_run / "run.json").read_text())["config"]
    again = json.loads((tmp_path / "again" / "run.json").read_text())["config"]
    assert again == first


def test_push_dry_run_lists_the_merged_model_card_and_report(recipe_run, capsys):
    out, _ = recipe_run
    capsys.readouterr()
    assert main(["push", str(out), "--repo", "someone/tiny-dialogsum", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("dry run, nothing uploaded")
    merged = sorted(p for p in (out / "train" / "merged").rglob("*") if p.is_file())
    listed = [line.split()[0] for line in lines[2:]]
    assert listed == ["README.md", *[p.name for p in merged], "report.html"]
    assert f"{len(listed)} files" in lines[1]
    assert any(str(out / "train" / "README.md") in line for line in lines)


def test_push_dry_run_of_an_adapter_run(train_run, capsys):
    from tunebench.reports.push import plan

    uploads = plan(train_run)
    adapter = sorted(p.name for p in (train_run / "adapter").iterdir() if p.name != "README.md")
    assert [u.path_in_repo for u in uploads] == ["README.md", *adapter]
    assert [u.size for u in uploads] == [(train_run / "README.md").stat().st_size,
                                         *[(train_run / "adapter" / n).stat().st_size for n in adapter]]
