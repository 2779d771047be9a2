"""What a benchmark task is, and the registry that finds tasks and suites by name.

A task is data: a list of examples, each a context plus either answer choices (scored by
log-likelihood) or target strings (scored on generated text), and the metrics to report.
Loaders for BIG-bench JSON files and for the YAML-declared MMLU/GLUE/SuperGLUE tasks turn
files into `BenchmarkTask`s; everything downstream (scoring, results, comparisons) sees only this shape.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import yaml

from ..config import BIGBENCH_SEED, LM_EVAL_SEED
from ..data.contamination import ScoredRows
from ..errors import UserError, suggest
from ..io.locations import data_root, describe

REGISTRY_DIR = Path(__file__).parent / "registry"


@dataclass
class Example:
    id: str
    context: str                       # everything before the answer, shots included
    choices: list[str] = field(default_factory=list)   # continuations scored (delimiter included)
    gold: Optional[int] = None         # index of the correct choice
    choice_scores: Optional[list[float]] = None  # BIG-bench target_scores (partial credit)
    targets: list[str] = field(default_factory=list)   # acceptable generated answers
    inputs: list[str] = field(default_factory=list)    # the raw input texts, no prompt words: what a contamination check looks for


@dataclass
class BenchmarkTask:
    name: str
    family: str                        # bigbench, mmlu, glue, superglue
    kind: str                          # "multiple_choice" or "generate"
    metrics: list[str]                 # the task's own metric names
    source: str                        # file it was read from
    load: Callable[[int, int], list[Example]] = field(repr=False)  # (shots, seed) -> examples
    category: str = ""                 # for per-category macro averages
    size: Optional[int] = None         # number of examples, when cheap to know
    stop_string: Optional[str] = None
    output_regex: Optional[str] = None
    preferred: Optional[str] = None
    bigbench: Optional[object] = field(default=None, repr=False)  # bigbench.Spec: the file as BIG-bench reads it
    subtasks: list["BenchmarkTask"] = field(default_factory=list, repr=False)  # a BIG-bench container's tasks
    container: Optional[str] = None    # the container this task is a subtask of

    def scoring(self, convention: str) -> str:
        """The convention this task is scored by: `bigbench` applies to BIG-bench JSON tasks only."""
        return "bigbench" if convention == "bigbench" and self.family == "bigbench" else "lm-eval"


def seed_for(seed: Optional[int], convention: str) -> int:
    """An unset seed is each convention's own default: BIGBENCH_SEED (BIG-bench's JsonTask), else LM_EVAL_SEED."""
    return seed if seed is not None else BIGBENCH_SEED if convention == "bigbench" else LM_EVAL_SEED


def examples_for(task: BenchmarkTask, shots: int, seed: Optional[int], limit: Optional[int] = None, select: str = "first",
                 convention: str = "lm-eval", perturb=None) -> list[Example]:
    """The examples a run scores: prompts built by the task's convention, `limit` of them kept
    (`select` first: the first in file order; seeded: BIG-bench's draw, `RandomState(seed).choice`).
    A container's examples are its subtasks', each limited to limit // subtasks, ids prefixed."""
    from dataclasses import replace

    if task.subtasks:
        per = subtask_limit(task, limit)
        return [replace(e, id=f"{subtask_key(s)}:{e.id}") for s in task.subtasks
                for e in examples_for(s, shots, seed, per, select, convention, perturb)]
    conv = task.scoring(convention)
    seed = seed_for(seed, conv)
    if conv == "bigbench" and task.bigbench is not None:
        from .bigbench import bigbench_examples

        return bigbench_examples(task.bigbench, shots, seed, limit, select, perturb)
    examples = task.load(shots, seed, perturb)
    if not limit or limit >= len(examples):
        return examples
    if select == "seeded":
        import numpy as np

        return [examples[i] for i in np.random.RandomState(seed=seed).choice(len(examples), limit, replace=False)]
    return examples[:limit]


def scored_rows(tasks: list[BenchmarkTask], limit: Optional[int], shots: int = 0, seed: Optional[int] = None,
                select: str = "first", scoring: str = "bigbench") -> list[ScoredRows]:
    """The examples a benchmark run scores, picked as the run picks them, as the data layer's plain
    `ScoredRows`: (id, raw input texts) per example, for the contamination check and reserved pool rows."""
    return [ScoredRows(task.name, task.source, select, limit,
                       [(e.id, e.inputs or [e.context] + list(e.targets))
                        for e in examples_for(task, shots, seed, limit, select, scoring)]) for task in tasks]


def benchmark_sets(tasks: list[BenchmarkTask], limit: Optional[int], shots: int = 0, seed: Optional[int] = None,
                   select: str = "first", scoring: str = "bigbench") -> dict[str, list[tuple[str, list[str]]]]:
    """(id, raw input texts) of the examples a benchmark run scores, per task (`contamination.index_of`'s input)."""
    return {r.name: r.items for r in scored_rows(tasks, limit, shots, seed, select, scoring)}


def subtask_limit(task: BenchmarkTask, limit: Optional[int]) -> Optional[int]:
    """A container's limit per subtask: BIG-bench splits max_examples evenly (rounding down)."""
    if not limit:
        return None
    if limit < len(task.subtasks):
        raise UserError(f"{task.name}: limit {limit} is below its {len(task.subtasks)} subtasks (BIG-bench splits "
                        "the limit evenly across them)")
    return limit // len(task.subtasks)


def subtask_key(task: BenchmarkTask) -> str:
    """A subtask's name inside its container: its folder."""
    return Path(task.source).parent.name


@lru_cache(maxsize=4)
def _registry(root: str) -> dict[str, BenchmarkTask]:
    from .bigbench import bigbench_tasks
    from .declared import declared_tasks

    tasks: dict[str, BenchmarkTask] = {}
    for t in declared_tasks(Path(root)) + bigbench_tasks(Path(root) / "bigbench", prefix="bigbench/"):
        tasks[t.name] = t
    return tasks


def clear_registry() -> None:
    """Forget the registries read so far (a test that changes the data files)."""
    _registry.cache_clear()


def registry() -> dict[str, BenchmarkTask]:
    return _registry(str(data_root()))


@lru_cache(maxsize=1)
def suites() -> dict[str, dict]:
    return yaml.safe_load((REGISTRY_DIR / "suites.yaml").read_text())


def example_count(tasks: list[BenchmarkTask], limit: Optional[int]) -> int:
    """Examples a run of these tasks scores (tasks whose size is unknown count 0)."""
    return sum(min(t.size, limit) if limit else t.size for t in tasks if t.size)


def _whole(matched: list[BenchmarkTask]) -> list[BenchmarkTask]:
    """A pattern that matches a container and its subtasks means the container (scored whole)."""
    names = {t.name for t in matched}
    return [t for t in matched if t.container not in names]


def resolve_tasks(names: list[str] = (), suite_names: list[str] = ()) -> tuple[list[BenchmarkTask], Optional[int]]:
    """Tasks for --task and --suite arguments, in order, without repeats; and the suite's default limit."""
    from .bigbench import load_bigbench_path

    out: list[BenchmarkTask] = []
    limit = None
    for s in suite_names:
        if s not in suites():
            raise UserError(f"unknown suite '{s}'" + suggest(s, suites(), f" (known: {', '.join(suites())})"))
        spec = suites()[s]
        limit = spec.get("limit", limit)
        for pattern in spec["tasks"]:
            matched = _whole([t for n, t in registry().items() if fnmatch.fnmatchcase(n, pattern)])
            if not matched:
                raise UserError(f"suite '{s}': task '{pattern}' not found in the data root {describe()}")
            out += matched
    for n in names:
        p = Path(n)
        if p.suffix == ".json" or p.is_dir() or p.is_file():
            out += load_bigbench_path(p)
        elif n in registry():
            out.append(registry()[n])
        else:
            reg = registry()
            matched = _whole([t for k, t in reg.items() if fnmatch.fnmatchcase(k, n)])
            if not matched:
                raise UserError(f"unknown task '{n}'" + suggest(n, reg, " (see `tunebench bench --list`)"))
            out += matched
    seen, unique = set(), []
    for t in out:
        if t.name not in seen:
            seen.add(t.name)
            unique.append(t)
    if not unique:
        raise UserError("no tasks: give --suite or --task")
    return unique, limit
