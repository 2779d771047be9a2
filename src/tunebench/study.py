"""`tunebench study`: a grid of arms over one base recipe, run as one experiment.

A study file names a base recipe, overrides for every arm (`set`), and `factors`: an ordered
mapping factor -> level -> overrides. Every combination of levels is an arm (named by joining its
levels: `lora-single`), each a normal recipe run under OUT/<arm>/. What the arms must share is done
once (pipeline.shared_stages): the evaluation data in OUT/data, the base model's evaluation in
OUT/base and its benchmark run in OUT/base-bench. An arm may change how it trains, never what it is
measured on: overrides of the model, the evaluation, the forgetting suite or the test split are
refused. reports/study.py then turns the arms' files into study.md/json and the Pareto plot.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import Field, ValidationError

from .config import Recipe, RecipeFile, Section, parse_override
from .errors import UserError, UserErrors, suggest
from .io import yamlfile
from .io.yamlfile import Where, key_name

# recipes/multitask-lora.yaml's mixture (its other keys are MixtureConfig's defaults)
MIXTURE_TASKS = ["dialogsum", "samsum", "amazon_reviews", "sst2", "rte", "cb", "mrpc", "boolq", "cola", "qnli", "wic"]
DEFAULT_FACTORS = {"method": {"lora": {}, "full": {"train.method": "full"}},
                   "tasks": {"single": {}, "multi": {"mixture": {"tasks": MIXTURE_TASKS}}}}
# sections an arm may not change: every arm is measured with the same model, examples and suite
SHARED_SECTIONS = ("model", "evaluate", "forgetting", "data_root", "out", "name")
# the data keys an arm may change: they select training examples, never the test split
ARM_DATA_KEYS = ("train_limit", "validation_limit", "templates", "template_choice")
RESERVED = ("data", "base", "base-bench")  # the study's own directories
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudyArm(Section):
    name: str
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")


class StudyFile(Section):
    """A study file, as written."""

    name: str = "study"
    out: str = Field("runs/study", description="study directory; each arm runs in OUT/<arm>/")
    recipe: str = Field(description="the base recipe, relative to the study file")
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")
    factors: Optional[dict[str, dict[str, Optional[dict[str, Any]]]]] = None
    arms: list[StudyArm] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    pairs: Optional[list[tuple[str, str]]] = None


Setting = tuple[str, Any, Optional[str]]   # key, value, where it was written (None: --set)


@dataclass
class Arm:
    name: str
    levels: dict[str, str]          # factor -> level ({} for an extra arm)
    settings: list[Setting]         # the arm's own overrides (levels, then its `set`)


@dataclass
class Study:
    path: Path
    name: str
    out: Path
    recipe: Path
    settings: list[Setting]         # for every arm and the shared stages: the study's `set`, then --set
    arms: list[Arm]
    pairs: list[tuple[str, str]]
    factors: dict[str, list[str]] = field(default_factory=dict)

    def arm_settings(self, arm: Arm) -> list[Setting]:
        return [*self.settings, *arm.settings, ("out", str(self.out / arm.name), f"{self.path}: arm {arm.name}: out"),
                ("name", f"{self.name}-{arm.name}", f"{self.path}: arm {arm.name}: name")]


def load_study(path: Path | str, overrides: list[str] = ()) -> Study:
    """The study file validated, its arms expanded; every problem as one line naming file:line and key."""
    path = Path(path)
    raw, node = yamlfile.load(path, "study file")
    where = Where(path, node)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a study file is a mapping (name, out, recipe, set, factors, arms, drop, pairs)")
    try:
        spec = StudyFile.model_validate(raw)
    except ValidationError as e:
        raise UserErrors([_problem(where, err) for err in e.errors()]) from None
    settings: list[Setting] = [(k, v, where("set", k)) for k, v in spec.overrides.items()]
    out = Path(spec.out)
    for item in overrides:
        key, value = parse_override(item)
        if key == "out":
            out = Path(str(value))
        else:
            settings.append((key, value, None))
    factors = spec.factors if spec.factors is not None else DEFAULT_FACTORS
    arms = _grid(factors, where, spec.factors is None)
    for i, extra in enumerate(spec.arms):
        _name_ok(extra.name, where("arms", i, "name"))
        arms.append(Arm(extra.name, {}, [(k, v, where("arms", i, "set", k)) for k, v in extra.overrides.items()]))
    names = [a.name for a in arms]
    for i, name in enumerate(spec.drop):
        if name not in names:
            raise UserError(f"{where('drop', i)}: no arm '{name}'" + suggest(name, names, f" (arms: {', '.join(names)})"))
    arms = [a for a in arms if a.name not in spec.drop]
    _unique(arms, where)
    for a in arms:
        for key, value, origin in a.settings:
            _shared_untouched(key, value, origin, a.name)
    pairs = _pairs(spec.pairs, arms, where)
    return Study(path, spec.name, out, (path.parent / spec.recipe), settings, arms, pairs,
                 {f: list(levels) for f, levels in factors.items()})


def _problem(where: Where, err: dict) -> str:
    loc = tuple("set" if p == "overrides" else p for p in err["loc"])
    if err["type"] == "extra_forbidden":
        known = [f.alias or n for n, f in (StudyArm if "arms" in loc else StudyFile).model_fields.items()]
        return f"{where(*loc)}: unknown key" + suggest(str(loc[-1]), known, f" (known: {', '.join(known)})")
    return f"{where(*loc)}: {err['msg']}"


def _grid(factors: dict, where: Where, default: bool) -> list[Arm]:
    """Every combination of levels, in the file's order; an arm's settings are its levels' in factor order."""
    at = (lambda *loc: f"default factors: {key_name(loc)}") if default else where
    for f, levels in factors.items():
        if not levels:
            raise UserError(f"{at('factors', f)}: a factor needs at least one level")
        for level in levels:
            _name_ok(level, at("factors", f, level))
    arms = []
    for combo in itertools.product(*(list(levels.items()) for levels in factors.values())):
        levels = {f: level for f, (level, _) in zip(factors, combo)}
        settings = [(k, v, at("factors", f, level, k))
                    for f, (level, sets) in zip(factors, combo) for k, v in (sets or {}).items()]
        arms.append(Arm("-".join(levels.values()), levels, settings))
    return arms


