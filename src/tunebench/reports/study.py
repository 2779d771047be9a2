"""A study's result (study.json, study.md, pareto.png): every arm against the base model and
against each other, on the same test examples and the same forgetting suite.

Task metrics: ROUGE per example (`per_example_rouge`, what metrics.json averages) of the tuned and
the base model, change with a paired bootstrap interval (`bootstrap_test`); BLEU is a corpus score,
recomputed from sacrebleu's per-example statistics on the same resampled examples
(`bootstrap_statistic`). Forgetting: the arm's forgetting.json (Holm-adjusted verdicts) and the
macro change over the suite with a paired bootstrap interval over its examples, each example
weighted so that the weighted mean is the mean of the per-task means (what the macro is). Arms are
compared pairwise the same way, arm B minus arm A. An arm is dominated when another is at least
as good on task gain and on forgetting and better on one; the recommendation is written from
these numbers.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..benchmarks.harness import load_examples
from ..errors import UserError
from ..io.layout import MANIFEST, METRICS_FILE, PREDICTIONS_FILE, RecipeRun
from ..io.runs import read_json, read_jsonl
from ..metrics.rouge_bleu import (
    ROUGE_TYPES,
    bleu_of_statistics,
    bleu_statistics,
    per_example_rouge,
)
from ..metrics.stats import bootstrap_statistic, bootstrap_test
from .files import write_md_json

REPS = 2000
TASK = "rougeL"          # the task gain of the Pareto plot and the recommendation


class _Scores:
    """One evaluation run's per-example figures: ROUGE per type, BLEU statistics."""

    def __init__(self, run: Path, ids: list[str] | None = None):
        rows = read_jsonl(run / PREDICTIONS_FILE)
        self.ids = [r["id"] for r in rows]
        if ids is not None and self.ids != ids:
            raise UserError(f"{run}: evaluated on other examples than the study's base model: not comparable")
        preds, refs = [r["prediction"] for r in rows], [r["references"] for r in rows]
        per = per_example_rouge(preds, refs)
        self.rouge = {k: [p[k] for p in per] for k in ROUGE_TYPES}
        self.bleu_stats = bleu_statistics(preds, refs)


def task_change(a: _Scores, b: _Scores, reps: int = REPS) -> dict:
    """b minus a on every metric: means, change, 95% paired bootstrap interval, p."""
    import numpy as np

    out = {}
    for k in ROUGE_TYPES:
        lo, hi, p = bootstrap_test(a.rouge[k], b.rouge[k], reps)
        ma, mb = sum(a.rouge[k]) / len(a.rouge[k]), sum(b.rouge[k]) / len(b.rouge[k])
        out[k] = {"a": ma, "b": mb, "change": mb - ma, "ci95": [lo, hi], "p_value": p}
    sa, sb = np.array(a.bleu_stats), np.array(b.bleu_stats)

    def bleu_change(idx):
        return bleu_of_statistics(sb[idx].sum(0).tolist()) - bleu_of_statistics(sa[idx].sum(0).tolist())

    ba, bb = bleu_of_statistics(sa.sum(0).tolist()), bleu_of_statistics(sb.sum(0).tolist())
    lo, hi, p = bootstrap_statistic(len(sa), bleu_change, reps)
    out["bleu"] = {"a": ba, "b": bb, "change": bb - ba, "ci95": [lo, hi], "p_value": p}
    return out


def macro_change(a_bench: Path, b_bench: Path, tasks: list[str], reps: int = REPS) -> dict:
    """The suite's macro average of b minus a's, with a paired bootstrap interval over its examples."""
    ea, eb = load_examples(a_bench), load_examples(b_bench)
    sa, sb, w = [], [], []
    for t in tasks:
        ids = [i for i in ea.get(t, {}) if i in eb.get(t, {})]
        weights = [ea[t][i].get("weight", 1.0) for i in ids]
        total = sum(weights)
        sa += [ea[t][i]["score"] for i in ids]
        sb += [eb[t][i]["score"] for i in ids]
        w += [x / total for x in weights]  # each task weighs 1 in all: the weighted mean is the macro
    if not w:
        raise UserError(f"{a_bench} and {b_bench} share no benchmark examples")
    lo, hi, p = bootstrap_test(sa, sb, reps, weights=w)
    change = sum(x * (b - a) for x, a, b in zip(w, sa, sb)) / sum(w)
    return {"change": change, "ci95": [lo, hi], "p_value": p, "examples": len(w), "tasks": len(tasks)}


def _manifest(d: Path) -> dict:
    return read_json(d / MANIFEST) if (d / MANIFEST).is_file() else {}


