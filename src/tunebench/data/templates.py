"""The prompt-template library: tasks declared in YAML, rendered in Jinja's sandbox.

A task file names its input variables, a target template and several prompt templates
(FLAN style: many phrasings of one instruction, some of them turning the task around with a
target of their own). Built-in tasks live in `template_library/` and also declare their
`source`: which files under the data root feed the training pool, how columns and labels
become template variables, and which benchmark rows must never be trained on. A user's task
file is loaded the same way and validated on load: a template naming a variable the task does
not declare is refused with the file, line and key.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from ..errors import UserError, suggest
from ..io import yamlfile
from ..io.yamlfile import Where

LIBRARY = Path(__file__).parent / "template_library"

# StrictUndefined: a template naming a variable the record lacks fails loudly instead of
# rendering an empty string into the prompt. No autoescape: prompts are plain text.
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)

_TASK_KEYS = ("task", "description", "inputs", "target", "variables", "source", "templates")
_TEMPLATE_KEYS = ("name", "prompt", "target", "inverted")
_SOURCE_KEYS = ("format", "columns", "id", "train", "validation", "test", "fields", "label", "reserve")


@dataclass(frozen=True)
class Template:
    name: str
    prompt: str
    task: str
    target: str = ""          # the task's target unless the template declares its own
    inverted: bool = False    # turns the task around (e.g. summary -> dialogue): opt-in for single-task data

    def render(self, record: dict) -> str:
        return _render(self.prompt, record, f"template '{self.name}'")

    def render_target(self, record: dict) -> str:
        return _render(self.target, record, f"template '{self.name}' target")

    @property
    def inputs(self) -> list[str]:
        """Variables the prompt reads, in a stable order (chat feeds a typed line to the first)."""
        return sorted(template_variables(self.prompt))


@dataclass(frozen=True)
class Source:
    """Where a built-in (or user) task's records come from. Paths are relative to the data root."""

    train: str
    validation: Optional[str] = None   # a file, or None when `holdout` rows are carved from train
    holdout: int = 0                    # last N usable train rows, kept for validation
    test: Optional[str] = None         # evaluation only: never read into a training pool
    format: Optional[str] = None       # jsonl, csv, tsv (default: from the suffix)
    columns: Optional[tuple[str, ...]] = None   # for files without a header row
    id: Optional[str] = None           # column holding a record id (default: the row number)
    fields: dict = field(default_factory=dict)  # template variable -> column
    label: Optional[dict] = None       # {column, as, map}: a label column verbalized into a variable
    reserve: tuple = ()                # ({benchmark, first}, ...): benchmark rows kept out of training
    base: Optional[str] = None         # folder that './' and '../' paths are relative to (a user's task file)

    def describe(self) -> str:
        parts = [self.train]
        if self.validation:
            parts.append(f"validation {self.validation}")
        elif self.holdout:
            parts.append(f"validation: last {self.holdout} train rows")
        if self.test:
            parts.append(f"test {self.test} (evaluation only)")
        for r in self.reserve:
            parts.append(f"never trains on the first {r['first']} of {r['benchmark']}")
        return "; ".join(parts)


@dataclass(frozen=True)
class PromptTask:
    name: str
    description: str
    inputs: tuple[str, ...]
    target: str
    templates: tuple[Template, ...]
    source: str                           # the YAML file the task came from
    data: Optional[Source] = None         # where its records come from (built-in tasks)
    variables_declared: tuple[str, ...] = ()

    def template(self, name: str) -> Template:
        for t in self.templates:
            if t.name == name:
                return t
        raise UserError(f"task '{self.name}': no template '{name}'" + suggest(name, [t.name for t in self.templates]))

    def render_target(self, record: dict) -> str:
        return _render(self.target, record, f"task '{self.name}' target")

    @property
    def forward(self) -> list[Template]:
        """The templates that do the task as declared (its target, not inverted): what `templates: all`
        means for single-task data, so that adding a FLAN-style variant never changes an existing recipe."""
        return [t for t in self.templates if t.target == self.target and not t.inverted]

    @property
    def variables(self) -> set[str]:
        names = set(_variables(self.target, self.source))
        for t in self.templates:
            names |= _variables(t.prompt, self.source) | _variables(t.target, self.source)
        return names

    def choose(self, names, mode: str, seed: int, n: int) -> list[Template]:
        """Template per example: all the same (fixed) or drawn with a seed (random)."""
        pool = self.forward if names == "all" else [self.template(x) for x in names]
        if not pool:
            raise UserError(f"task '{self.name}': no templates selected")
        if mode == "fixed":
            return [pool[0]] * n
        rng = random.Random(seed)
        return [rng.choice(pool) for _ in range(n)]


def template_variables(text: str) -> set[str]:
    """The variables a template reads (jinja2.TemplateSyntaxError if it is not a template)."""
    return meta.find_undeclared_variables(_ENV.parse(text))


