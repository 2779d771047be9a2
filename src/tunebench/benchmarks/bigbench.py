"""BIG-bench JSON tasks, and the two conventions they can be scored by.

The file format (BIG-bench's `api/json_task.py`): top-level `examples`, each with `input` and
`target_scores` (multiple choice: answer -> score; the highest is right, other values give partial
credit) and/or `target` (a string or a list of acceptable strings); optional prompt fields with
BIG-bench's defaults (DEFAULTS). A task.json without `examples` is a container whose subtasks sit
in the subfolders right below it (sorted); it is scored as the mean of its subtasks' scores.

`--scoring bigbench` (the default for these files) builds prompts, picks examples and scores
them as BIG-bench 1.0.0's own code does; every rule below names the function it reproduces:
- `default_format_fn`: choices are appended to the input in the order
  `np.random.RandomState(seed).permutation(sorted(target_scores))`, the generator re-seeded for
  every example (also for generative tasks whose examples carry target_scores), whenever
  `append_choices_to_input` is truthy in Python's sense (so the string "false" appends them);
  the input becomes input_prefix + input + output_prefix; the scored choices are the keys of
  target_scores in file order.
- `JsonTask.load_and_process_json`: duplicates are dropped by `json.dumps` equality (key order
  counts); the default output regex applies when a task sets neither `output_regex` nor `stop_string`.
- `make_nshot_dataset`: with a limit below the task size, 0-shot examples are drawn by
  `RandomState(seed).choice(samples, limit, replace=False)` (select: seeded); with shots, the
  queries are such a draw (of all examples when there is no limit), each followed by its shots,
  drawn from the other examples, each shot followed by one of its targets.
- container limits: `limit // number of subtasks` per subtask.
The seed defaults to BIG-bench's 42. Scoring and generation live in scoring.py and harness.py.

`--scoring lm-eval` keeps the conventions of tunebench before BIG-bench parity (what the
lm-evaluation-harness parity bench W3 uses): choices appended in a `random.Random(seed)` shuffle,
"false" read as false, a space moved from the context to each choice.
"""
from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import UserError, closest
from .tasks import BenchmarkTask, Example, subtask_key

DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
    "few_shot_example_separator": "\n",
}
# json_task.py's metric lists; multiple_choice_grade brings Brier score and ECE along, as there
GENERATIVE_METRICS = ["bleu", "bleurt", "exact_str_match", "case_insensitive_str_match", "sequence_f1",
                      "numeric_match_with_0_1_relative_error", "rouge"]
SCORING_METRICS = ["log_likelihood"]
MC_METRICS = ["multiple_choice_grade", "calibration_multiple_choice_brier_score", "expected_calibration_error",
              "weighted_log_probabilities", "weighted_probabilities", "macro_f1"]
KNOWN_METRICS = GENERATIVE_METRICS + SCORING_METRICS + MC_METRICS
DEFAULT_REGEX = r"[^\.\?\!\;\n]+"
MAX_LENGTH = 256              # BIGBenchHFModel's max_length: new tokens generated, and characters kept
# json_task.py's SCORE_RANGES: [low, high] of each preferred score (multiple_choice_grade's low is chance)
SCORE_RANGES = {"bleu": (0.0, 100.0), "sequence_f1": (0.0, 100.0), "bleurt": (-0.1, 1.1),
                "calibration_multiple_choice_brier_score": (0.0, 1.0), "expected_calibration_error": (0.0, 1.0),
                "exact_str_match": (0.0, 1.0), "case_insensitive_str_match": (0.0, 1.0), "log_likelihood": (-10, 0.0),
                "multiple_choice_grade": (0.0, 1.0), "numeric_match_with_0_1_relative_error": (0.0, 1.0),
                "rouge1": (0.0, 100.0), "rouge2": (0.0, 100.0), "rougeLsum": (0.0, 100.0),
                "weighted_log_probabilities": (-10, 0.0), "weighted_probabilities": (-1, 1), "macro_f1": (0.0, 1.0)}