def _peak_mb(memory: dict) -> float | None:
    return memory.get("peak_gpu_memory_mb") or memory.get("peak_rss_mb") or memory.get("process_peak_rss_mb")


def _training(run: RecipeRun) -> dict:
    """Training time, peak memory and trainable parameters from the training run's manifest; the
    arm's wall time: its own stages' (the shared base model's are not in it)."""
    m = _manifest(run.train)
    s = m.get("summary", {})
    stages = [_manifest(d).get("wall_time_s") or 0 for d in (run.data, run.train, run.tuned, run.tuned_bench)]
    return {"method": m.get("config", {}).get("train", {}).get("method"), "train_wall_s": m.get("wall_time_s"),
            "steps": s.get("steps"), "train_examples": s.get("train_examples"),
            "trainable_parameters": s.get("trainable_parameters"), "total_parameters": s.get("total_parameters"),
            "peak_memory_mb": _peak_mb(m.get("memory", {})), "arm_wall_s": round(sum(stages), 1)}


def _forgetting(run: RecipeRun, base_bench: Path | None) -> dict | None:
    f = run.file("forgetting.json")
    if base_bench is None or not f.is_file():
        return None
    f = read_json(f)
    rows = f["tasks"]
    return {"summary": f["summary"], "tasks": len(rows),
            "worse_holm": sum(r["direction_holm"] == "worse" for r in rows),
            "better_holm": sum(r["direction_holm"] == "better" for r in rows),
            "macro_base": f["macro"]["base"], "macro_tuned": f["macro"]["tuned"],
            "macro": macro_change(base_bench, run.tuned_bench, [r["task"] for r in rows])}


def build(out: Path | str, arms: list[dict], pairs: list[tuple[str, str]], shared, name: str = "study") -> dict:
    """study.json's content from the files of the shared base runs and of every arm under `out`."""
    out = Path(out)
    base = _Scores(shared.base)
    base_m = read_json(shared.base / METRICS_FILE)
    scores, rows = {}, []
    for arm in arms:
        run = RecipeRun(out / arm["name"])
        scores[arm["name"]] = _Scores(run.tuned, base.ids)
        rows.append({**arm, "run": str(run.root), "task": task_change(base, scores[arm["name"]]),
                     "forgetting": _forgetting(run, shared.base_bench), "training": _training(run)})
    by = {r["name"]: r for r in rows}

    def pair(a: str, b: str) -> dict:
        c = {"a": a, "b": b, "task": task_change(scores[a], scores[b])}
        if by[a]["forgetting"] and by[b]["forgetting"]:
            c["forgetting_macro"] = macro_change(RecipeRun(out / a).tuned_bench, RecipeRun(out / b).tuned_bench,
                                                 _bench_tasks(out / a))
        return c

    compared = [pair(a, b) for a, b in pairs]
    points = {r["name"]: (r["forgetting"]["macro"]["change"] if r["forgetting"] else None, r["task"][TASK]["change"])
              for r in rows}
    dominated = dominance(points)
    # each dominated arm against the dominator that gains the most: is the gap more than noise?
    gaps = {}
    for n, by_whom in dominated.items():
        if by_whom:
            m = max(by_whom, key=lambda k: points[k][1])
            gaps[n] = next((c for c in compared if (c["a"], c["b"]) == (n, m)), None) or pair(n, m)
    s = {"name": name, "out": str(out), "base_run": str(shared.base), "base_bench": str(shared.base_bench or ""),
         "data": base_m.get("data"), "n": len(base.ids), "base": {k: base_m[k] for k in (*ROUGE_TYPES, "bleu")},
         "arms": rows, "pairs": compared, "task_metric": TASK,
         "pareto": {"x": "forgetting macro change", "y": f"{TASK} change",
                    "frontier": [n for n in points if not dominated[n]], "dominated": dominated, "gaps": gaps},
         "method": {"reps": REPS, "interval": "95% paired bootstrap percentile interval, the same resampled examples "
                    "for both sides", "bleu": "corpus BLEU recomputed on each resample from sacrebleu's per-example "
                    "statistics", "forgetting_macro": "examples of every task pooled, each weighted 1/(its task's "
                    "examples), so the weighted mean is the mean of the per-task means"}}
    s["recommendation"] = recommend(s)
    return s


def _bench_tasks(arm: Path) -> list[str]:
    return [r["task"] for r in read_json(RecipeRun(arm).file("forgetting.json"))["tasks"]]