def _variables(text: str, source: str) -> set[str]:
    try:
        return template_variables(text)
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f"{source}:{e.lineno}: template syntax error ({e.message})") from None


@lru_cache(maxsize=512)
def compiled(text: str) -> jinja2.Template:
    """Compile a template once: compiling costs far more than rendering."""
    return _ENV.from_string(text)


def _render(text: str, record: dict, what: str) -> str:
    try:
        return compiled(text).render(**record)
    except jinja2.UndefinedError as e:
        raise UserError(f"{what}: {e.message} (record fields: {', '.join(sorted(record))})") from None
    except jinja2.exceptions.SecurityError as e:
        raise UserError(f"{what}: refused by the template sandbox ({e})") from None
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f"{what}: template syntax error ({e.message})") from None


# ---------------------------------------------------------------------------- loading and validation

def load_task_file(path: Path | str) -> PromptTask:
    path = Path(path)
    raw, node = yamlfile.load(path, "task file")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a task file is a mapping with keys task, inputs, target, templates")
    where = Where(path, node)
    for key in ("task", "inputs", "target", "templates"):
        if key not in raw:
            raise UserError(f"{path}: missing key '{key}'")
    _no_unknown(raw, _TASK_KEYS, where)
    if not isinstance(raw["task"], str) or not raw["task"].strip():
        raise UserError(f"{where('task')}: must be a non-empty name")
    if not isinstance(raw["target"], str):
        raise UserError(f"{where('target')}: must be a template string")
    for key in ("inputs", "variables"):
        v = raw.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x.isidentifier() for x in v):
            raise UserError(f"{where(key)}: must be a list of variable names")
    if not isinstance(raw["templates"], list) or not raw["templates"]:
        raise UserError(f"{where('templates')}: must be a non-empty list")
    name = raw["task"]
    data = _source(raw["source"], where, path) if raw.get("source") is not None else None
    templates, seen = [], set()
    for i, t in enumerate(raw["templates"]):
        if not isinstance(t, dict) or not t.get("name") or not isinstance(t.get("prompt"), str):
            raise UserError(f"{where('templates', i)}: needs a 'name' and a 'prompt' string")
        _no_unknown(t, _TEMPLATE_KEYS, where, "templates", i)
        if t["name"] in seen:
            raise UserError(f"{where('templates', i, 'name')}: duplicate template name '{t['name']}'")
        if "target" in t and not isinstance(t["target"], str):
            raise UserError(f"{where('templates', i, 'target')}: must be a template string")
        if not isinstance(t.get("inverted", False), bool):
            raise UserError(f"{where('templates', i, 'inverted')}: must be true or false")
        seen.add(t["name"])
        templates.append(Template(name=str(t["name"]), prompt=t["prompt"], task=name,
                                  target=t.get("target", raw["target"]), inverted=t.get("inverted", False)))
    task = PromptTask(name=name, description=str(raw.get("description", "")), inputs=tuple(raw["inputs"]),
                target=raw["target"], templates=tuple(templates), source=str(path), data=data,
                variables_declared=tuple(raw.get("variables", [])))
    _check_variables(task, raw, where)
    _check_private_attributes(task, where)
    return task


def _check_private_attributes(task: PromptTask, where: Where) -> None:
    """Reaching for a private attribute (`__class__`, `__globals__`) is the first step of every sandbox
    escape: refused when the file is loaded; the sandbox still guards rendering."""
    from jinja2 import nodes

    for i, t in enumerate(task.templates):
        for key, text in (("prompt", t.prompt), ("target", t.target)):
            for node in _ENV.parse(text).find_all((nodes.Getattr, nodes.Getitem)):
                attr = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
                if isinstance(attr, str) and attr.startswith("_"):
                    raise UserError(f"{where('templates', i, key)}: reaches for '{attr}': not allowed in the template sandbox")


def _no_unknown(d: dict, known: tuple[str, ...], where: Where, *loc) -> None:
    for k in d:
        if k not in known:
            raise UserError(f"{where(*loc, k)}: unknown key" + suggest(k, known, f" (known: {', '.join(known)})"))


def _check_variables(task: PromptTask, raw: dict, where: Where) -> None:
    """Every variable a template names must be one the records provide: a typo fails at load, not mid-run."""
    if task.data is not None:
        declared = set(task.data.fields) | ({task.data.label["as"]} if task.data.label else set())
        for var in task.inputs:
            if var not in declared:
                raise UserError(f"{where('inputs')}: input '{var}' has no column in source.fields")
    else:
        declared = set(task.inputs) | set(task.variables_declared) | _variables(task.target, where("target"))
    checks = [(task.target, ("target",))]
    for i, t in enumerate(task.templates):
        checks.append((t.prompt, ("templates", i, "prompt")))
        if "target" in raw["templates"][i]:
            checks.append((t.target, ("templates", i, "target")))
    for text, loc in checks:
        for var in sorted(_variables(text, where(*loc))):
            if var not in declared:
                raise UserError(f"{where(*loc)}: unknown variable '{var}'" + suggest(
                    var, sorted(declared), f" (declared: {', '.join(sorted(declared))})"))


