"""Two benchmark runs of the same suite: per-task change with a paired bootstrap interval."""
from __future__ import annotations

import sys

import json
import random
from pathlib import Path

from ..errors import UserError
from ..runs import atomic_write_text, write_json
from .harness import load_results
from .multimetric import FAMILIES, family_rows


def paired_bootstrap(base: list[float], tuned: list[float], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(tuned - base), resampling examples (the same ones for both models)."""
    diffs = [t - b for b, t in zip(base, tuned)]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return means[int(0.025 * reps)], means[min(int(0.975 * reps), reps - 1)]


def _method(run: dict) -> str:
    adapter = run.get("adapter")
    info = None
    for p in (Path(run.get("model", "")) / "tunebench_model.json",):
        if p.is_file():
            info = json.loads(p.read_text())
    if info:
        return {"lora": "LoRA", "full": "full fine-tuning"}.get(info.get("method"), info.get("method", "tuned"))
    return "LoRA" if adapter else "tuned"


def compare_bench(base_run: Path | str, tuned_run: Path | str, reps: int = 2000) -> dict:
    base, tuned = load_results(base_run), load_results(tuned_run)
    if base["format"] != tuned["format"]:
        diff = {k: (base["format"].get(k), tuned["format"].get(k)) for k in set(base["format"]) | set(tuned["format"])
                if base["format"].get(k) != tuned["format"].get(k)}
        raise UserError(f"{base_run} and {tuned_run} used different prompt formats {diff}: not comparable")
    tuned_tasks = {t["name"]: t for t in tuned["tasks"]}
    rows = []
    for bt in base["tasks"]:
        tt = tuned_tasks.get(bt["name"])
        if tt is None:
            continue
        be, te = base["_examples"][bt["name"]], tuned["_examples"][bt["name"]]
        ids = [i for i in be if i in te]
        b = [be[i]["score"] for i in ids]
        t = [te[i]["score"] for i in ids]
        lo, hi = paired_bootstrap(b, t, reps)
        delta = sum(t) / len(t) - sum(b) / len(b)
        families = family_rows(bt.get("metrics", {}), tt.get("metrics", {}))
        rows.append({"task": bt["name"], "metric": bt["primary_metric"], "n": len(ids), "families": families,
                     "base": sum(b) / len(b), "tuned": sum(t) / len(t), "delta": delta,
                     "ci95": [lo, hi], "significant": lo > 0 or hi < 0,
                     "direction": "worse" if hi < 0 else "better" if lo > 0 else "no significant change"})
    if not rows:
        raise UserError(f"{base_run} and {tuned_run} share no tasks")
    method = _method(tuned)
    worse = sum(r["direction"] == "worse" for r in rows)
    better = sum(r["direction"] == "better" for r in rows)
    summary = (f"{method}: {worse} of {len(rows)} tasks significantly worse, {better} significantly better "
               f"(95% paired bootstrap, {reps} resamples)")
    macro_b = sum(r["base"] for r in rows) / len(rows)
    macro_t = sum(r["tuned"] for r in rows) / len(rows)
    return {"base_run": str(base_run), "tuned_run": str(tuned_run), "base_model": base["model"],
            "tuned_model": tuned["model"], "method": method, "format": base["format"], "tasks": rows,
            "macro": {"base": macro_b, "tuned": macro_t, "delta": macro_t - macro_b}, "summary": summary}


def to_markdown(c: dict) -> str:
    lines = [f"# Forgetting: {c['base_model']} -> {c['tuned_model']}", "", f"**{c['summary']}**", "",
             "| task | metric | n | base | tuned | change | 95% CI | verdict |", "|---|---|---:|---:|---:|---:|---|---|"]
    for r in c["tasks"]:
        lo, hi = r["ci95"]
        lines.append(f"| {r['task']} | {r['metric']} | {r['n']} | {r['base']:.3f} | {r['tuned']:.3f} | "
                     f"{r['delta']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {r['direction']} |")
    m = c["macro"]
    lines += [f"| **macro average** | | | {m['base']:.3f} | {m['tuned']:.3f} | {m['delta']:+.3f} | | |", "",
              f"Prompt format: {json.dumps(c['format'])}"]
    lines += multimetric_markdown(c["tasks"])
    return "\n".join(lines) + "\n"


def _figure(tasks: list[dict], family: str) -> str:
    return next((r["figure"] for t in tasks for r in t.get("families", []) if r["family"] == family and r.get("figure")), "n/a")


def multimetric_markdown(tasks: list[dict]) -> list[str]:
    """One row per task, one column per metric family: base -> tuned of the family's headline figure."""
    present = [f for f in FAMILIES if any(r["family"] == f for t in tasks for r in t.get("families", []))]
    if not present:
        return []
    lines = ["", "## All metric families (base -> tuned)", "",
             "| task | " + " | ".join(f"{f} ({_figure(tasks, f)})" for f in present) + " |",
             "|---|" + "---|" * len(present)]
    for t in tasks:
        cells = []
        by = {r["family"]: r for r in t.get("families", [])}
        for f in present:
            r = by.get(f)
            if r is None or r.get("figure") is None or r.get("base") is None:
                cells.append("n/a")
            else:
                cells.append(f"{r['base']:.3g} -> {r['tuned']:.3g}")
        lines.append(f"| {t['task']} | " + " | ".join(cells) + " |")
    return lines


def write(c: dict, out_dir: Path | str, stem: str = "forgetting") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    write_json(out_dir / f"{stem}.json", c)
    atomic_write_text(out_dir / f"{stem}.md", to_markdown(c))
    return out_dir / f"{stem}.md", out_dir / f"{stem}.json"


def print_table(c: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=c["summary"])
    for col in ("task", "metric", "n", "base", "tuned", "change", "95% CI", "verdict"):
        table.add_column(col, justify="left" if col in ("task", "metric", "verdict") else "right")
    for r in c["tasks"]:
        style = "red" if r["direction"] == "worse" else "green" if r["direction"] == "better" else None
        table.add_row(r["task"], r["metric"], str(r["n"]), f"{r['base']:.3f}", f"{r['tuned']:.3f}", f"{r['delta']:+.3f}",
                      f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]", r["direction"], style=style)
    m = c["macro"]
    table.add_row("macro average", "", "", f"{m['base']:.3f}", f"{m['tuned']:.3f}", f"{m['delta']:+.3f}", "", "")
    Console(width=None if sys.stdout.isatty() else 150).print(table)