def _name_ok(name: str, at: str) -> None:
    if not NAME.match(name) or name in RESERVED:
        why = f"'{name}' is the study's own directory" if name in RESERVED else \
            f"'{name}' cannot name a directory (letters, digits, '_', '-' and '.')"
        raise UserError(f"{at}: {why}")


def _unique(arms: list[Arm], where: Where) -> None:
    seen = set()
    for a in arms:
        if a.name in seen:
            raise UserError(f"{where('arms')}: two arms are named '{a.name}'")
        seen.add(a.name)


def _flat(key: str, value: Any):
    """Dotted keys of an override, a mapping's keys spelt out (`data: {test_limit: 5}` is data.test_limit)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _flat(f"{key}.{k}", v)
    else:
        yield key


def _shared_untouched(key: str, value: Any, origin: Optional[str], arm: str) -> None:
    """An arm changes how it is trained, never what it is measured on."""
    for k in _flat(key, value):
        parts = k.split(".")
        if parts[0] in SHARED_SECTIONS or (parts[0] == "data" and (len(parts) == 1 or parts[1] not in ARM_DATA_KEYS)):
            raise UserError(f"{origin or '--set ' + key}: arm '{arm}' changes {k}, which every arm shares (the base "
                            f"model's evaluation, the test split, the forgetting suite); set it in the study's `set` "
                            f"for every arm, or per arm only {', '.join('data.' + d for d in ARM_DATA_KEYS)}, train, "
                            "mixture, contamination")


def _pairs(given: Optional[list], arms: list[Arm], where: Where) -> list[tuple[str, str]]:
    """The arm-vs-arm comparisons: those given, else every pair of grid arms differing in one factor."""
    names = [a.name for a in arms]
    if given is not None:
        for i, pair in enumerate(given):
            for j, name in enumerate(pair):
                if name not in names:
                    raise UserError(f"{where('pairs', i, j)}: no arm '{name}'" + suggest(name, names, f" (arms: {', '.join(names)})"))
        return [tuple(p) for p in given]
    out = []
    for a, b in itertools.combinations([a for a in arms if a.levels], 2):
        if sum(a.levels[f] != b.levels[f] for f in a.levels) == 1:
            out.append((a.name, b.name))
    return out


# ---------------------------------------------------------------------------- checking and running

@dataclass
class Checked:
    """The base recipe (what the shared stages run) and each arm's recipe, checked whole."""
    base: Recipe
    base_file: RecipeFile
    arms: dict[str, tuple[Recipe, RecipeFile, dict]]


