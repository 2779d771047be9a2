"""A recipe checked whole before any work, and the plan of what `run` will do.

Everything that can be checked without loading a model is checked in one pass, and every problem
is reported on its own line with the recipe's file:line and key: the model resolves, the trackers
import, the output directory can be written, the data files exist and their first records have the
fields the task needs, every template, mixture task, suite and benchmark task exists. `run` does
this before its first stage; `run --check` does only this and prints the plan.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

from .config import Recipe, RecipeFile, broken, read_recipe, validate_recipe
from .errors import UserError, UserErrors
from .io import locations
from .io.layout import (
    MANIFEST,
    METRICS_FILE,
    PREDICTIONS_PARTIAL_FILE,
    RecipeRun,
    checkpoints,
)

# the module each tracker of train.report_to imports
TRACKER_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class _Problems:
    """Problems each once (a missing data root found by three checks is one line), in recipe order."""

    def __init__(self, rf: RecipeFile):
        self.rf, self.found, self._seen = rf, [], set()

    def add(self, loc: tuple, message: str, once: bool = False) -> None:
        """`once`: the message stands for itself (a missing data root), whichever key led to it."""
        key = message if once else (loc, message)
        if key not in self._seen:
            self._seen.add(key)
            self.found.append((loc, message))

    def attempt(self, loc: tuple, fn: Callable):
        """fn(), or None with its UserError recorded against `loc`."""
        try:
            return fn()
        except UserErrors as e:
            for p in e.problems:
                self.add(loc, p, once=True)
        except UserError as e:
            self.add(loc, str(e), once=True)
        return None

    def lines(self) -> list[str]:
        line = {loc: self.rf.where.line(loc) for loc, _ in self.found}
        ordered = sorted(self.found, key=lambda p: (line[p[0]] is None, line[p[0]] or 0))  # stable: same line keeps order
        return [f"{self.rf.at(*loc)}: {msg}" for loc, msg in ordered]


def load_and_check(path: str | Path, overrides: list[str] = (), settings: list = ()) -> tuple[Recipe, RecipeFile, dict]:
    """The recipe and what the checks learnt (for the plan); every problem at once as UserErrors.
    `settings`: a study's overrides (config.read_recipe)."""
    rf = read_recipe(path, overrides, settings)
    recipe, schema_problems, bad = validate_recipe(rf)
    problems = _Problems(rf)
    for loc, msg in schema_problems:
        problems.add(loc, msg)
    facts = check(recipe, problems, bad) if recipe is not None else {}
    if problems.found:
        raise UserErrors(problems.lines())
    return recipe, rf, facts


def check(recipe: Recipe, problems: _Problems, bad: list[tuple]) -> dict:
    """Every check that needs no model; keys with schema problems (`bad`) are not checked further."""
    facts: dict = {}
    if recipe.data_root is not None:
        problems.attempt(("data_root",), locations.data_root)
    if not broken(bad, "model", "model"):
        from . import models

        facts["model"] = problems.attempt(("model", "model"), lambda: models.resolve(recipe.model.model, materialise=False))
    if not broken(bad, "train", "report_to"):
        for i, name in enumerate(recipe.train.report_to):
            module = TRACKER_MODULES.get(name)
            if module and importlib.util.find_spec(module) is None:
                problems.add(("train", "report_to", i), f"tracker '{name}' is not installed (pip install {module}, "
                                                         "or leave it out of train.report_to)")
    if not broken(bad, "out"):
        problems.attempt(("out",), lambda: writable(Path(recipe.out)))
    if not broken(bad, "data"):
        facts["data"] = _check_data(recipe, problems)
    if recipe.mixture is not None and not broken(bad, "mixture"):
        _check_mixture(recipe, problems)
    if recipe.forgetting is not None and recipe.forgetting.enabled and not broken(bad, "forgetting"):
        facts["forgetting"] = _check_forgetting(recipe, problems)
    return facts


