"""The Python API: the CLI's commands as functions, same keywords and defaults, typed results."""
import argparse
import inspect
import json
import subprocess
import sys

import pytest
import yaml
from conftest import DIALOGSUM, REPO

import tunebench as tb
from tunebench import cli
from tunebench.config import from_flags

# each API function, and the shortest command line of its CLI command
COMMANDS = {
    "prepare": ["prepare", "--out", "o"],
    "train": ["train", "--data", "d", "--out", "o"],
    "generate": ["generate", "--data", "d", "--out", "o"],
    "evaluate": ["evaluate", "--data", "d", "--out", "o"],
    "bench": ["bench"],
    "compare": ["compare", "a", "b"],
    "run": ["run", "r.yaml"],
}
NOT_KEYWORDS = {"help", "verbose"}   # -v: the CLI's library chatter switch, not a stage setting


def _actions(command: str) -> dict[str, argparse.Action]:
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: a for a in sub._actions if a.dest not in NOT_KEYWORDS}


@pytest.mark.parametrize("command", COMMANDS)
def test_keywords_and_defaults_are_the_clis(command):
    """Every flag and argument of the command is a parameter of the function with the same name,
    and each default is what the CLI runs with when the flag is not given (for config sections:
    from_flags over a parse without the flag)."""
    fn = getattr(tb, command)
    params = inspect.signature(fn).parameters
    actions = _actions(command)
    assert set(params) == set(actions)
    args = cli._parser().parse_args(COMMANDS[command])
    section_keywords = set()
    for spec in getattr(fn, "sections", {}).values():
        cfg = from_flags(spec.model, args, prefix=spec.prefix)
        for keyword, field in spec.keywords().items():
            section_keywords.add(keyword)
            assert params[keyword].default == getattr(cfg, field), keyword
            assert params[keyword].kind == inspect.Parameter.KEYWORD_ONLY
    for name, p in params.items():
        if name in section_keywords:
            continue
        a = actions[name]
        if a.nargs == "*":       # compare's more runs
            assert p.kind == inspect.Parameter.VAR_POSITIONAL
        elif a.required or not a.option_strings:
            assert p.default is inspect.Parameter.empty, name
        else:
            default = list(p.default) if isinstance(p.default, tuple) else p.default
            assert default == getattr(args, name), name


def test_a_field_added_to_a_section_becomes_a_keyword():
    """The keywords are the sections' fields, not a copy: TrainConfig's fields are train()'s keywords."""
    from tunebench.config import DataConfig, TrainConfig

    assert set(TrainConfig.model_fields) <= set(inspect.signature(tb.train).parameters)
    assert set(DataConfig.model_fields) <= set(inspect.signature(tb.prepare).parameters)
    assert "stop after this many optimizer steps" in tb.train.__doc__
    assert tb.train.__name__ == "train" and "Fine-tune" in tb.train.__doc__


def test_unknown_keyword_is_one_line_naming_it_and_the_closest(tmp_path):
    with pytest.raises(tb.UserError) as e:
        tb.train(tmp_path, tmp_path / "t", max_step=4)
    assert str(e.value) == "train(): unknown keyword 'max_step' (did you mean 'max_steps'?)"
    with pytest.raises(tb.UserError) as e:
        tb.compare(tmp_path, tmp_path, zzz=1)
    assert str(e.value) == "compare(): unknown keyword 'zzz' (see help(tunebench.compare))"
    with pytest.raises(tb.UserError, match=r"^prepare\(\): train_limit=0: Input should be greater than 0$"):
        tb.prepare(tmp_path / "p", train_limit=0)
    with pytest.raises(tb.UserError, match=r"^evaluate\(\): missing a required argument: 'out'$"):
        tb.evaluate(tmp_path)
    assert not (tmp_path / "p").exists() and not (tmp_path / "t").exists()


def test_import_is_cheap_and_the_names_load_on_first_use():
    code = ("import sys, tunebench as tb; assert 'tunebench.api' not in sys.modules and 'torch' not in sys.modules;"
            "import tunebench.api as api; assert sorted(tb._API) == sorted(api.__all__);"
            "assert tb.evaluate is api.evaluate and 'evaluate' in dir(tb)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "src")})
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError):
        tb.no_such_thing


@pytest.fixture(scope="module")
def stages(tiny_llama, prepared, tmp_path_factory):
    """Evaluate the tiny model, train it two steps, evaluate the result, compare: through the API."""
    root = tmp_path_factory.mktemp("api")
    common = dict(limit=3, max_new_tokens=6, precision="fp32")
    base = tb.evaluate(prepared, root / "base", model=str(tiny_llama), **common)
    trained = tb.train(prepared, root / "train", model=str(tiny_llama), max_steps=2, batch_size=4, lr=1e-2,
                       precision="fp32", report_to=["none"], merge=False)
    tuned = tb.evaluate(prepared, root / "tuned", model=trained.model, **common)
    return base, trained, tuned, tb.compare(base.path, tuned.path, examples=2)


