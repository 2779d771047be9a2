"""Two benchmark runs of the same suite: per-task change with a paired bootstrap interval."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..benchmarks.harness import load_examples, load_results
from ..errors import UserError
from ..io.layout import RUN_MODEL_FILE
from ..metrics.helm import FAMILIES, family_rows
from ..metrics.stats import bootstrap_test, holm
from .files import write_md_json

ALPHA = 0.05


def _verdict(significant: bool, delta: float) -> str:
    return "no significant change" if not significant else "worse" if delta < 0 else "better"


def _method(run: dict) -> str:
    adapter = run.get("adapter")
    info = None
    p = Path(run.get("model", "")) / RUN_MODEL_FILE
    if p.is_file():
        info = json.loads(p.read_text())
    if info:
        return {"lora": "LoRA", "full": "full fine-tuning"}.get(info.get("method"), info.get("method", "tuned"))
    return "LoRA" if adapter else "tuned"


def refuse_incomparable(a: dict, b: dict, a_run, b_run) -> None:
    """Two benchmark runs are compared only when everything that changes the numbers is the same:
    prompt format (chat template, shots, seed, limit, selection), precision and scoring convention."""
    fa, fb = dict(a["format"]), dict(b["format"])
    # runs written before precision joined the format recorded it beside
    fa.setdefault("precision", a.get("precision")), fb.setdefault("precision", b.get("precision"))
    if fa.get("scoring") != fb.get("scoring"):
        raise UserError(f"{a_run} and {b_run} were scored with different conventions ({fa.get('scoring')} vs "
                        f"{fb.get('scoring')}): not comparable; run both with the same --scoring")
    if fa != fb:
        diff = {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
        raise UserError(f"{a_run} and {b_run} used different prompt formats or precision {diff}: not comparable")


def compare_bench(base_run: Path | str, tuned_run: Path | str, reps: int = 2000) -> dict:
    base, tuned = load_results(base_run), load_results(tuned_run)
    refuse_incomparable(base, tuned, base_run, tuned_run)
    base_examples, tuned_examples = load_examples(base_run), load_examples(tuned_run)
    tuned_tasks = {t["name"]: t for t in tuned["tasks"]}
    rows = []
    for bt in base["tasks"]:
        tt = tuned_tasks.get(bt["name"])
        if tt is None:
            continue
        be, te = base_examples[bt["name"]], tuned_examples[bt["name"]]
        ids = [i for i in be if i in te]
        b = [be[i]["score"] for i in ids]
        t = [te[i]["score"] for i in ids]
        # a BIG-bench container's examples carry weights: its score is the mean of its subtasks' scores
        w = [be[i].get("weight", 1.0) for i in ids]
        lo, hi, p = bootstrap_test(b, t, reps, weights=w)
        mean_b, mean_t = (sum(x * y for x, y in zip(w, b)) / sum(w), sum(x * y for x, y in zip(w, t)) / sum(w))
        delta = mean_t - mean_b
        families = family_rows(bt.get("metrics", {}), tt.get("metrics", {}))
        rows.append({"task": bt["name"], "metric": bt["primary_metric"], "n": len(ids), "families": families,
                     "base": mean_b, "tuned": mean_t, "delta": delta, "ci95": [lo, hi], "p_value": p,
                     "significant": p <= ALPHA, "direction": _verdict(p <= ALPHA, delta)})
    if not rows:
        raise UserError(f"{base_run} and {tuned_run} share no tasks")
    for r, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        r.update(p_holm=adjusted, significant_holm=adjusted <= ALPHA, direction_holm=_verdict(adjusted <= ALPHA, r["delta"]))
    method = _method(tuned)
    worse = sum(r["direction_holm"] == "worse" for r in rows)
    better = sum(r["direction_holm"] == "better" for r in rows)
    raw_worse = sum(r["direction"] == "worse" for r in rows)
    raw_better = sum(r["direction"] == "better" for r in rows)
    summary = (f"{method}: {worse} of {len(rows)} tasks significantly worse, {better} significantly better "
               f"(Holm-Bonferroni across the {len(rows)} tasks at 5%, 95% paired bootstrap with {reps} resamples; "
               f"without the adjustment {raw_worse} worse, {raw_better} better)")
    macro_b = sum(r["base"] for r in rows) / len(rows)
    macro_t = sum(r["tuned"] for r in rows) / len(rows)
    return {"base_run": str(base_run), "tuned_run": str(tuned_run), "base_model": base["model"],
            "tuned_model": tuned["model"], "method": method, "format": base["format"], "tasks": rows,
            "macro": {"base": macro_b, "tuned": macro_t, "delta": macro_t - macro_b}, "summary": summary}


def to_markdown(c: dict) -> str:
    lines = [f"# Forgetting: {c['base_model']} -> {c['tuned_model']}", "", f"**{c['summary']}**", "",
             "| task | metric | n | base | tuned | change | 95% CI | p | verdict | p (Holm) | verdict (Holm) |",
             "|---|---|---:|---:|---:|---:|---|---:|---|---:|---|"]
    for r in c["tasks"]:
        lo, hi = r["ci95"]
        lines.append(f"| {r['task']} | {r['metric']} | {r['n']} | {r['base']:.3f} | {r['tuned']:.3f} | "
                     f"{r['delta']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {r['p_value']:.3f} | {r['direction']} | "
                     f"{r['p_holm']:.3f} | {r['direction_holm']} |")
    m = c["macro"]
    lines += [f"| **macro average** | | | {m['base']:.3f} | {m['tuned']:.3f} | {m['delta']:+.3f} | | | | | |", "",
              "p: two-sided paired-bootstrap p-value of no change (the 95% interval excludes 0 exactly when p <= 0.05); "
              "Holm: adjusted across the suite's tasks, so that the chance of any false verdict among them stays at 5%.",
              "", f"Prompt format: {json.dumps(c['format'])}"]
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
    """STEM.json and STEM.md side by side, each written atomically."""
    return write_md_json(c, out_dir, stem, to_markdown)


def print_table(c: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=c["summary"])
    for col in ("task", "metric", "n", "base", "tuned", "change", "95% CI", "verdict", "p (Holm)", "verdict (Holm)"):
        table.add_column(col, justify="left" if col in ("task", "metric", "verdict", "verdict (Holm)") else "right")
    for r in c["tasks"]:
        style = "red" if r["direction_holm"] == "worse" else "green" if r["direction_holm"] == "better" else None
        table.add_row(r["task"], r["metric"], str(r["n"]), f"{r['base']:.3f}", f"{r['tuned']:.3f}", f"{r['delta']:+.3f}",
                      f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]", r["direction"], f"{r['p_holm']:.3f}",
                      r["direction_holm"], style=style)
    m = c["macro"]
    table.add_row("macro average", "", "", f"{m['base']:.3f}", f"{m['tuned']:.3f}", f"{m['delta']:+.3f}", "", "", "", "")
    Console(width=None if sys.stdout.isatty() else 150).print(table)