def dominance(points: dict[str, tuple[float | None, float]]) -> dict[str, list[str]]:
    """For each arm, the arms that dominate it: at least as good on both axes (x: forgetting change,
    y: task gain; higher is better on both) and better on one. An axis some arm lacks is left out."""
    use_x = all(x is not None for x, _ in points.values())
    out = {}
    for n, (x, y) in points.items():
        out[n] = []
        for m, (x2, y2) in points.items():
            if m == n:
                continue
            ge = y2 >= y and (not use_x or x2 >= x)
            gt = y2 > y or (use_x and x2 > x)
            if ge and gt:
                out[n].append(m)
    return out


def _ci(d: dict, fmt: str = "+.3f") -> str:
    return f"{d['change']:{fmt}} [{d['ci95'][0]:{fmt}}, {d['ci95'][1]:{fmt}}]"


def _overlap(d: dict) -> bool:
    return d["ci95"][0] <= 0 <= d["ci95"][1]


def recommend(s: dict) -> str:
    """One paragraph from the numbers: the frontier, each dominated arm, by whom and by how much,
    and whether the paired interval of the gap includes 0 (so that the gap may be noise)."""
    rows = {r["name"]: r for r in s["arms"]}
    dom, frontier, gaps = s["pareto"]["dominated"], s["pareto"]["frontier"], s["pareto"]["gaps"]
    have_x = all(r["forgetting"] for r in rows.values())

    def where(n):
        r = rows[n]
        return f"{TASK} {_ci(r['task'][TASK])}" + (f", forgetting macro {_ci(r['forgetting']['macro'])}" if have_x else "")

    axes = "task gain and forgetting" if have_x else f"task gain ({TASK}; no forgetting suite was run)"
    text = [f"On {axes} (changes from the base model, 95% paired intervals), {len(frontier)} of {len(rows)} arms "
            f"{'is' if len(frontier) == 1 else 'are'} on the Pareto frontier: " + "; ".join(f"{n} ({where(n)})" for n in frontier) + "."]
    if have_x and len(frontier) > 1:
        best = max(frontier, key=lambda n: rows[n]["task"][TASK]["change"])
        least = max(frontier, key=lambda n: rows[n]["forgetting"]["macro"]["change"])
        text.append(f"Among them {best} gains the most {TASK} and {least} forgets the least; between frontier arms "
                    "the choice is the trade-off itself.")
    for n, gap in gaps.items():
        m = gap["b"]
        parts = [f"{TASK} by {gap['task'][TASK]['change']:+.3f} {_ci_only(gap['task'][TASK])}"]
        if gap.get("forgetting_macro"):
            parts.append(f"forgetting macro by {gap['forgetting_macro']['change']:+.3f} {_ci_only(gap['forgetting_macro'])}")
        noisy = [name for name, d in ((TASK, gap["task"][TASK]), ("forgetting", gap.get("forgetting_macro"))) if d and _overlap(d)]
        verdict = ("; " + (f"the paired interval of the {noisy[0]} gap includes 0, so that difference may be noise"
                           if len(noisy) == 1 else "the paired intervals of both gaps include 0, so the dominance may be noise")
                   if noisy else "; every paired interval of the gap excludes 0")
        others = [k for k in dom[n] if k != m]
        text.append(f"{n} is dominated by {m}" + (f" (and by {', '.join(others)})" if others else "")
                    + f": {m} minus {n} is " + " and ".join(parts) + verdict + ".")
    if not gaps:
        text.append("No arm is dominated.")
    return " ".join(text)


def _ci_only(d: dict) -> str:
    return f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


# ---------------------------------------------------------------------------- files