def test_results_are_the_files_the_stages_wrote(stages, prepared):
    base, trained, tuned, comparison = stages
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731

    data = tb.PreparedData.load(prepared)
    assert data.counts == {"train": 16, "validation": 4, "test": 4}
    frame = data.to_pandas("test")
    assert frame.shape == (4, 6) and list(frame.columns) == ["id", "prompt", "completion", "references", "template", "source"]
    assert frame["id"].tolist() == [e["id"] for e in read(prepared / "test.jsonl")]

    for ev in (base, tuned):
        frame = ev.to_pandas()
        assert list(frame.columns) == ["id", "prompt", "prediction", "references"]
        assert frame.to_dict("records") == read(ev.path / "predictions.jsonl") and len(frame) == 3
        metrics = json.loads((ev.path / "metrics.json").read_text())
        assert ev.metrics == metrics and ev.scores == {k: metrics[k] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu")}
    assert tuned.metrics["model"] == trained.model == str(trained.path)

    log = read(trained.path / "log.jsonl")
    frame = trained.to_pandas()
    assert len(frame) == trained.steps == 2 and frame["step"].tolist() == [1, 2]
    assert trained.losses == frame["loss"].tolist() == [r["loss"] for r in log]
    assert trained.final_loss == log[-1]["loss"]

    table = comparison.to_pandas()
    assert comparison.kind == "evaluation" and table.shape == (5, 5)
    assert list(table.columns) == ["metric", "base", "tuned", "change", "relative_change"]
    assert table["metric"].tolist() == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
    assert table["base"].tolist() == [base.metrics[k] for k in table["metric"]]
    assert table["tuned"].tolist() == [tuned.metrics[k] for k in table["metric"]]
    assert comparison.files == (base.path.parent / "compare.md", base.path.parent / "compare.json")
    assert comparison.data == json.loads(comparison.files[1].read_text()) and len(comparison.examples) == 2


def test_bench_and_a_forgetting_comparison(tiny_llama, stages, tmp_path):
    _, trained, _, _ = stages
    common = dict(task=["superglue/copa", "glue/sst2"], limit=4)
    base = tb.bench(tmp_path / "base-bench", model=str(tiny_llama), **common)
    tuned = tb.bench(tmp_path / "tuned-bench", model=trained.model, **common)
    results = json.loads((base.path / "results.json").read_text())
    frame = base.to_pandas()
    assert list(frame.columns) == ["task", "family", "category", "kind", "metric", "score", "n", "shots"]
    assert frame["task"].tolist() == ["superglue/copa", "glue/sst2"] and frame["n"].tolist() == [4, 4]
    assert frame["score"].tolist() == [t["primary"] for t in results["tasks"]] and base.macro == results["aggregates"]["macro"]

    f = tb.compare(base.path, tuned.path)
    table = f.to_pandas()
    assert f.kind == "forgetting" and f.files[1] == tmp_path / "forgetting.json"
    assert table["task"].tolist() == ["superglue/copa", "glue/sst2"]
    assert table[["ci95_low", "ci95_high"]].values.tolist() == [t["ci95"] for t in f.data["tasks"]]
    assert table["delta"].tolist() == pytest.approx((table["tuned"] - table["base"]).tolist(), abs=1e-12)

    listing = tb.bench(list=True)
    frame = listing.to_pandas()
    assert list(frame.columns) == ["task", "kind", "size", "source"] and "superglue/copa" in frame["task"].tolist()
    with pytest.raises(tb.UserError, match=r"^bench\(\): out is required"):
        tb.bench(task=["superglue/copa"])


def test_run_a_recipe(tiny_llama, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "out": str(tmp_path / "run"), "model": {"model": str(tiny_llama)},
        "data": {"path": str(DIALOGSUM), "train_limit": 8, "validation_limit": 2, "test_limit": 2},
        "train": {"max_steps": 1, "batch_size": 4, "precision": "fp32", "report_to": ["none"], "merge": False},
        "evaluate": {"max_new_tokens": 4, "precision": "fp32"}, "contamination": {"enabled": False}}))
    plan = tb.run(recipe, check=True)
    assert isinstance(plan, tb.Plan) and "no problems found" in plan.lines[0] and not (tmp_path / "run").exists()

    r = tb.run(recipe, overrides=["compare.examples=1"])
    assert r.prepared.counts == {"train": 8, "validation": 2, "test": 2} and r.train.steps == 1
    assert len(r.base.to_pandas()) == len(r.tuned.to_pandas()) == 2
    assert r.to_pandas()["metric"].tolist() == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
    assert r.comparison.data == json.loads((tmp_path / "run" / "compare.json").read_text())
    assert r.forgetting is None and r.base_bench is None
    with pytest.raises(tb.UserError, match=r"train\.max_step: unknown key"):
        tb.run(recipe, overrides=["train.max_step=2"])


def test_in_a_notebook_the_progress_bars_are_widgets(tiny_llama, prepared, tmp_path):
    """A notebook run in a real Jupyter kernel: the generation bar is a tqdm widget there (tqdm.auto),
    a result displays as its repr, a table as HTML, and a mistake is a UserError the cell can catch."""
    import nbformat
    from nbclient import NotebookClient

    cells = [f"import tunebench as tb\nev = tb.evaluate({str(prepared)!r}, {str(tmp_path / 'ev')!r}, model={str(tiny_llama)!r}, "
             "limit=2, max_new_tokens=4)\nev",
             "ev.to_pandas()",
             "try:\n    tb.evaluate('d', 'o', max_new_token=4)\nexcept tb.UserError as e:\n    print(e)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    outputs = [[o for o in cell.outputs if o["output_type"] != "stream" or o["name"] == "stdout"] for cell in nb.cells]
    bars = [o["data"]["text/plain"] for o in outputs[0] if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert any(b.startswith("generate ev: ") for b in bars), outputs[0]
    assert outputs[0][-1]["data"]["text/plain"].startswith(f"Evaluation(path='{tmp_path / 'ev'}', n=2, rouge1=")
    assert "text/html" in outputs[1][0]["data"] and "prediction" in outputs[1][0]["data"]["text/html"]
    assert outputs[2][0]["text"] == "evaluate(): unknown keyword 'max_new_token' (did you mean 'max_new_tokens'?)\n"
