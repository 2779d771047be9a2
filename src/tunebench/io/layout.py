"""The run directory as a typed layer: the name of every file a run holds, where each stage of a
recipe run writes, what kind of run a directory is, and the shapes of the rows that flow between
stages. Modules ask here instead of probing for files or spelling names themselves.

A stage records its settings in its manifest (`run.json`); `stage_config` builds them, so the
stage that writes them and the check that decides to skip it can never disagree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, TypedDict

MANIFEST = "run.json"                 # every stage: settings, environment, wall time, memory
RUN_MODEL_FILE = "tunebench_model.json"   # a training run: where its model or adapter is
LOG_FILE = "log.jsonl"                     # a training run: one row per logged step
CHECKPOINTS = "checkpoints"           # a training run: step-N/ folders
PREDICTIONS_FILE = "predictions.jsonl"     # an evaluation run: one Prediction per example
PREDICTIONS_PARTIAL_FILE = "predictions.partial.jsonl"   # ... journaled while generating
METRICS_FILE = "metrics.json"              # an evaluation run: ROUGE, BLEU, families
RESULTS_FILE = "results.json"              # a benchmark run: every task's entry and the aggregates
BENCH_EXAMPLES_FILE = "examples.jsonl"     # a benchmark run: per-example rows
SPLIT_FILES = {s: f"{s}.jsonl" for s in ("train", "validation", "test")}   # a prepared directory
RECIPE_FILE = "recipe.json"                # a recipe run: the recipe as run
CARD_FILE = "README.md"                    # a training run: its model card (Hugging Face's format)
LM_EVAL_DIR = "lm-eval"                    # a benchmark run with --output-format lm-eval: lm-eval's layout
EXPORT_FILE = "tunebench_export.json"     # `tunebench export`: what an exported model was made from

RunKind = Literal["recipe", "evaluation", "bench", "training", "prepared", "unknown"]


class Example(TypedDict):
    """A prepared row (`prepare` writes them, every later stage reads them)."""
    id: str
    prompt: str
    completion: str
    references: list[str]
    template: str
    source: str


class Prediction(TypedDict):
    """A row of predictions.jsonl."""
    id: str
    prompt: str
    prediction: str
    references: list[str]


class Manifest(TypedDict, total=False):
    """run.json."""
    stage: str
    status: Literal["complete"]
    config: dict
    seed: Any
    started: str
    wall_time_s: float
    command: list[str]
    environment: dict
    memory: dict


class RecipeRun:
    """Where each stage of `tunebench run` writes, below the recipe's `out`."""

    def __init__(self, root: Path | str):
        self.root = root = Path(root)
        self.data, self.base, self.train, self.tuned = root / "data", root / "base", root / "train", root / "tuned"
        self.base_bench, self.tuned_bench = root / "base-bench", root / "tuned-bench"
        self.report, self.recipe = root / "report.html", root / RECIPE_FILE

    def file(self, name: str) -> Path:
        """The run's own files: compare.md/.json, forgetting.md/.json."""
        return self.root / name


def kind(path: Path | str) -> RunKind:
    """What a directory holds, by the files only that kind of run writes."""
    p, run = Path(path), RecipeRun(path)
    if (run.base / METRICS_FILE).is_file() and (run.tuned / METRICS_FILE).is_file():
        return "recipe"
    if (p / RESULTS_FILE).is_file():
        return "bench"
    if (p / METRICS_FILE).is_file():
        return "evaluation"
    if (p / LOG_FILE).is_file() or (p / RUN_MODEL_FILE).is_file():
        return "training"
    if (p / SPLIT_FILES["train"]).is_file():
        return "prepared"
    return "unknown"


def training_dir(path: Path | str) -> Optional[Path]:
    """The training run in a directory: a recipe run's train/, or the directory itself."""
    p, train = Path(path), RecipeRun(path).train
    if train.is_dir():
        return train
    return p if (p / LOG_FILE).is_file() else None


def checkpoints(train_dir: Path | str) -> list[Path]:
    """A training run's complete checkpoints, oldest first (state.json is written last: marks one whole)."""
    d = Path(train_dir) / CHECKPOINTS
    return sorted((p for p in d.glob("step-*") if (p / "state.json").is_file()), key=lambda p: p.name) if d.is_dir() else []


def checkpoint_dir(train_dir: Path | str, step: int) -> Path:
    return Path(train_dir) / CHECKPOINTS / f"step-{step:06d}"


def stage_config(data_dir: Path | str, **sections) -> dict:
    """The settings a stage records and the skip check compares: each section (a config model, or a
    plain value) under its name, then the prepared data directory it read."""
    out = {name: recorded(s) if hasattr(s, "model_dump") else s for name, s in sections.items()}
    out["data"] = str(data_dir)
    return out


def recorded(section) -> dict:
    """A section's settings as a stage records them. A field added after stages were recorded
    (marked `recorded_when_set`) is left out while it holds its default, which reproduces what
    those stages did: a finished stage stays finished when tunebench gains a setting."""
    out = section.model_dump()
    for name, field in type(section).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("recorded_when_set") and out.get(name) == field.default:
            out.pop(name)
    return out