def _source(s, where: Where, path: Path) -> Source:
    if not isinstance(s, dict):
        raise UserError(f"{where('source')}: must be a mapping ({', '.join(_SOURCE_KEYS)})")
    _no_unknown(s, _SOURCE_KEYS, where, "source")
    if not isinstance(s.get("train"), str):
        raise UserError(f"{where('source')}: needs 'train', the file the training pool is read from")
    validation, holdout = s.get("validation"), 0
    if isinstance(validation, dict):
        if set(validation) != {"holdout"} or not isinstance(validation["holdout"], int) or validation["holdout"] < 1:
            raise UserError(f"{where('source', 'validation')}: a file path or {{holdout: N}} (N >= 1)")
        validation, holdout = None, validation["holdout"]
    elif validation is not None and not isinstance(validation, str):
        raise UserError(f"{where('source', 'validation')}: a file path or {{holdout: N}}")
    if s.get("test") is not None and s["test"] == s["train"]:
        raise UserError(f"{where('source', 'test')}: the test file is for evaluation only and cannot be the train file")
    if s.get("format") not in (None, "jsonl", "csv", "tsv"):
        raise UserError(f"{where('source', 'format')}: one of jsonl, csv, tsv")
    fields = s.get("fields", {})
    if not isinstance(fields, dict) or not all(isinstance(k, str) and k.isidentifier() and isinstance(v, str)
                                               for k, v in fields.items()):
        raise UserError(f"{where('source', 'fields')}: a mapping of template variable -> column name")
    label = s.get("label")
    if label is not None:
        if (not isinstance(label, dict) or set(label) != {"column", "as", "map"} or not isinstance(label["map"], dict)
                or not str(label["as"]).isidentifier()):
            raise UserError(f"{where('source', 'label')}: needs column, as (a variable name) and map (value -> text)")
        label = {"column": str(label["column"]), "as": str(label["as"]),
                 "map": {str(k): str(v) for k, v in label["map"].items()}}
    reserve = s.get("reserve", [])
    if not isinstance(reserve, list):
        raise UserError(f"{where('source', 'reserve')}: a list of {{benchmark: NAME, first: N}}")
    for i, r in enumerate(reserve):
        if (not isinstance(r, dict) or set(r) != {"benchmark", "first"} or not isinstance(r["first"], int)
                or r["first"] < 1):
            raise UserError(f"{where('source', 'reserve', i)}: needs benchmark (a task name) and first (N >= 1)")
    columns = s.get("columns")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise UserError(f"{where('source', 'columns')}: a list of column names")
    return Source(train=s["train"], validation=validation, holdout=holdout, test=s.get("test"), format=s.get("format"),
                  columns=tuple(columns) if columns else None, id=s.get("id"), fields=dict(fields), label=label,
                  reserve=tuple(reserve), base=None if path.parent == LIBRARY else str(path.parent))


@lru_cache(maxsize=None)
def builtin_tasks() -> dict[str, PromptTask]:
    tasks = {}
    for f in sorted(LIBRARY.glob("*.yaml")):
        t = load_task_file(f)
        tasks[t.name] = t
    return tasks


def all_tasks(task_files: list[str] = ()) -> dict[str, PromptTask]:
    """Built-in tasks plus those in the user's task files; a clash of names is refused."""
    tasks = dict(builtin_tasks())
    for f in task_files:
        t = load_task_file(f)
        if t.name in tasks:
            raise UserError(f"{f}: task '{t.name}' is already defined in {tasks[t.name].source}")
        tasks[t.name] = t
    return tasks


def get_task(name_or_path: str, task_files: list[str] = ()) -> PromptTask:
    """A built-in task by name (or one from `task_files`), or a user's task file by path."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_task_file(name_or_path)
    tasks = all_tasks(task_files) if task_files else builtin_tasks()
    if name_or_path not in tasks:
        raise UserError(f"unknown task '{name_or_path}'" + suggest(name_or_path, tasks, f" (known: {', '.join(tasks)})"))
    return tasks[name_or_path]


def find_template(name: str) -> Template:
    """`templates show NAME`: NAME is 'template' or 'task/template'."""
    if "/" in name:
        task, _, tname = name.partition("/")
        return get_task(task).template(tname)
    matches = [t for task in builtin_tasks().values() for t in task.templates if t.name == name]
    if not matches:
        all_names = [t.name for task in builtin_tasks().values() for t in task.templates]
        raise UserError(f"unknown template '{name}'" + suggest(name, all_names))
    return matches[0]