@dataclass
class Spec:
    """One BIG-bench task file with examples, as BIG-bench reads it."""
    path: Path
    name: str                       # the file's own `name`
    metrics: list[str]
    preferred: str
    fields: dict                    # the prompt fields, BIG-bench's defaults filled in, values as written
    examples: list[dict]            # distinct examples in file order
    absolute_normalization: bool = False
    stop_string: str | None = None
    output_regex: str | None = None
    low_score: float = 0.0
    high_score: float = 1.0

    @property
    def mc_metrics(self) -> list[str]:
        m = [x for x in self.metrics if x in MC_METRICS]
        if "multiple_choice_grade" in m:
            m += [x for x in ("calibration_multiple_choice_brier_score", "expected_calibration_error") if x not in m]
        return m

    @property
    def generative_metrics(self) -> list[str]:
        return [x for x in self.metrics if x in GENERATIVE_METRICS]

    @property
    def scoring_metrics(self) -> list[str]:
        return [x for x in self.metrics if x in SCORING_METRICS]


def _lenient_bool(v) -> bool:
    # the lm-eval convention reads "false" written as a string as false
    return v.strip().lower() not in ("false", "0", "no", "") if isinstance(v, str) else bool(v)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a leading BOM is not JSON
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
    unknown = [m for m in data["metrics"] if m not in KNOWN_METRICS]
    if unknown:
        hint = closest(unknown[0], KNOWN_METRICS)
        raise UserError(f"{path}: metric {unknown[0]!r} is not a BIG-bench JSON-task metric ("
                        + (f"did you mean '{hint}'? " if hint else "") + f"known: {', '.join(KNOWN_METRICS)})")
    if not isinstance(data["examples"], list) or not data["examples"]:
        raise UserError(f"{path}: key 'examples' must be a non-empty list")
    mc = any(m in MC_METRICS for m in data["metrics"])
    text = any(m in GENERATIVE_METRICS + SCORING_METRICS for m in data["metrics"])
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
            if mc and max(ts.values()) <= 0:  # task_metrics.measure_multiple_choice_grade adds the picked choice's score
                raise UserError(f"{where}: 'target_scores' has no positive value (BIG-bench's multiple_choice_grade "
                                "would score it 0 or less whatever the model picks)")
            if "target" not in ex and ((len(ts) == 1 and max(ts.values()) == 0)
                                       or (len(ts) > 1 and max(ts.values()) <= min(ts.values()))):
                raise UserError(f"{where}: 'target_scores' has no correct choice (no score above the others)")
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
        elif text:
            raise UserError(f"{where}: metric {next(m for m in data['metrics'] if m not in MC_METRICS)} needs 'target'")
    return "multiple_choice" if mc else "generate"


def _dedupe(examples: list[dict]) -> list[dict]:
    seen, out = set(), []
    for ex in examples:
        key = json.dumps(ex)  # BIG-bench's key: the same content in another key order is not a duplicate
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def read_spec(path: Path, data: dict | None = None) -> tuple[Spec, str]:
    data = data if data is not None else _read(path)
    kind = validate(data, path)
    preferred = data.get("preferred_score") or ("multiple_choice_grade" if kind == "multiple_choice" else data["metrics"][0])
    if preferred == "rouge":
        raise UserError(f"{path}: preferred_score 'rouge' is ambiguous: use rouge1, rouge2 or rougeLsum")
    if preferred not in SCORE_RANGES:
        raise UserError(f"{path}: preferred_score '{preferred}' is not a BIG-bench score")
    examples = _dedupe(data["examples"])
    low, high = SCORE_RANGES[preferred]
    if preferred == "multiple_choice_grade":  # chance: the mean target score of a uniform pick
        low = sum(sum(e["target_scores"].values()) / len(e["target_scores"]) for e in examples) / len(examples)
    stop, regex = data.get("stop_string"), data.get("output_regex")
    if stop is None and regex is None:
        regex = DEFAULT_REGEX
    return Spec(path=path, name=data["name"], metrics=list(data["metrics"]), preferred=preferred,
                fields={k: data.get(k, v) for k, v in DEFAULTS.items()}, examples=examples,
                absolute_normalization=bool(data.get("absolute_normalization", False)), stop_string=stop,
                output_regex=regex, low_score=low, high_score=high), kind


# ---------------------------------------------------------------------------- the bigbench convention

