"""What the API's stage functions return: typed views of the files a stage wrote.

Each result holds the run directory it was read from and can be opened again later from that
directory (`Evaluation.load("runs/demo/base")`). Where the result is a table, `.to_pandas()`
gives it as a DataFrame (pandas is imported only then).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..io.layout import (
    LOG_FILE,
    MANIFEST,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    SPLIT_FILES,
    RecipeRun,
)
from ..io.runs import read_json, read_jsonl
from ..reports.compare import (
    METRICS as SCORES,  # the summary scores, as compare tables them
)


def _frame(rows: list[dict], columns: Optional[list[str]] = None):
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def _summary(path: Path) -> dict:
    """The summary a stage recorded in its manifest (run.json)."""
    return read_json(path / MANIFEST).get("summary", {}) if (path / MANIFEST).is_file() else {}


@dataclass
class PreparedData:
    """A prepared directory: train/validation/test prompt-completion JSONL (`prepare`)."""

    path: Path
    counts: dict[str, int]
    source: str
    summary: dict = field(repr=False, default_factory=dict)

    @classmethod
    def load(cls, path: Path | str, summary: Optional[dict] = None) -> "PreparedData":
        path = Path(path)
        summary = summary if summary is not None else _summary(path)
        counts = summary.get("counts") or {s: len(read_jsonl(path / f)) for s, f in SPLIT_FILES.items()}
        return cls(path, counts, summary.get("source", ""), summary)

    @property
    def files(self) -> dict[str, Path]:
        return {split: self.path / name for split, name in SPLIT_FILES.items()}

    def split(self, name: str = "train") -> list[dict]:
        """The examples of one split (id, prompt, completion, references, template, source)."""
        return read_jsonl(self.path / SPLIT_FILES[name])

    def to_pandas(self, split: str = "train"):
        """One row per example of `split`."""
        return _frame(self.split(split))


@dataclass
class TrainResult:
    """A training run (`train`): its summary and the per-step log (log.jsonl)."""

    path: Path
    steps: int
    final_loss: Optional[float]
    final_val_loss: Optional[float]
    summary: dict = field(repr=False, default_factory=dict)
    log: list[dict] = field(repr=False, default_factory=list)

    @classmethod
    def load(cls, path: Path | str, summary: Optional[dict] = None) -> "TrainResult":
        path = Path(path)
        summary = summary if summary is not None else _summary(path)
        log = read_jsonl(path / LOG_FILE) if (path / LOG_FILE).is_file() else []
        return cls(path, summary.get("steps", len(log)), summary.get("final_loss"), summary.get("final_val_loss"),
                   summary, log)

    @property
    def model(self) -> str:
        """What `evaluate(model=...)`, `bench(model=...)` and `tunebench chat` take for the tuned model."""
        return str(self.path)

    @property
    def losses(self) -> list[float]:
        """The training loss at each logged step."""
        return [row["loss"] for row in self.log]

    def to_pandas(self):
        """The log: one row per optimizer step (step, epoch, loss, lr, grad_norm, tokens_per_s, ...; val_loss
        where validation ran)."""
        return _frame(self.log)


@dataclass
class Predictions:
    """Generated completions for a prepared split (`generate`): predictions.jsonl."""

    path: Path
    predictions: list[dict] = field(repr=False, default_factory=list)

    def to_pandas(self):
        """One row per example: id, prompt, prediction, references."""
        return _frame(self.predictions, ["id", "prompt", "prediction", "references"])


@dataclass
class Evaluation(Predictions):
    """An evaluation run (`evaluate`): metrics.json and predictions.jsonl."""

    metrics: dict = field(repr=False, default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> "Evaluation":
        path = Path(path)
        return cls(path, read_jsonl(path / PREDICTIONS_FILE), read_json(path / METRICS_FILE))

    @property
    def scores(self) -> dict[str, float]:
        """ROUGE-1/2/L/Lsum (F-measure 0..1) and BLEU (0..100)."""
        return {k: self.metrics[k] for k in SCORES if k in self.metrics}

    def __repr__(self) -> str:
        scores = ", ".join(f"{k}={v:.4f}" for k, v in self.scores.items())
        return f"Evaluation(path={str(self.path)!r}, n={self.metrics.get('n')}, {scores})"


@dataclass
class BenchResult:
    """A benchmark run (`bench`): results.json, one entry per task."""

    path: Path
    results: dict = field(repr=False, default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> "BenchResult":
        return cls(Path(path), read_json(Path(path) / RESULTS_FILE))

    @property
    def macro(self) -> Optional[float]:
        return self.results.get("aggregates", {}).get("macro")

    def to_pandas(self):
        """One row per task: task, family, category, kind, metric (the primary one), score, n, shots."""
        rows = [{"task": t["name"], "family": t.get("family"), "category": t.get("category"), "kind": t.get("kind"),
                 "metric": t.get("primary_metric"), "score": t.get("primary"), "n": t.get("n"), "shots": t.get("shots")}
                for t in self.results.get("tasks", [])]
        return _frame(rows, ["task", "family", "category", "kind", "metric", "score", "n", "shots"])

    def __repr__(self) -> str:
        macro = f"{self.macro:.4f}" if self.macro is not None else None
        return f"BenchResult(path={str(self.path)!r}, tasks={len(self.results.get('tasks', []))}, macro={macro})"


@dataclass
class BenchTasks:
    """`bench(list=True)`: every benchmark task and suite the data root holds."""

    tasks: list[dict]
    suites: list[dict]

    def to_pandas(self):
        """One row per task: task, kind, size (examples; None when missing), source."""
        return _frame(self.tasks, ["task", "kind", "size", "source"])


# the columns of each kind of comparison's table
_COMPARISON_COLUMNS = {
    "evaluation": ["metric", "base", "tuned", "change", "relative_change"],
    "forgetting": ["task", "metric", "n", "base", "tuned", "delta", "ci95_low", "ci95_high", "p_value",
                   "direction", "p_holm", "direction_holm"],
    "runs": ["name", "run", "model", "training", *SCORES],
}


@dataclass
class Comparison:
    """`compare`: two evaluation runs (kind "evaluation": compare.json), two benchmark runs
    ("forgetting": forgetting.json) or recipe runs side by side ("runs": comparison.json)."""

    kind: str
    files: tuple[Path, Path]   # the markdown and the JSON written
    data: dict = field(repr=False, default_factory=dict)

    @property
    def rows(self) -> list[dict]:
        """The table: per metric (evaluation), per benchmark task (forgetting), per model (runs)."""
        if self.kind == "evaluation":
            return self.data["metrics"]
        if self.kind == "forgetting":
            return [{**{k: v for k, v in t.items() if k not in ("families", "ci95")},
                     "ci95_low": t["ci95"][0], "ci95_high": t["ci95"][1]} for t in self.data["tasks"]]
        return self.data["summarization"]

    @property
    def examples(self) -> list[dict]:
        """Side-by-side examples (evaluation): prompt, reference, base and tuned outputs with their ROUGE-L."""
        return self.data.get("examples", [])

    def to_pandas(self):
        return _frame(self.rows, _COMPARISON_COLUMNS[self.kind])

    def __repr__(self) -> str:
        return f"Comparison(kind={self.kind!r}, files=({str(self.files[0])!r}, {str(self.files[1])!r}))"


@dataclass
class RunResult:
    """`run(recipe)`: every stage of a recipe run, read from its directory."""

    path: Path
    prepared: PreparedData
    base: Evaluation
    train: TrainResult
    tuned: Evaluation
    comparison: Comparison
    base_bench: Optional[BenchResult] = None
    tuned_bench: Optional[BenchResult] = None
    forgetting: Optional[Comparison] = None

    @classmethod
    def load(cls, path: Path | str) -> "RunResult":
        run = RecipeRun(path)
        bench = {name: BenchResult.load(d) for name, d in (("base_bench", run.base_bench), ("tuned_bench", run.tuned_bench))
                 if (d / RESULTS_FILE).is_file()}
        forgetting = run.file("forgetting.json")
        return cls(run.root, PreparedData.load(run.data), Evaluation.load(run.base), TrainResult.load(run.train),
                   Evaluation.load(run.tuned), _comparison("evaluation", run.file("compare.json")), **bench,
                   forgetting=_comparison("forgetting", forgetting) if forgetting.is_file() else None)

    def to_pandas(self):
        """The base vs tuned metric table (compare.json)."""
        return self.comparison.to_pandas()


def _comparison(kind: str, json_file: Path) -> Comparison:
    return Comparison(kind, (json_file.with_suffix(".md"), json_file), read_json(json_file))


@dataclass
class Plan:
    """`run(recipe, check=True)`: the recipe checked whole, and what `run` would do."""

    lines: list[str]

    def __str__(self) -> str:
        return "\n".join(self.lines)