def pareto_plot(s: dict, path: Path | None = None):
    """Task gain against forgetting, 95% intervals on both axes, dominated arms hollow and grey.
    Written to `path` when given; returns the figure's PNG as a data URI (for the HTML report)."""
    from .html import _plt, _png

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    dom = s["pareto"]["dominated"]
    for r in s["arms"]:
        y = r["task"][TASK]
        f = r["forgetting"]["macro"] if r["forgetting"] else {"change": 0.0, "ci95": [0.0, 0.0]}
        color = "#adb5bd" if dom[r["name"]] else "#2b8a3e"
        ax.errorbar(f["change"], y["change"], xerr=[[f["change"] - f["ci95"][0]], [f["ci95"][1] - f["change"]]],
                    yerr=[[y["change"] - y["ci95"][0]], [y["ci95"][1] - y["change"]]], fmt="o", capsize=3, color=color,
                    mfc="white" if dom[r["name"]] else color, ms=8)
        ax.annotate(r["name"] + (" (dominated)" if dom[r["name"]] else ""), (f["change"], y["change"]),
                    textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.axvline(0, color="black", lw=0.8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("forgetting-suite macro change from base (right: less forgetting)")
    ax.set_ylabel(f"{TASK} change from base (up: more task gain)")
    ax.set_title("Task gain against forgetting, 95% paired bootstrap intervals", fontsize=10)
    ax.grid(alpha=0.3)
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return _png(fig)


def _mb(v) -> str:
    return f"{v / 1024:.1f} GB" if v else "n/a"


def to_markdown(s: dict) -> str:
    lines = [f"# Study {s['name']}: {len(s['arms'])} arms", "",
             f"Every arm scored on the same {s['n']} examples of {s['data']} and the same forgetting suite as the base "
             f"model (evaluated once: {s['base_run']}). Changes from base with 95% paired bootstrap intervals "
             f"({s['method']['reps']} resamples); ROUGE F-measure 0..1, BLEU 0..100 ({s['method']['bleu']}).", "",
             "| arm | " + " | ".join(f"{k} change" for k in (*ROUGE_TYPES, "bleu"))
             + " | forgetting worse / better (Holm) | forgetting macro change | training | peak memory | trainable parameters | arm wall time |",
             "|---|" + "---:|" * 5 + "---|---:|---:|---:|---:|---:|"]
    for r in s["arms"]:
        f, t = r["forgetting"], r["training"]
        forget = (f"{f['worse_holm']} / {f['better_holm']} of {f['tasks']}", _ci(f["macro"])) if f else ("not run", "")
        params = f"{t['trainable_parameters']:,}" if t.get("trainable_parameters") else "n/a"
        lines.append(f"| {r['name']} | " + " | ".join(_ci(r["task"][k], "+.2f" if k == "bleu" else "+.3f")
                                                       for k in (*ROUGE_TYPES, "bleu"))
                     + f" | {forget[0]} | {forget[1]} | {t.get('train_wall_s') or 0:.0f} s, {t.get('steps')} steps | "
                     f"{_mb(t.get('peak_memory_mb'))} | {params} | {t['arm_wall_s']:.0f} s |")
    lines += ["", "Base model: " + ", ".join(f"{k} {v:.4f}" for k, v in s["base"].items()), "",
              "## Task gain against forgetting", "", "![Pareto plot](pareto.png)", "",
              f"Frontier: {', '.join(s['pareto']['frontier'])}. "
              + ("; ".join(f"{n} dominated by {', '.join(by)}" for n, by in s["pareto"]["dominated"].items() if by) or "No arm dominated."),
              "", "## Recommendation", "", s["recommendation"], "", "## Arm against arm (B minus A, same examples)", "",
              "| A | B | " + " | ".join(f"{k}" for k in (*ROUGE_TYPES, "bleu")) + " | forgetting macro |",
              "|---|---|" + "---:|" * 6]
    for c in s["pairs"]:
        fm = _ci(c["forgetting_macro"]) if c.get("forgetting_macro") else "n/a"
        lines.append(f"| {c['a']} | {c['b']} | " + " | ".join(_ci(c["task"][k], "+.2f" if k == "bleu" else "+.3f")
                                                             for k in (*ROUGE_TYPES, "bleu")) + f" | {fm} |")
    lines += ["", f"Forgetting macro interval: {s['method']['forgetting_macro']}."]
    return "\n".join(lines) + "\n"


def write(s: dict, out_dir: Path | str) -> tuple[Path, Path]:
    """study.json, study.md and pareto.png in the study directory, each written atomically."""
    import os
    import tempfile

    out_dir = Path(out_dir)
    fd, tmp = tempfile.mkstemp(prefix=".pareto.", suffix=".png", dir=out_dir)
    os.close(fd)
    try:
        pareto_plot(s, Path(tmp))
        os.replace(tmp, out_dir / "pareto.png")
    finally:
        Path(tmp).unlink(missing_ok=True)
    return write_md_json(s, out_dir, "study", to_markdown)


def print_table(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"study {s['name']}: change from base, 95% paired intervals")
    for col in ("arm", TASK, "bleu", "forgetting worse/better", "forgetting macro", "train s", "dominated by"):
        t.add_column(col, justify="left" if col in ("arm", "dominated by") else "right")
    for r in s["arms"]:
        f = r["forgetting"]
        t.add_row(r["name"], _ci(r["task"][TASK]), _ci(r["task"]["bleu"], "+.2f"),
                  f"{f['worse_holm']}/{f['better_holm']}" if f else "n/a", _ci(f["macro"]) if f else "n/a",
                  f"{r['training'].get('train_wall_s') or 0:.0f}", ", ".join(s["pareto"]["dominated"][r["name"]]))
    console = Console(width=None if sys.stdout.isatty() else 150)
    console.print(t)
    console.print(s["recommendation"])