def format_example(ex: dict, fields: dict, seed: int, perturbed_input: str | None = None) -> dict:
    """BIG-bench's `default_format_fn`: the prompt, the choices in file order, the targets. The
    example's other keys stay, as there: `make_nshot_dataset` tells examples apart by them."""
    text = ex["input"] if perturbed_input is None else perturbed_input
    out = copy.deepcopy(ex)
    out["input"] = text
    if "target_scores" in ex:
        rng = np.random.RandomState(seed=seed)
        if fields["append_choices_to_input"]:  # Python truthiness, as BIG-bench tests it
            order = rng.permutation(sorted(ex["target_scores"]))
            out["input"] = text + fields["choice_prefix"] + fields["choice_prefix"].join(order)
        if "target" not in ex:
            best = max(ex["target_scores"].values())
            out["target"] = [k for k, v in ex["target_scores"].items() if v == best][0]
        out["choice"] = list(ex["target_scores"])
    out["input"] = fields["example_input_prefix"] + out["input"] + fields["example_output_prefix"]
    if not isinstance(out["target"], list):
        out["target"] = [out["target"]]
    return out


def nshot(samples: list[dict], shots: int, seed: int, separator: str, limit: int | None) -> list[tuple[int, str]]:
    """BIG-bench's `make_nshot_dataset` as (index of the query sample, its input with shots).

    `limit` is `max_examples`: None keeps every sample (0-shot: in order; with shots: BIG-bench
    still draws the queries in a seeded order)."""
    rng = np.random.RandomState(seed=seed)
    n = len(samples)
    if shots == 0:
        if limit and limit < n:
            return [(int(i), samples[i]["input"]) for i in rng.choice(n, limit, replace=False)]
        return [(i, s["input"]) for i, s in enumerate(samples)]
    if n < shots + 1:
        raise ValueError(f"{n} distinct examples, too few for {shots} shots")
    out = []
    for q in rng.choice(n, limit or n, replace=False):  # JsonTask passes max_examples = num_examples
        valid = [j for j in range(n) if samples[j] != samples[q]]
        picked = rng.choice(len(valid), shots, replace=False)
        context = separator.join(samples[valid[j]]["input"] + rng.choice(samples[valid[j]]["target"]) for j in picked)
        out.append((int(q), context + separator + samples[q]["input"]))
    return out


def bigbench_examples(spec: Spec, shots: int, seed: int, limit: int | None, select: str,
                      perturb=None) -> list[Example]:
    """Examples as BIG-bench builds them. select 'seeded' is BIG-bench's draw of `limit` examples;
    'first' keeps the first `limit` in file order, each with the shots a run over every example
    gives it. `perturb(text, index)` changes an example's own input, never its shots or choices."""
    fields = spec.fields
    samples = [format_example(ex, fields, seed) for ex in spec.examples]
    try:
        queries = nshot(samples, shots, seed, fields["few_shot_example_separator"], limit if select == "seeded" else None)
    except ValueError as e:
        raise UserError(f"{spec.path}: {e}") from None
    if select == "first":
        queries = sorted(queries)[:limit] if limit else sorted(queries)
    out = []
    for i, context in queries:
        ex, s = spec.examples[i], samples[i]
        if perturb is not None:
            own = format_example(ex, fields, seed, perturb(ex["input"], i))["input"]
            context = context[: len(context) - len(s["input"])] + own
        ts = ex.get("target_scores")
        choices = s.get("choice", [])
        scores = [float(ts[c]) for c in choices] if ts else None
        out.append(Example(id=str(i), context=fields["task_prefix"] + context, choices=choices,
                           gold=scores.index(max(scores)) if scores else None, choice_scores=scores,
                           targets=s["target"], inputs=[ex["input"]]))
    return out


# ---------------------------------------------------------------------------- the lm-eval convention

def lm_eval_examples(spec: Spec, kind: str, shots: int, seed: int, perturb=None) -> list[Example]:
    """Contexts as tunebench built them before BIG-bench parity (the lm-eval convention)."""
    fmt = dict(spec.fields)
    fmt["append_choices_to_input"] = _lenient_bool(fmt["append_choices_to_input"])
    raw = spec.examples
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
        raise UserError(f"{spec.path}: {len(formatted)} distinct examples, too few for {shots} shots")
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
            out.append(Example(id=str(i), context=context, choices=choices, gold=s.index(max(s)), choice_scores=s,
                               targets=targets, inputs=[raw[i]["input"]]))
        else:
            out.append(Example(id=str(i), context=context, targets=targets, inputs=[raw[i]["input"]]))
    return out


# ---------------------------------------------------------------------------- tasks and containers

