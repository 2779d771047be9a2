"""Multi-task training mixtures, FLAN style: many tasks, many templates, zero- and few-shot.

Mixing rates (FLAN 2021, T5): task i with n_i training records gets rate
    r_i = weight_i * min(n_i, cap) ** (1 / temperature)
normalised to sum to 1. temperature 1 is examples-proportional mixing with a cap (FLAN capped
at 3,000 per dataset, so a big dataset cannot drown the small ones); a higher temperature
flattens the rates towards equal. Counts are `total` split by the largest-remainder method, so
they are exact and do not depend on the seed; the seed picks the records, templates, which
examples are few-shot, and their exemplars.

Few-shot renderings (the Flan Collection found a mix of zero- and few-shot prompts helps in
every setting): a `fewshot_share` of each task's examples get 1..max_shots exemplars from the
same task's training pool (never the example itself), rendered with the same template, each
followed by its answer. Exemplars are dropped from the front until the prompt fits
`fewshot_max_words`, so a few-shot dialogue prompt may end up with fewer shots (or none): the
realised shot counts are what mixture.json reports.
"""
from __future__ import annotations

import math
import random
import sys
from collections import Counter
from typing import Mapping, Sequence

from ..config import CONTAMINATION_MIN_WORDS, CONTAMINATION_N, MixtureConfig
from ..errors import UserError, suggest
from .contamination import ScoredRows
from .templates import PromptTask, all_tasks

SHOT_SEPARATOR = "\n\n"


def rates(sizes: list[int], weights: list[float], cap: int | None, temperature: float) -> list[float]:
    raw = [w * (min(n, cap) if cap else n) ** (1.0 / temperature) for n, w in zip(sizes, weights)]
    total = sum(raw)
    return [r / total for r in raw]


def allocate(total: int, shares: list[float]) -> list[int]:
    """Integer counts summing to `total`, proportional to `shares` (largest remainder, ties to the earlier task)."""
    exact = [total * s for s in shares]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def resolve(cfg: MixtureConfig) -> list[tuple[PromptTask, object]]:
    known = all_tasks(cfg.task_files)
    out, seen = [], set()
    for entry in cfg.tasks:
        if entry.task not in known:
            raise UserError(f"mixture.tasks: unknown task '{entry.task}'" + suggest(entry.task, known,
                                                                                    f" (known: {', '.join(known)})"))
        if entry.task in seen:
            raise UserError(f"mixture.tasks: task '{entry.task}' is listed twice")
        seen.add(entry.task)
        out.append((known[entry.task], entry))
    return out


def _templates(task: PromptTask, entry, inverted: bool):
    if entry.templates != "all":
        return [task.template(n) for n in entry.templates]
    return [t for t in task.templates if inverted or not t.inverted]


def render(template, record: dict, shots: list[dict]) -> str:
    parts = [template.render(s) + "\n" + template.render_target(s) for s in shots]
    return SHOT_SEPARATOR.join(parts + [template.render(record)])


def build(cfg: MixtureConfig, n: int = CONTAMINATION_N, min_words: int = CONTAMINATION_MIN_WORDS,
          reserved: Mapping[str, Sequence[ScoredRows]] | None = None) -> tuple[list[dict], list[dict], dict]:
    """Training rows, validation rows and the plan (rates, pools) of a mixture.

    `reserved`: per task name, the benchmark rows its pool leaves out (`sources.pool`); computed
    above this layer by `tunebench.pipeline.build_mixture`, which is what callers normally use.
    """
    from .sources import pool

    resolved = resolve(cfg)
    reserved = reserved or {}
    pools = [pool(task, n, min_words, reserved.get(task.name, ())) for task, _ in resolved]
    shares = rates([len(p.train) for p in pools], [e.weight for _, e in resolved], cfg.cap, cfg.temperature)
    counts = allocate(cfg.total, shares)
    train, validation, plan = [], [], []
    for (task, entry), p, share, count in zip(resolved, pools, shares, counts):
        templates = _templates(task, entry, cfg.inverted)
        if not templates:
            raise UserError(f"mixture.tasks: task '{task.name}' has no templates left (inverted: false?)")
        # one generator per task: adding a task to the mixture does not reshuffle the others
        rng = random.Random(f"{cfg.seed}:{task.name}")
        train += _sample(task, p.train, templates, count, cfg, rng)
        eval_template = task.forward[0] if task.forward else templates[0]
        for r in p.validation[: cfg.validation_per_task]:
            validation.append(_row(task, r, eval_template, r["_id"], []))
        plan.append({"task": task.name, "pool": len(p.train), "capped": min(len(p.train), cfg.cap) if cfg.cap else len(p.train),
                     "weight": entry.weight, "rate": share, "planned": count,
                     "templates_available": [t.name for t in templates], "skipped": p.skipped, "files": p.files,
                     "source": task.source})
    random.Random(cfg.seed).shuffle(train)
    return train, validation, {"config": cfg.model_dump(), "tasks": plan}


