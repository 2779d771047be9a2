"""Base vs tuned: every metric with its absolute and relative change, and side-by-side examples."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from ..io.layout import (
    MANIFEST,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    RecipeRun,
    kind,
)
from ..io.runs import read_json, read_jsonl
from ..metrics import SENTENCE_SPLITTER, per_example_rouge
from .files import write_md_json

METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu")


def load_eval_run(run: Path | str) -> tuple[dict, list[dict]]:
    run = Path(run)
    if not (run / METRICS_FILE).is_file():
        raise UserError(f"{run}: not an evaluation run (no metrics.json; run `tunebench evaluate --out {run}`)")
    return read_json(run / METRICS_FILE), read_jsonl(run / PREDICTIONS_FILE)


def compare(base_run: Path | str, tuned_run: Path | str, n_examples: int = 3) -> dict:
    base_m, base_p = load_eval_run(base_run)
    tuned_m, tuned_p = load_eval_run(tuned_run)
    if base_m.get("data") != tuned_m.get("data"):
        raise UserError(f"{base_run} and {tuned_run} were evaluated on different data "
                        f"({base_m.get('data')} vs {tuned_m.get('data')}): their numbers are not comparable")
    rows = []
    for k in METRICS:
        b, t = base_m[k], tuned_m[k]
        rows.append({"metric": k, "base": b, "tuned": t, "change": t - b,
                     "relative_change": (t - b) / b if b else None})
    by_id = {r["id"]: r for r in tuned_p}
    examples = []
    for r in base_p[:n_examples]:
        t = by_id.get(r["id"])
        if t is None:
            continue
        pr = per_example_rouge([r["prediction"], t["prediction"]], [r["references"]] * 2)
        examples.append({"id": r["id"], "prompt": r["prompt"], "reference": r["references"][0],
                         "base": r["prediction"], "tuned": t["prediction"],
                         "base_rougeL": pr[0]["rougeL"], "tuned_rougeL": pr[1]["rougeL"]})
    from ..metrics.helm import family_rows

    families = family_rows(base_m.get("metrics", {}), tuned_m.get("metrics", {}))
    return {"base_run": str(base_run), "tuned_run": str(tuned_run), "base_model": base_m.get("model"),
            "families": families,
            "tuned_model": tuned_m.get("model"), "n": base_m.get("n"), "data": base_m.get("data"),
            "metrics": rows, "examples": examples,
            "scoring": {"rouge": "rouge-score, stemming on, F-measure; per example the best-matching of the "
                                 "references (score_multi), averaged over examples",
                        "rougeLsum_sentences": SENTENCE_SPLITTER,
                        "bleu": "sacrebleu corpus BLEU (13a), every reference stream"}}


def compare_any(runs: list[Path | str], out: Path | str | None = None, examples: int = 3) -> tuple[str, dict, Path, Path]:
    """What `tunebench compare` makes of its runs: recipe runs side by side ("runs": comparison.md/json),
    two benchmark runs ("forgetting": forgetting.md/json) or two evaluation runs ("evaluation":
    compare.md/json), written to `out` (default: the second run's parent). Returns (kind, report, md, json)."""
    from . import forgetting

    out = out or Path(runs[1]).resolve().parent
    what = kind(runs[0])
    if len(runs) > 2 or what == "recipe":
        c = compare_runs(runs)
        return ("runs", c, *write_runs(c, out))
    if what == "bench":
        c = forgetting.compare_bench(runs[0], runs[1])
        return ("forgetting", c, *forgetting.write(c, out))
    c = compare(runs[0], runs[1], examples)
    return ("evaluation", c, *write(c, out))


def to_markdown(c: dict) -> str:
    lines = [f"# {c['base_model']} -> {c['tuned_model']}", "",
             f"{c['n']} examples of {c['data']}. ROUGE: F-measure 0..1, best-matching reference per example; "
             "BLEU: sacrebleu corpus score 0..100 over all references.", "",
             "| metric | base | tuned | change | relative |", "|---|---:|---:|---:|---:|"]
    for r in c["metrics"]:
        rel = f"{r['relative_change']:+.1%}" if r["relative_change"] is not None else "n/a"
        lines.append(f"| {r['metric']} | {r['base']:.4f} | {r['tuned']:.4f} | {r['change']:+.4f} | {rel} |")
    if c.get("families"):
        lines += ["", "## All metric families", "", "| family | figure | base | tuned | change | better |", "|---|---|---:|---:|---:|---|"]
        for r in c["families"]:
            if r.get("figure") is None:
                lines.append(f"| {r['family']} | n/a: {r['note']} | | | | |")
            elif isinstance(r.get("base"), (int, float)) and isinstance(r.get("tuned"), (int, float)):
                lines.append(f"| {r['family']} | {r['figure']} | {r['base']:.4g} | {r['tuned']:.4g} | {r['delta']:+.4g} | {r['better']} |")
            else:
                lines.append(f"| {r['family']} | {r['figure']} | {r['base']} | {r['tuned']} | | {r['better']} |")
    for e in c["examples"]:
        dialogue = e["prompt"].replace("\n", "<br>")
        lines += ["", f"## {e['id']}", "", f"<details><summary>prompt</summary>{dialogue}</details>", "",
                  f"- **human:** {e['reference']}",
                  f"- **base** (ROUGE-L {e['base_rougeL']:.3f}): {e['base']}",
                  f"- **tuned** (ROUGE-L {e['tuned_rougeL']:.3f}): {e['tuned']}"]
    return "\n".join(lines) + "\n"


def write(c: dict, out_dir: Path | str, stem: str = "compare", markdown=None) -> tuple[Path, Path]:
    """STEM.json and STEM.md side by side, each written atomically."""
    return write_md_json(c, out_dir, stem, markdown or to_markdown)


def print_table(c: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{c['n']} examples: base vs tuned")
    for col in ("metric", "base", "tuned", "change", "relative"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for r in c["metrics"]:
        rel = f"{r['relative_change']:+.1%}" if r["relative_change"] is not None else "n/a"
        style = "green" if r["change"] > 0 else "red" if r["change"] < 0 else None
        table.add_row(r["metric"], f"{r['base']:.4f}", f"{r['tuned']:.4f}", f"{r['change']:+.4f}", rel, style=style)
    console = Console(width=None if sys.stdout.isatty() else 150)
    console.print(table)
    for e in c["examples"]:
        console.print(f"[bold]{e['id']}[/bold]\n  human: {e['reference']}\n  base:  {e['base']}\n  tuned: {e['tuned']}")


# ---------------------------------------------------------------------------- several recipe runs

def _eval_set(run: Path) -> list:
    return [(r["id"], r["prompt"], r["references"]) for r in read_jsonl(run / PREDICTIONS_FILE)]


def compare_runs(runs: list[Path | str]) -> dict:
    """Base model and every run's tuned model side by side: the summarization metrics and each
    forgetting-suite task, all from the runs' own files (the same evaluation code wrote them).

    The runs must have evaluated on the same examples with the same prompts; the base model is
    taken from the first run, and any run whose base scored differently is reported.
    """
    from ..benchmarks.harness import load_results
    from .forgetting import refuse_incomparable

    runs = [Path(r) for r in runs]
    names: dict[int, str] = {}
    for i, r in enumerate(runs):
        # a column per run, named after its directory; the same name twice gets a number
        names[i] = r.name if [x.name for x in runs].count(r.name) == 1 else f"{r.name}#{i + 1}"
    for r in runs:
        if kind(r) != "recipe":
            raise UserError(f"{r}: not a recipe run directory (needs base/metrics.json and tuned/metrics.json)")
    first = runs[0]
    reference_set = _eval_set(RecipeRun(first).base)
    base_m = read_json(RecipeRun(first).base / METRICS_FILE)
    columns = [{"name": "base", "run": str(RecipeRun(first).base), "model": base_m.get("model"), "metrics": base_m}]
    notes = []
    for i, r in enumerate(runs):
        if _eval_set(RecipeRun(r).tuned) != reference_set:
            raise UserError(f"{r}/tuned and {first}/base were evaluated on different examples or prompts: not comparable")
        b = read_json(RecipeRun(r).base / METRICS_FILE)
        if r != first and any(abs(b[k] - base_m[k]) > 1e-9 for k in METRICS):
            notes.append(f"{r}/base scored differently from {first}/base (rouge1 {b['rouge1']:.4f} vs {base_m['rouge1']:.4f})")
        m = read_json(RecipeRun(r).tuned / METRICS_FILE)
        columns.append({"name": names[i], "run": str(RecipeRun(r).tuned), "model": m.get("model"), "metrics": m,
                        "training": _training_of(r)})
    # forgetting suite: the base bench of the first run, then each run's tuned bench
    bench_cols = []
    if (RecipeRun(first).base_bench / RESULTS_FILE).is_file():
        bench_cols.append(("base", load_results(RecipeRun(first).base_bench)))
    for i, r in enumerate(runs):
        if (RecipeRun(r).tuned_bench / RESULTS_FILE).is_file():
            bench_cols.append((names[i], load_results(RecipeRun(r).tuned_bench)))
        else:
            notes.append(f"{r}: no tuned-bench/ (forgetting suite not run)")
    for name, res in bench_cols:
        refuse_incomparable(bench_cols[0][1], res, f"benchmark run '{bench_cols[0][0]}'", f"'{name}'")
    tasks = [t["name"] for t in bench_cols[0][1]["tasks"]] if bench_cols else []
    bench_rows = []
    for task in tasks:
        row = {"task": task}
        for name, res in bench_cols:
            entry = next((t for t in res["tasks"] if t["name"] == task), None)
            row[name] = entry["primary"] if entry else None
            row["metric"] = entry["primary_metric"] if entry else row.get("metric")
            row["n"] = entry["n"] if entry else row.get("n")
        bench_rows.append(row)
    macro = {name: (sum(r[name] for r in bench_rows) / len(bench_rows)
                    if bench_rows and all(r[name] is not None for r in bench_rows) else None) for name, _ in bench_cols}
    verdicts = {}
    for i, r in enumerate(runs):
        if RecipeRun(r).file("forgetting.json").is_file():
            verdicts[names[i]] = read_json(RecipeRun(r).file("forgetting.json"))["summary"]
    return {"runs": [str(r) for r in runs], "data": base_m.get("data"), "n": base_m.get("n"),
            "summarization": [{"name": c["name"], "run": c["run"], "model": c["model"], "training": c.get("training"),
                               **{k: c["metrics"][k] for k in METRICS}} for c in columns],
            "bench_columns": [name for name, _ in bench_cols], "bench": bench_rows, "bench_macro": macro,
            "forgetting_verdicts": verdicts, "notes": notes}


def _training_of(run: Path) -> str:
    """A few words on how a run was trained, from its prepared data's manifest."""
    manifest = RecipeRun(run).data / MANIFEST
    if not manifest.is_file():
        return ""
    s = read_json(manifest).get("summary", {})
    counts = s.get("counts", {})
    if s.get("task") == "mixture":
        return f"{len(s.get('mixture', {}))}-task mixture, {counts.get('train')} examples"
    return f"{s.get('task')}, {counts.get('train')} examples"


def runs_markdown(c: dict) -> str:
    lines = [f"# {len(c['runs'])} runs against the base model", "",
             f"Summarization: {c['n']} examples of {c['data']} (ROUGE F-measure 0..1, BLEU 0..100).", "",
             "| model | training | " + " | ".join(METRICS) + " |", "|---|---|" + "---:|" * len(METRICS)]
    for r in c["summarization"]:
        lines.append(f"| {r['name']} | {r.get('training') or ''} | " + " | ".join(
            f"{r[k]:.1f}" if k == "bleu" else f"{r[k]:.3f}" for k in METRICS) + " |")
    if c["bench"]:
        cols = c["bench_columns"]
        lines += ["", "Forgetting suite (primary metric per task, same examples and prompts for every model):", "",
                  "| task | n | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
        for r in c["bench"]:
            lines.append(f"| {r['task']} | {r['n']} | " + " | ".join(
                f"{r[k]:.3f}" if r[k] is not None else "n/a" for k in cols) + " |")
        lines.append("| **macro average** | | " + " | ".join(
            f"**{c['bench_macro'][k]:.3f}**" if c["bench_macro"][k] is not None else "n/a" for k in cols) + " |")
    for name, v in c["forgetting_verdicts"].items():
        lines += ["", f"- {name}: {v}"]
    for n in c["notes"]:
        lines += ["", f"Note: {n}"]
    return "\n".join(lines) + "\n"


def write_runs(c: dict, out_dir: Path | str) -> tuple[Path, Path]:
    return write(c, out_dir, "comparison", runs_markdown)


def print_runs(c: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    t = Table(title=f"{c['n']} examples of {c['data']}")
    for col in ("model", "training", *METRICS):
        t.add_column(col, justify="left" if col in ("model", "training") else "right")
    for r in c["summarization"]:
        t.add_row(r["name"], r.get("training") or "", *(f"{r[k]:.1f}" if k == "bleu" else f"{r[k]:.3f}" for k in METRICS))
    console.print(t)
    if c["bench"]:
        cols = c["bench_columns"]
        b = Table(title="forgetting suite")
        for col in ("task", "n", *cols):
            b.add_column(col, justify="left" if col == "task" else "right")
        for r in c["bench"]:
            b.add_row(r["task"], str(r["n"]), *(f"{r[k]:.3f}" if r[k] is not None else "n/a" for k in cols))
        b.add_row("macro average", "", *(f"{c['bench_macro'][k]:.3f}" if c["bench_macro"][k] is not None else "n/a"
                                         for k in cols), style="bold")
        console.print(b)
    for name, v in c["forgetting_verdicts"].items():
        console.print(f"{name}: {v}")
    for n in c["notes"]:
        console.print(f"note: {n}")