def check(study: Study) -> Checked:
    """Every arm's recipe checked without loading a model (preflight), every problem at once."""
    from .preflight import load_and_check

    problems: list[str] = []
    base, base_file, _ = _attempt(problems, lambda: load_and_check(study.recipe, (), study.settings))
    arms = {}
    for arm in study.arms:
        found = _attempt(problems, lambda: load_and_check(study.recipe, (), study.arm_settings(arm)))
        if found[0] is not None:
            arms[arm.name] = found
    if problems:
        raise UserErrors(list(dict.fromkeys(problems)))  # a problem of the base recipe is every arm's: once
    return Checked(base, base_file, arms)


def _attempt(problems: list[str], fn) -> tuple:
    try:
        return fn()
    except UserErrors as e:
        problems.extend(e.problems)
    except UserError as e:
        problems.append(str(e))
    return None, None, None


def shared_of(study: Study, base: Recipe):
    from .pipeline import Shared

    forgetting = base.forgetting is not None and base.forgetting.enabled
    return Shared(study.out / "data", study.out / "base", study.out / "base-bench" if forgetting else None)


def plan(study: Study, checked: Checked, fresh: bool = False) -> list[str]:
    """What `study` will do: the shared stages, then each arm's stages and whether they are skipped."""
    from .io.layout import METRICS_FILE
    from .pipeline import shared_stage_configs
    from .preflight import plan as recipe_plan
    from .preflight import stage_state

    shared = shared_of(study, checked.base)
    stages = shared_stage_configs(checked.base, shared)
    lines = [f"{study.path}: {len(study.arms)} arms over {study.recipe}, no problems found (checked without loading a model)",
             f"  shared     {shared.data}: {stage_state(stages['data'], fresh)}",
             f"             {shared.base}: base model evaluated once, {stage_state(stages['base'], fresh, METRICS_FILE)}"]
    if shared.base_bench is not None:
        lines.append(f"             {shared.base_bench}: base model benchmarked once")
    for arm in study.arms:
        recipe, rf, facts = checked.arms[arm.name]
        own = ", ".join(f"{k}={v}" for k, v, _ in arm.settings) or "the base recipe as it is"
        lines.append(f"  arm {arm.name}: {own}")
        lines += ["  " + line for line in recipe_plan(recipe, rf, facts, fresh, shared)[3:]]
    lines.append(f"  study      {study.out / 'study.md'}, study.json, pareto.png, report.html")
    return lines


def run(study: Study, fresh: bool = False) -> dict:
    """The shared stages, every arm (pipeline.run_recipe), then study.md/json, pareto.png, report.html."""
    import time

    from .io import processes
    from .pipeline import run_recipe, shared_stages
    from .reports import study as report

    checked = check(study)
    shared = shared_of(study, checked.base)
    shared_stages(checked.base, shared, fresh)
    for i, arm in enumerate(study.arms, 1):
        if processes.current().main:
            print(f"[tunebench] study: arm {i}/{len(study.arms)} {arm.name} -> {study.out / arm.name}", flush=True)
        t0 = time.time()
        run_recipe(checked.arms[arm.name][0], fresh=fresh, shared=shared)
        if processes.current().main:
            print(f"[tunebench] study: arm {arm.name} took {time.time() - t0:.0f} s", flush=True)
    if not processes.current().main:
        return {}
    s = report.build(study.out, [{"name": a.name, "levels": a.levels, "settings": {k: v for k, v, _ in a.settings}}
                                 for a in study.arms], study.pairs, shared, study.name)
    md, js = report.write(s, study.out)
    print(f"[tunebench] study -> {md}, {js}, {study.out / 'pareto.png'}")
    from .reports.html import write as write_report

    print(f"[tunebench] report -> {write_report([study.out], study.out / 'report.html')}")
    report.print_table(s)
    return s