def writable(out: Path) -> None:
    """The directory exists and can be written, or the nearest existing folder above it can."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{out}: cannot create output directory ({p} is a file)")
            if not os.access(p, os.W_OK | os.X_OK):
                raise UserError(f"{out}: cannot create output directory ({p} is not writable)")
            return


def _check_data(recipe: Recipe, problems: _Problems) -> dict | None:
    """The data is there, and the first record of each split has the fields its format needs (a
    task's, with its templates; or a chat format's turns). Returns the split sizes the run will use."""
    from .data.examples import chat_format, dataset_location, load_splits, split_records

    cfg = recipe.data
    key = ("data", "path" if cfg.path else "dataset")
    try:
        where = dataset_location(cfg)
    except UserError as e:
        problems.add(key, str(e), once=True)
        where = ""
    if not where:  # no records to read here (a Hub id is read when the run starts): check the task alone
        if cfg.format in ("auto", "task"):
            _check_task(cfg, problems, [], key)
        return {"hub": cfg.dataset} if where is None else None
    raw = problems.attempt(key, lambda: load_splits(cfg)[0])
    if raw is None:
        return None
    firsts = [records[0] for records in raw.values() if records]
    fmt = problems.attempt(key, lambda: chat_format(cfg, raw))
    if fmt:
        from .data import chat
        from .data.examples import renamed

        for first in firsts:
            if problems.attempt(key, lambda: chat.example(renamed([first], cfg)[0], fmt, "")) is None:
                break
    else:
        _check_task(cfg, problems, firsts, key)
    missing_id = [f for f in firsts if cfg.id_field and cfg.id_field not in f.fields]
    if missing_id:
        problems.add(("data", "id_field"), f"{missing_id[0].source}: field '{cfg.id_field}' is missing")
    splits = split_records(raw, cfg)
    counts = {s: len(splits.get(s, [])) for s in ("train", "validation", "test")}
    available = {s: len(v) for s, v in raw.items()}
    if recipe.mixture is None and not counts["train"]:
        problems.add(key, f"{where}: no training records (splits found: {', '.join(raw) or 'none'})")
    if not counts.get(recipe.evaluate.split):
        problems.add(("evaluate", "split"), f"{where}: no '{recipe.evaluate.split}' records to evaluate on")
    return {"where": str(where), "counts": counts, "available": available}


def _check_task(cfg, problems: _Problems, firsts: list, key: tuple) -> None:
    """The task and its templates exist, and each split's first record has the task's fields."""
    from .data.examples import normalise
    from .data.templates import get_task

    task = problems.attempt(("data", "task"), lambda: get_task(cfg.task))
    if task is None:
        return
    if cfg.templates != "all":
        for i, name in enumerate(cfg.templates):
            problems.attempt(("data", "templates", i), lambda: task.template(name))
    if cfg.eval_template:
        problems.attempt(("data", "eval_template"), lambda: task.template(cfg.eval_template))
    unmapped = [(var, col, f) for var, col in cfg.fields.items() for f in firsts if col not in f.fields]
    for var, col, first in unmapped[:1]:  # the recipe's mapping is wrong, not the data
        problems.add(("data", "fields", var), f"{first.source}: no column '{col}' (mapped to '{var}')")
    for first in firsts if not unmapped else []:  # one line for the data, not one per split file
        if problems.attempt(key, lambda: normalise(first, task, cfg, need_target=True)) is None:
            break


def _check_mixture(recipe: Recipe, problems: _Problems) -> None:
    from .data.sources import sample_records
    from .data.templates import get_task, load_task_file

    m = recipe.mixture
    files_ok = True
    for i, f in enumerate(m.task_files):
        files_ok &= problems.attempt(("mixture", "task_files", i), lambda: load_task_file(f)) is not None
    for i, mt in enumerate(m.tasks):
        task = problems.attempt(("mixture", "tasks", i, "task"), lambda: get_task(mt.task, m.task_files if files_ok else ()))
        if task is None:
            continue
        if mt.templates != "all":
            for j, name in enumerate(mt.templates):
                problems.attempt(("mixture", "tasks", i, "templates", j), lambda: task.template(name))
        problems.attempt(("mixture", "tasks", i, "task"), lambda: sample_records(task, 1))


def _check_forgetting(recipe: Recipe, problems: _Problems) -> dict:
    from .benchmarks.tasks import resolve_tasks

    f = recipe.forgetting
    tasks, limit = [], None
    for key, names in (("suite", f.suite), ("task", f.task)):
        for i, name in enumerate(names):
            found = problems.attempt(("forgetting", key, i), lambda: resolve_tasks(suite_names=[name]) if key == "suite"
                                     else resolve_tasks([name]))
            if found is not None:
                for t in found[0]:
                    if t.size is None and not t.subtasks:
                        problems.add(("forgetting", key, i), f"task '{t.name}': data file {t.source} not found")
                tasks += found[0]
                limit = limit or found[1]
    return {"tasks": list({t.name: t for t in tasks}.values()), "limit": f.limit or limit}


# ---------------------------------------------------------------------------- the plan

def plan(recipe: Recipe, rf: RecipeFile, facts: dict, fresh: bool = False, shared=None) -> list[str]:
    """What `run` will do with this recipe: stages, example counts, what is skipped or resumed, where
    results land. `shared`: a study arm's (pipeline.Shared), whose base model stages are the study's."""
    from .pipeline import recipe_stages

    run = RecipeRun(Path(recipe.out))
    stages = recipe_stages(recipe, shared)
    forgetting = facts.get("forgetting")
    total = 7 if forgetting else 5
    data = facts.get("data") or {}
    counts = data.get("counts", {})
    lines = [f"{rf.path}: no problems found (checked without loading a model)",
             f"  data root  {locations.describe()}",
             f"  model      {recipe.model.model}: {_model_state(recipe.model.model, facts['model'])}",
             "  stages"]

    def stage(n: int, name: str, where, detail: str, state: str = "") -> None:
        lines.append(f"  {n}/{total} {name:<16} -> {where}")
        lines.append(f"        {detail}" + (f"; {state}" if state else ""))

    if recipe.mixture is not None:
        m = recipe.mixture
        source = (f"mixture of {len(m.tasks)} tasks: {m.total} training examples, {m.validation_per_task} validation "
                  f"per task; test {counts.get('test', '?')} from {data.get('where', recipe.data.dataset)}")
    elif "hub" in data:
        source = f"{data['hub']} from the Hugging Face Hub (split sizes known after download)"
    else:
        avail = data.get("available", {})
        source = f"{recipe.data.task} from {data.get('where')}: " + ", ".join(
            f"{s} {counts.get(s, 0)}" + (f" of {avail[s]}" if avail.get(s, 0) > counts.get(s, 0) else "")
            for s in ("train", "validation", "test"))
    stage(1, "prepare", stages["prepare"][0], source, stage_state(stages["prepare"], fresh))
    ev = recipe.evaluate
    n_eval = counts.get(ev.split)
    n_eval = min(n_eval, ev.limit) if n_eval is not None and ev.limit else n_eval
    gen = (f"{n_eval if n_eval is not None else '?'} {ev.split} examples, batch {ev.batch_size}, up to "
           f"{ev.max_new_tokens} new tokens" + (f", beams {ev.num_beams}" if ev.num_beams > 1 else ""))
    stage(2, "evaluate base", stages["base"][0], gen,
          "shared by the study" if shared else stage_state(stages["base"], fresh, METRICS_FILE))
    t = recipe.train
    n_train = recipe.mixture.total if recipe.mixture is not None else counts.get("train")
    if t.max_steps:
        steps = f"{t.max_steps} steps"
    elif n_train:
        steps = f"{-(-n_train // (t.batch_size * t.grad_accum)) * t.epochs} steps (fewer if examples over {t.max_length} tokens are skipped)"
    else:
        steps = "steps known after prepare"
    stage(3, f"train ({t.method})", stages["train"][0],
          f"{n_train if n_train is not None else '?'} examples x {t.epochs} epoch(s), batch {t.batch_size}x{t.grad_accum}: {steps}; "
          f"checkpoint every {t.save_every}", stage_state(stages["train"], fresh))
    stage(4, "evaluate tuned", stages["tuned"][0], gen, stage_state(stages["tuned"], fresh, METRICS_FILE))
    stage(5, "compare", run.file("compare.md"), f"{recipe.compare.examples} side-by-side examples; always redone")
    if forgetting:
        from .benchmarks.tasks import example_count

        tasks, limit = forgetting["tasks"], forgetting["limit"]
        base_bench = shared.base_bench if shared else run.base_bench
        stage(6, "benchmark", f"{base_bench}, {run.tuned_bench}",
              f"{len(tasks)} tasks, {example_count(tasks, limit)} examples per model, scored {recipe.forgetting.scoring}",
              "; ".join(("base-bench: shared by the study" if shared and d == base_bench else _bench_state(d, len(tasks)))
                        for d in (base_bench, run.tuned_bench)))
        stage(7, "forgetting", run.file("forgetting.md"), "paired bootstrap and Holm-adjusted verdict per task")
    lines.append(f"  report     {run.report}")
    return lines


def stage_state(stage: tuple[Path, dict], fresh: bool, needs: str | None = None) -> str:
    """What `run` will do in a stage's directory: skip it, resume it, redo it or start it."""
    from .io.runs import completed

    d, config = stage
    if fresh and d.exists():
        return "redone (--fresh)"
    if completed(d, config) and (needs is None or (d / needs).is_file()):
        return "complete with these settings: skipped"
    ckpts = checkpoints(d)
    if ckpts:
        return f"resumes from {ckpts[-1]}"
    partial = d / PREDICTIONS_PARTIAL_FILE
    if partial.is_file():
        done = max(0, sum(1 for _ in partial.open(encoding="utf-8")) - 1)
        return f"resumes: {done} predictions already journaled"
    if (d / MANIFEST).is_file():
        return "redone (made with other settings)"
    return "runs"


def _model_state(name: str, resolved) -> str:
    from .models import REGISTRY, registered_cache

    if name in REGISTRY:
        cached = registered_cache(name)
        if (cached / "model.safetensors").is_file():
            return f"registered, cached at {cached}"
        return f"registered, converted once from {resolved.path} to {cached} on first use"
    return resolved.path + (f" + adapter {resolved.adapter}" if resolved.adapter else "")


def _bench_state(d: Path, n: int) -> str:
    done = len(list((d / "tasks").glob("*.json"))) if (d / "tasks").is_dir() else 0
    return f"{d.name}: {done} of {n} task results on disk (kept when made with these settings)" if done else f"{d.name}: runs"