def task_from_file(path: Path, name: str | None = None, category: str = "bigbench", data: dict | None = None) -> BenchmarkTask:
    data = data if data is not None else _read(path)
    spec, kind = read_spec(path, data)

    def load(shots: int, seed: int, perturb=None) -> list[Example]:
        return lm_eval_examples(spec, kind, shots, seed, perturb)

    return BenchmarkTask(name=name or f"bigbench/{spec.name}", family="bigbench", kind=kind, metrics=list(spec.metrics),
                source=str(path), load=load, category=category, size=len(spec.examples),
                # the file's own fields, as the lm-eval convention reads them (the bigbench one reads `spec`,
                # which fills in BIG-bench's defaults: its output regex, a preferred score)
                stop_string=data.get("stop_string"), output_regex=data.get("output_regex"),
                preferred=data.get("preferred_score"), bigbench=spec)


def _is_container(data: dict) -> bool:
    return "examples" not in data


def _subtask_files(folder: Path) -> list[Path]:
    # json_utils.get_subdir_json_file_paths: task.json one level down, sorted by path
    return sorted(p / "task.json" for p in folder.iterdir() if p.is_dir() and (p / "task.json").is_file())


def container_from_file(path: Path, name: str, data: dict, category: str = "bigbench") -> BenchmarkTask:
    """A task.json without examples: its subtasks, scored one by one and averaged (BIG-bench's
    `add_aggregate_scores`)."""
    files = _subtask_files(path.parent)
    if not files:
        raise UserError(f"{path}: a task without 'examples' needs subtask folders with a task.json each")
    subs = []
    for f in files:
        sub = _read(f)
        if _is_container(sub):
            raise UserError(f"{f}: a subtask must have 'examples' (nested containers are not BIG-bench tasks)")
        subs.append(task_from_file(f, name=f"{name}:{f.parent.name}", category=category, data=sub))
    kinds = {t.kind for t in subs}
    return BenchmarkTask(name=name, family="bigbench", kind=kinds.pop() if len(kinds) == 1 else "mixed",
                metrics=sorted({m for t in subs for m in t.metrics}), source=str(path), load=_container_load(subs),
                category=category, size=sum(t.size for t in subs), subtasks=subs,
                preferred=data.get("preferred_score"))


def _container_load(subs: list[BenchmarkTask]):
    """The lm-eval convention's examples of every subtask, ids prefixed with the subtask's folder."""
    def load(shots: int, seed: int, perturb=None) -> list[Example]:
        return [replace(e, id=f"{subtask_key(s)}:{e.id}") for s in subs for e in s.load(shots, seed, perturb)]
    return load


def load_bigbench_path(path: Path, prefix: str = "") -> list[BenchmarkTask]:
    """A task.json file, or every task below a directory: a folder's task.json is one task (a
    container when it has no examples), and folders inside a task's folder belong to it."""
    path = Path(path)
    if path.is_file():
        data = _read(path)
        return [_task(path, _name(path.parent, path.parent.parent, prefix) if prefix else f"bigbench/{data.get('name')}", data)]
    if not path.is_dir():
        raise UserError(f"{path}: no such BIG-bench task file or directory")
    files = sorted(path.rglob("task.json"))
    folders = {f.parent for f in files}
    top = [f for f in files if not any(a in folders for a in f.parent.parents if a == path or path in a.parents)]
    tasks = [_task(f, _name(f.parent, path, prefix or "bigbench/")) for f in top]
    if not tasks:
        raise UserError(f"{path}: no BIG-bench task.json files found")
    return tasks


def _task(path: Path, name: str, data: dict | None = None) -> BenchmarkTask:
    data = data if data is not None else _read(path)
    return container_from_file(path, name, data) if _is_container(data) else task_from_file(path, name=name, data=data)


def _name(folder: Path, root: Path, prefix: str) -> str:
    rel = folder.relative_to(root) if folder != root else Path(folder.name)
    return prefix + "_".join(rel.parts)


def bigbench_tasks(root: Path, prefix: str = "bigbench/") -> list[BenchmarkTask]:
    """Every task below the data root's bigbench/ folder; a container's subtasks also under names
    of their own (bigbench/hhh_alignment_harmless), marked as belonging to the container."""
    if not root.is_dir():
        return []
    out = []
    for t in load_bigbench_path(root, prefix):
        out.append(t)
        out += [replace(s, name=_name(Path(s.source).parent, root, prefix), container=t.name) for s in t.subtasks]
    return out