def _sample(task: PromptTask, records: list[dict], templates, count: int, cfg: MixtureConfig, rng: random.Random) -> list[dict]:
    picks, epoch = [], 0
    while len(picks) < count:
        # without replacement until the pool runs out, then a fresh pass (small tasks repeat, as in FLAN)
        order = list(range(len(records)))
        rng.shuffle(order)
        picks += [(i, epoch) for i in order[: count - len(picks)]]
        epoch += 1
    few = set(rng.sample(range(count), round(cfg.fewshot_share * count))) if len(records) > 1 else set()
    rows = []
    for k, (i, ep) in enumerate(picks):
        rec, tmpl = records[i], rng.choice(templates)
        shots = []
        if k in few:
            want = rng.randint(1, cfg.max_shots)
            shots = [records[j] for j in _distinct(rng, len(records), i, min(want, len(records) - 1))]
            while shots and len(render(tmpl, rec, shots).split()) > cfg.fewshot_max_words:
                shots = shots[1:]
        rid = rec["_id"] + (f"~{ep}" if ep else "")
        rows.append(_row(task, rec, tmpl, rid, shots))
    return rows


def _distinct(rng: random.Random, n: int, exclude: int, k: int) -> list[int]:
    """k distinct indices below n other than `exclude`, without listing a big pool."""
    out: list[int] = []
    while len(out) < k:
        j = rng.randrange(n)
        if j != exclude and j not in out:
            out.append(j)
    return out


def _row(task: PromptTask, rec: dict, tmpl, rid: str, shots: list[dict]) -> dict:
    completion = tmpl.render_target(rec)
    return {"id": rid, "task": task.name, "prompt": render(tmpl, rec, shots), "completion": completion,
            "references": [completion], "template": tmpl.name, "shots": len(shots),
            "shot_ids": [s["_id"] for s in shots], "source": rec["_source"]}


def realised(train: list[dict], validation: list[dict], plan: dict, dropped: dict | None = None) -> dict:
    """What the training set holds, per task: examples, templates, shot counts (after any contamination drop)."""
    dropped = dropped or {}
    tasks = []
    for p in plan["tasks"]:
        rows = [r for r in train if r["task"] == p["task"]]
        ids = {r["source"] for r in rows}  # the record a row was made from (its id adds ~N to a repeat)
        tasks.append({**p, "examples": len(rows), "unique_records": len(ids), "repeats": len(rows) - len(ids),
                      "share": len(rows) / len(train) if train else 0.0,
                      "templates": dict(sorted(Counter(r["template"] for r in rows).items())),
                      "shots": {str(k): v for k, v in sorted(Counter(r["shots"] for r in rows).items())},
                      "validation": sum(r["task"] == p["task"] for r in validation),
                      "dropped_contaminated": dropped.get(p["task"], 0)})
    shots = Counter(r["shots"] for r in train)
    return {**plan, "tasks": tasks,
            "totals": {"examples": len(train), "validation": len(validation), "zero_shot": shots.get(0, 0),
                       "few_shot": len(train) - shots.get(0, 0),
                       "shots": {str(k): v for k, v in sorted(shots.items())}}}


def print_table(m: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = m["config"]
    table = Table(title=f"mixture: {m['totals']['examples']} training examples, cap {c['cap']}, temperature "
                        f"{c['temperature']}, few-shot share {c['fewshot_share']} (up to {c['max_shots']} shots)")
    for col in ("task", "pool", "rate", "examples", "templates", "shots 0/1/2/...", "dropped", "validation"):
        table.add_column(col, justify="left" if col in ("task", "templates") else "right")
    width = max([int(k) for t in m["tasks"] for k in t["shots"]] + [0])
    for t in m["tasks"]:
        table.add_row(t["task"], str(t["pool"]), f"{t['rate']:.3f}", str(t["examples"]),
                      " ".join(f"{k}:{v}" for k, v in t["templates"].items()),
                      "/".join(str(t["shots"].get(str(k), 0)) for k in range(width + 1)),
                      str(t["dropped_contaminated"]), str(t["validation"]))
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)


def summary(m: dict, examples: dict, prepared: dict) -> dict:
    """The prepare stage's summary (run.json, report) for a mixture: same keys as a single-task one."""
    def per_template(rows):
        return dict(sorted(Counter(f"{r['task']}/{r['template']}" if "task" in r else r["template"] for r in rows).items()))

    return {**prepared, "source": f"mixture of {len(m['tasks'])} tasks (mixture.json); test: {prepared['source']}",
            "task": "mixture", "counts": {s: len(v) for s, v in examples.items()},
            "templates": {s: per_template(v) for s, v in examples.items()},
            "mixture": {t["task"]: t["examples"] for t in m["tasks"]}, "shots": m["totals"]["shots"]}
