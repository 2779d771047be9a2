"""The prompt-template library: tasks declared in YAML, rendered in Jinja's sandbox.

A task file names its input variables, a target template and several prompt templates
(FLAN style: many phrasings of one instruction). Built-in tasks live in `template_library/`;
a user's task file is loaded the same way and validated on load.
"""
from __future__ import annotations

import difflib
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from .errors import UserError

LIBRARY = Path(__file__).parent / "template_library"

# StrictUndefined: a template naming a variable the record lacks fails loudly instead of
# rendering an empty string into the prompt. No autoescape: prompts are plain text.
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@dataclass(frozen=True)
class Template:
    name: str
    prompt: str
    task: str

    def render(self, record: dict) -> str:
        return _render(self.prompt, record, f"template '{self.name}'")


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    inputs: tuple[str, ...]
    target: str
    templates: tuple[Template, ...]
    source: str

    def template(self, name: str) -> Template:
        for t in self.templates:
            if t.name == name:
                return t
        hint = difflib.get_close_matches(name, [t.name for t in self.templates], n=1)
        raise UserError(f"task '{self.name}': no template '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))

    def render_target(self, record: dict) -> str:
        return _render(self.target, record, f"task '{self.name}' target")

    @property
    def variables(self) -> set[str]:
        names = set(_variables(self.target, self.source))
        for t in self.templates:
            names |= _variables(t.prompt, self.source)
        return names

    def choose(self, names, mode: str, seed: int, n: int) -> list[Template]:
        """Template per example: all the same (fixed) or drawn with a seed (random)."""
        pool = list(self.templates) if names == "all" else [self.template(x) for x in names]
        if not pool:
            raise UserError(f"task '{self.name}': no templates selected")
        if mode == "fixed":
            return [pool[0]] * n
        rng = random.Random(seed)
        return [rng.choice(pool) for _ in range(n)]


def _variables(text: str, source: str) -> set[str]:
    try:
        return meta.find_undeclared_variables(_ENV.parse(text))
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


def load_task_file(path: Path | str) -> Task:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: task file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a task file is a mapping with keys task, inputs, target, templates")
    for key in ("task", "inputs", "target", "templates"):
        if key not in raw:
            raise UserError(f"{path}: missing key '{key}'")
    unknown = set(raw) - {"task", "description", "inputs", "target", "templates"}
    if unknown:
        raise UserError(f"{path}: unknown key '{sorted(unknown)[0]}'")
    if not isinstance(raw["templates"], list) or not raw["templates"]:
        raise UserError(f"{path}: 'templates' must be a non-empty list")
    templates, seen = [], set()
    for i, t in enumerate(raw["templates"]):
        if not isinstance(t, dict) or not t.get("name") or not isinstance(t.get("prompt"), str):
            raise UserError(f"{path}: templates[{i}] needs a 'name' and a 'prompt' string")
        if t["name"] in seen:
            raise UserError(f"{path}: templates[{i}]: duplicate template name '{t['name']}'")
        seen.add(t["name"])
        templates.append(Template(name=str(t["name"]), prompt=t["prompt"], task=str(raw["task"])))
    task = Task(
        name=str(raw["task"]),
        description=str(raw.get("description", "")),
        inputs=tuple(raw["inputs"]),
        target=str(raw["target"]),
        templates=tuple(templates),
        source=str(path),
    )
    task.variables  # parse every template now: syntax errors surface at load time
    _check_templates(task, path)
    return task


def _check_templates(task: Task, path: Path) -> None:
    """Refuse at load what would fail (or misbehave) at render time: variables nobody declared,
    and reaching for private attributes, the first step of every sandbox escape."""
    from jinja2 import nodes

    declared = set(task.inputs) | _variables(task.target, str(path))
    for t in task.templates:
        ast = _ENV.parse(t.prompt)
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            attr = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if isinstance(attr, str) and attr.startswith("_"):
                raise UserError(f"{path}: template '{t.name}' reaches for '{attr}': not allowed in the template sandbox")
        unknown = sorted(meta.find_undeclared_variables(ast) - declared - set(_ENV.globals))
        if unknown:
            raise UserError(f"{path}: template '{t.name}' uses '{unknown[0]}', which is not declared "
                            f"(inputs: {', '.join(task.inputs)}; target: {task.target})")


@lru_cache(maxsize=None)
def builtin_tasks() -> dict[str, Task]:
    tasks = {}
    for f in sorted(LIBRARY.glob("*.yaml")):
        t = load_task_file(f)
        tasks[t.name] = t
    return tasks


def get_task(name_or_path: str) -> Task:
    """A built-in task by name, or a user's task file by path."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_task_file(name_or_path)
    tasks = builtin_tasks()
    if name_or_path not in tasks:
        hint = difflib.get_close_matches(name_or_path, list(tasks), n=1)
        raise UserError(
            f"unknown task '{name_or_path}'" + (f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(tasks)})")
        )
    return tasks[name_or_path]


def find_template(name: str) -> Template:
    """`templates show NAME`: NAME is 'template' or 'task/template'."""
    if "/" in name:
        task, _, tname = name.partition("/")
        return get_task(task).template(tname)
    matches = [t for task in builtin_tasks().values() for t in task.templates if t.name == name]
    if not matches:
        all_names = [t.name for task in builtin_tasks().values() for t in task.templates]
        hint = difflib.get_close_matches(name, all_names, n=1)
        raise UserError(f"unknown template '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    return matches[0]
