"""Base vs tuned: every metric with its absolute and relative change, and side-by-side examples."""
from __future__ import annotations

import sys

from pathlib import Path

from .errors import UserError
from .metrics import SENTENCE_SPLITTER, per_example_rouge
from .runs import read_json, read_jsonl, write_json, atomic_write_text

METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu")


def load_eval_run(run: Path | str) -> tuple[dict, list[dict]]:
    run = Path(run)
    if not (run / "metrics.json").is_file():
        raise UserError(f"{run}: not an evaluation run (no metrics.json; run `tunebench evaluate --out {run}`)")
    return read_json(run / "metrics.json"), read_jsonl(run / "predictions.jsonl")


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
    from .benchmarks.multimetric import family_rows

    families = family_rows(base_m.get("metrics", {}), tuned_m.get("metrics", {}))
    return {"base_run": str(base_run), "tuned_run": str(tuned_run), "base_model": base_m.get("model"),
            "families": families,
            "tuned_model": tuned_m.get("model"), "n": base_m.get("n"), "data": base_m.get("data"),
            "metrics": rows, "examples": examples,
            "scoring": {"rouge": "rouge-score, stemming on, F-measure; per example the best-matching of the "
                                 "references (score_multi), averaged over examples",
                        "rougeLsum_sentences": SENTENCE_SPLITTER,
                        "bleu": "sacrebleu corpus BLEU (13a), every reference stream"}}


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


def write(c: dict, out_dir: Path | str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    write_json(out_dir / "compare.json", c)
    atomic_write_text(out_dir / "compare.md", to_markdown(c))
    return out_dir / "compare.md", out_dir / "compare.json"


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
