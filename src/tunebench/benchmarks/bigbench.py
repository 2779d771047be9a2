"""BIG-bench JSON tasks, read as BIG-bench's own `json_task.py` defines them.

Format (BIG-bench docs and json_task.py): top-level `examples` with `input` and `target_scores`
(multiple choice: answer -> score, the highest is correct, other values give partial credit) and/or
`target` (a string or a list of acceptable strings). Optional prompt fields with BIG-bench's
defaults: task_prefix "", example_input_prefix "\\nQ: ", example_output_prefix "\\nA: ",
choice_prefix "\\n  choice: ", append_choices_to_input true (choices appended in a seeded
permutation of their sorted order), few_shot_example_separator "\\n", output_regex, stop_string.
A task.json without `examples` is a container whose subtasks sit in subfolders. Exact duplicate
examples are dropped, as BIG-bench does. Shots are other examples of the same task, each
followed by one of its targets.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from ..errors import UserError
from .tasks import Example, Task

DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
    "few_shot_example_separator": "\n",
}
MC_METRICS = {"multiple_choice_grade", "calibration_multiple_choice_brier_score", "macro_f1", "log_likelihood"}


def _bool(v) -> bool:
    # some task files write "false" as a string
    return v.strip().lower() not in ("false", "0", "no", "") if isinstance(v, str) else bool(v)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a BIG-bench task file is a JSON object")
    return data


def validate(data: dict, path: Path) -> str:
    """Check a task file with examples; returns its kind. One-line errors name the file and key."""
    for key in ("name", "description", "keywords", "metrics", "examples"):
        if key not in data:
            raise UserError(f"{path}: missing key '{key}'")
    if not isinstance(data["metrics"], list) or not data["metrics"]:
        raise UserError(f"{path}: key 'metrics' must be a non-empty list")
    if not isinstance(data["examples"], list) or not data["examples"]:
        raise UserError(f"{path}: key 'examples' must be a non-empty list")
    mc = any(m in MC_METRICS for m in data["metrics"])
    for i, ex in enumerate(data["examples"]):
        where = f"{path}: examples[{i}]"
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
            raise UserError(f"{where}: missing key 'input'")
        if "target_scores" not in ex and "target" not in ex:
            raise UserError(f"{where}: needs 'target_scores' or 'target'")
        if "target_scores" in ex:
            ts = ex["target_scores"]
            if not isinstance(ts, dict) or not ts:
                raise UserError(f"{where}: 'target_scores' must be a non-empty object (choice -> score)")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ts.values()):
                raise UserError(f"{where}: 'target_scores' values must be numbers")
            if "target" in ex and mc:
                targets = ex["target"] if isinstance(ex["target"], list) else [ex["target"]]
                if not any(t in ts for t in targets):
                    raise UserError(f"{where}: target {targets[0]!r} is not among the choices in 'target_scores'")
        elif mc:
            raise UserError(f"{where}: metric multiple_choice_grade needs 'target_scores'")
        if "target" in ex:
            t = ex["target"]
            if not (isinstance(t, str) or (isinstance(t, list) and t and all(isinstance(x, str) for x in t))):
                raise UserError(f"{where}: 'target' must be a string or a non-empty list of strings")
    return "multiple_choice" if mc else "generate"


def _dedupe(examples: list[dict]) -> list[dict]:
    seen, out = set(), []
    for ex in examples:
        key = json.dumps(ex, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def task_from_file(path: Path, name: str | None = None, category: str = "bigbench") -> Task:
    data = _read(path)
    kind = validate(data, path)
    fmt = {k: data.get(k, v) for k, v in DEFAULTS.items()}
    fmt["append_choices_to_input"] = _bool(fmt["append_choices_to_input"])
    examples = _dedupe(data["examples"])

    def load(shots: int, seed: int, perturb=None) -> list[Example]:
        return build_examples(examples, fmt, kind, shots, seed, path, perturb)

    return Task(name=name or f"bigbench/{data['name']}", family="bigbench", kind=kind, metrics=list(data["metrics"]),
                source=str(path), load=load, category=category, size=len(examples),
                stop_string=data.get("stop_string"), output_regex=data.get("output_regex"),
                preferred=data.get("preferred_score"))


def build_examples(raw: list[dict], fmt: dict, kind: str, shots: int, seed: int, path, perturb=None) -> list[Example]:
    """Examples with their contexts; `perturb(text, index)` changes the evaluated input only, never the shots."""
    rng = random.Random(seed)
    orders = []
    for ex in raw:  # choice order drawn once per example, so a perturbed copy lists them alike
        order = sorted(ex["target_scores"]) if "target_scores" in ex else []
        if order and fmt["append_choices_to_input"]:
            rng.shuffle(order)
        orders.append(order)

    def query(text: str, order: list[str]) -> str:
        if order and fmt["append_choices_to_input"]:
            text += fmt["choice_prefix"] + fmt["choice_prefix"].join(order)
        return fmt["example_input_prefix"] + text + fmt["example_output_prefix"]

    formatted = []
    for ex, order in zip(raw, orders):
        if "target" in ex:
            targets = ex["target"] if isinstance(ex["target"], list) else [ex["target"]]
        else:
            best = max(ex["target_scores"].values())
            targets = [next(k for k, v in ex["target_scores"].items() if v == best)]
        formatted.append((query(ex["input"], order), list(ex.get("target_scores", {})), targets, ex.get("target_scores")))
    if shots and len(formatted) < shots + 1:
        raise UserError(f"{path}: {len(formatted)} distinct examples, too few for {shots} shots")
    out = []
    for i, (q, choices, targets, scores) in enumerate(formatted):
        context = query(perturb(raw[i]["input"], i), orders[i]) if perturb else q
        if shots:
            pool = [j for j in range(len(formatted)) if j != i]
            picked = rng.sample(pool, shots)
            context = fmt["few_shot_example_separator"].join(
                formatted[j][0] + rng.choice(formatted[j][2]) for j in picked) + fmt["few_shot_example_separator"] + context
        context = fmt["task_prefix"] + context
        if kind == "multiple_choice":
            s = [float(scores[c]) for c in choices]
            gold = s.index(max(s))
            out.append(Example(id=str(i), context=context, choices=choices, gold=gold, choice_scores=s, targets=targets,
                               inputs=[raw[i]["input"]]))
        else:
            out.append(Example(id=str(i), context=context, targets=targets, inputs=[raw[i]["input"]]))
    return out


def load_bigbench_path(path: Path, prefix: str = "") -> list[Task]:
    """A task.json file, or every task.json with examples below a directory (one task each)."""
    path = Path(path)
    if path.is_file():
        return [task_from_file(path, name=_name(path.parent, path.parent.parent, prefix) if prefix else None)]
    if not path.is_dir():
        raise UserError(f"{path}: no such BIG-bench task file or directory")
    files = sorted(path.rglob("task.json"))
    tasks = []
    for f in files:
        data = _read(f)
        if "examples" not in data and any(p != f for p in f.parent.rglob("task.json")):
            continue  # a container: its subtasks are scored one by one
        tasks.append(task_from_file(f, name=_name(f.parent, path, prefix or "bigbench/")))
    if not tasks:
        raise UserError(f"{path}: no BIG-bench task.json files found")
    return tasks


def _name(folder: Path, root: Path, prefix: str) -> str:
    rel = folder.relative_to(root) if folder != root else Path(folder.name)
    return prefix + "_".join(rel.parts)


def bigbench_tasks(root: Path, prefix: str = "bigbench/") -> list[Task]:
    if not root.is_dir():
        return []
    return load_bigbench_path(root, prefix)
