"""The pipeline's stages as Python functions, for notebooks: the CLI's commands with the same
names and defaults (`tunebench train --max-steps 4` is `train(data, out, max_steps=4)`), returning
typed results instead of printing them.

A user's mistake raises `UserError` (one line naming the keyword, file or field) instead of exiting.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from ..config import (
    BenchConfig,
    CompareConfig,
    DataConfig,
    GenerateConfig,
    MixtureConfig,
    ModelConfig,
    TrainConfig,
)
from ..errors import UserError
from ..io import locations
from ..io.layout import RecipeRun
from ..io.runs import is_main_process
from .keywords import From, takes
from .results import (
    BenchResult,
    BenchTasks,
    Comparison,
    Evaluation,
    Plan,
    Predictions,
    PreparedData,
    RunResult,
    TrainResult,
)


def _begin(data_root: Optional[str]) -> None:
    """What each CLI command starts with: the data root it was given (or found as usual)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    locations.reset()
    locations.configure(str(data_root) if data_root else None)


@takes(data=From(DataConfig), mixture=From(MixtureConfig, prefix="mixture"))
def prepare(out: str | Path, *, data_root: Optional[str] = None, data: DataConfig,
            mixture: MixtureConfig) -> PreparedData:
    """Records -> train/validation/test prompt-completion JSONL in `out` (`tunebench prepare`).

    With `mixture_tasks`, the training split is a FLAN-style multi-task mixture and the data
    keywords still give the test split. Returns the prepared directory with its split counts;
    `.to_pandas(split)` shows the examples.
    """
    from ..pipeline import prepare_stage

    _begin(data_root)
    summary = prepare_stage(data, out, mixture if mixture.tasks else None)
    return PreparedData.load(out, summary)


@takes(model=From(ModelConfig), train=From(TrainConfig))
def train(data: str | Path, out: str | Path, *, resume: bool = False, data_root: Optional[str] = None,
          model: ModelConfig, train: TrainConfig) -> TrainResult:
    """Fine-tune (LoRA or full) on a prepared directory `data`, writing the run to `out` (`tunebench train`).

    `resume=True` continues from the last good checkpoint in `out`. Returns the run's summary and
    its per-step log (`.to_pandas()`); `.model` is what `evaluate(model=...)` takes.
    """
    from ..pipeline import train_stage

    _begin(data_root)
    summary = train_stage(model, train, data, out, resume)
    return TrainResult.load(out, summary)


@takes(model=From(ModelConfig), generation=From(GenerateConfig))
def generate(data: str | Path, out: str | Path, *, data_root: Optional[str] = None, model: ModelConfig,
             generation: GenerateConfig) -> Predictions:
    """Generate completions for a prepared split, written to `out`/predictions.jsonl (`tunebench generate`)."""
    from ..pipeline import generate_stage

    _begin(data_root)
    r = generate_stage(model, generation, data, out)
    return Predictions(Path(out), r["predictions"])


@takes(model=From(ModelConfig), generation=From(GenerateConfig))
def evaluate(data: str | Path, out: str | Path, *, data_root: Optional[str] = None, model: ModelConfig,
             generation: GenerateConfig) -> Evaluation:
    """Generate and score a prepared split: predictions.jsonl and metrics.json in `out` (`tunebench evaluate`).

    Returns the metrics (`.scores`: ROUGE-1/2/L/Lsum F-measure and BLEU; `.metrics`: all of
    metrics.json) and the predictions (`.to_pandas()`); None in the other processes of a torchrun launch.
    """
    from ..pipeline import evaluate_stage

    _begin(data_root)
    evaluate_stage(model, generation, data, out)
    return Evaluation.load(out) if is_main_process() else None   # rank 0 alone writes the files


@takes(model=From(ModelConfig, skip=("chat_template",)), bench=From(BenchConfig))
def bench(out: Optional[str | Path] = None, *, list: bool = False, data_root: Optional[str] = None,
          model: ModelConfig, bench: BenchConfig) -> BenchResult | BenchTasks:
    """Score a model on benchmark tasks: results.json and examples.jsonl in `out` (`tunebench bench`).

    `list=True` returns every task and suite instead (`.to_pandas()`: one row per task). Give
    `suite` or `task` (lists of names); `.to_pandas()` of the result has one row per task.
    """
    from ..benchmarks.harness import run_bench
    from ..benchmarks.tasks import registry, resolve_tasks, suites

    _begin(data_root)
    if list:
        return BenchTasks([{"task": n, "kind": t.kind, "size": t.size, "source": t.source} for n, t in registry().items()],
                          [{"suite": n, "description": s.get("description", "")} for n, s in suites().items()])
    if not out:
        raise UserError("bench(): out is required (where results.json goes)")
    tasks, suite_limit = resolve_tasks(bench.task, bench.suite)
    return BenchResult(Path(out), run_bench(model, bench, tasks, out, bench.limit or suite_limit))


@takes(options=From(CompareConfig))
def compare(base_run: str | Path, tuned_run: str | Path, *more_runs: str | Path, out: Optional[str | Path] = None,
            data_root: Optional[str] = None, options: CompareConfig) -> Comparison:
    """Compare runs (`tunebench compare`), writing the report beside them (or to `out`).

    Two evaluation runs: the metric table and side-by-side examples (compare.md/json). Two
    benchmark runs: per-task change with paired-bootstrap intervals (forgetting.md/json). Recipe
    runs (two or more): the base model and every tuned model side by side (comparison.md/json).
    `.to_pandas()` is the table.
    """
    from ..reports.compare import compare_any

    _begin(data_root)
    what, c, md, js = compare_any([base_run, tuned_run, *more_runs], out, options.examples)
    return Comparison(what, (md, js), c)


@takes()
def run(recipe: str | Path, *, overrides: Sequence[str] = (), fresh: bool = False, check: bool = False,
        data_root: Optional[str] = None) -> RunResult | Plan:
    """Run a recipe (`tunebench run`): prepare, evaluate the base model, train, evaluate the tuned
    model, compare [, benchmark both and report forgetting].

    `overrides` are the CLI's `--set` values (["train.lr=1e-4", ...]). Stages already complete with
    the same settings are skipped unless `fresh=True`. `check=True` checks the whole recipe without
    loading a model and returns the plan. Returns every stage's result, read from the run directory
    (None in the other processes of a torchrun launch).
    """
    from ..pipeline import run_recipe
    from ..preflight import load_and_check, plan

    _begin(data_root)
    recipe_cfg, rf, facts = load_and_check(recipe, [str(o) for o in overrides])
    if check:
        return Plan(plan(recipe_cfg, rf, facts, fresh))
    run_recipe(recipe_cfg, fresh=fresh)
    return RunResult.load(RecipeRun(recipe_cfg.out).root) if is_main_process() else None
