"""The HTML report a person reads: what was run, loss curves, before/after metrics, examples,
forgetting. One self-contained file (plots embedded as PNG data), built from run directories.
"""
from __future__ import annotations

import base64
import difflib
import html
import io
import json
import time
from pathlib import Path

import jinja2

from ..errors import UserError
from ..io.layout import (
    BENCH_EXAMPLES_FILE,
    LOG_FILE,
    MANIFEST,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    RecipeRun,
    training_dir,
)
from ..io.runs import atomic_write_text

_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "report_templates"),
                                autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    # not splitlines(): U+2028 / U+2029 / NEL may sit raw inside a prompt or a prediction
    return [json.loads(l) for l in path.read_text(encoding="utf-8").split("\n") if l.strip()]


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------- plots

def loss_plot(log: list[dict]) -> str | None:
    if not log:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], lw=1, alpha=0.5, color="#1f77b4", label="training loss (per step)")
    if len(log) >= 8:
        k = max(len(log) // 15, 3)
        smooth = [sum(r["loss"] for r in log[max(0, i - k + 1):i + 1]) / len(log[max(0, i - k + 1):i + 1]) for i in range(len(log))]
        ax.plot([r["step"] for r in log], smooth, lw=2, color="#1f77b4", label=f"training loss ({k}-step mean)")
    val = [(r["step"], r["val_loss"]) for r in log if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val), "o-", color="#d62728", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (completion tokens)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return _png(fig)


def metrics_plot(rows: list[dict]) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), gridspec_kw={"width_ratios": [4, 1.2]})
    rouge = [r for r in rows if r["metric"] != "bleu"]
    for ax, data, ylabel in ((axes[0], rouge, "F-measure (0..1)"), (axes[1], [r for r in rows if r["metric"] == "bleu"], "BLEU (0..100)")):
        xs = list(range(len(data)))
        ax.bar([i - 0.2 for i in xs], [r["base"] for r in data], 0.4, label="base", color="#9aa5b1")
        ax.bar([i + 0.2 for i in xs], [r["tuned"] for r in data], 0.4, label="tuned", color="#2b8a3e")
        ax.set_xticks(xs, [r["metric"] for r in data])
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(frameon=False)
    fig.tight_layout()
    return _png(fig)


def forgetting_plot(f: dict) -> str:
    plt = _plt()
    rows = f["tasks"]
    fig, ax = plt.subplots(figsize=(7, 0.38 * len(rows) + 1.2))
    ys = list(range(len(rows)))[::-1]
    colors = {"worse": "#c92a2a", "better": "#2b8a3e"}
    for y, r in zip(ys, rows):
        lo, hi = r["ci95"]
        ax.errorbar(r["delta"], y, xerr=[[r["delta"] - lo], [hi - r["delta"]]], fmt="o",
                    color=colors.get(r.get("direction_holm", r["direction"]), "#495057"), capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys, [r["task"] for r in rows])
    ax.set_xlabel("tuned - base (primary metric), 95% paired bootstrap interval; colour: Holm-adjusted verdict")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def reliability_plot(runs: dict[str, list[dict]]) -> str | None:
    """Reliability diagram: accuracy against confidence (10 bins), every multiple-choice example pooled."""
    from ..metrics.helm import calibration

    curves = {}
    for name, rows in runs.items():
        rows = [r for r in rows if "confidence" in r]
        if rows:
            curves[name] = calibration([r["confidence"] for r in rows], [bool(r["correct"]) for r in rows])
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], "--", color="#adb5bd", label="perfect calibration")
    for (name, c), color in zip(curves.items(), ("#9aa5b1", "#2b8a3e", "#1f77b4")):
        pts = [(b["confidence"], b["accuracy"]) for b in c["reliability"] if b["n"]]
        ax.plot(*zip(*pts), "o-", color=color, label=f"{name} (ECE {c['ece']:.3f})")
    ax.set_xlabel("confidence (probability of the chosen answer)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------------------- text

def word_diff(a: str, b: str) -> tuple[str, str]:
    """HTML of a and b with the words that differ between them marked."""
    wa, wb = a.split(), b.split()
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        seg_a, seg_b = html.escape(" ".join(wa[i1:i2])), html.escape(" ".join(wb[j1:j2]))
        if op == "equal":
            out_a.append(seg_a), out_b.append(seg_b)
        else:
            if seg_a:
                out_a.append(f'<mark class="del">{seg_a}</mark>')
            if seg_b:
                out_b.append(f'<mark class="ins">{seg_b}</mark>')
    return " ".join(out_a), " ".join(out_b)


def _examples(base_dir: Path, tuned_dir: Path, n: int = 6) -> list[dict]:
    base = _jsonl(base_dir / PREDICTIONS_FILE)
    tuned = {r["id"]: r for r in _jsonl(tuned_dir / PREDICTIONS_FILE)}
    out = []
    for r in base[:n]:
        t = tuned.get(r["id"])
        if not t:
            continue
        b_html, t_html = word_diff(r["prediction"], t["prediction"])
        out.append({"id": r["id"], "prompt": r["prompt"], "references": r["references"], "base": b_html, "tuned": t_html})
    return out


# ---------------------------------------------------------------------------- assembling

def _section_for(run: Path) -> dict:
    """Everything found in one directory: a recipe run, or a single stage's directory."""
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    layout = RecipeRun(run)
    s: dict = {"path": str(run), "title": run.name}
    stage = _json(run / MANIFEST)
    s["recipe"] = _json(layout.recipe)
    train_dir = training_dir(run)
    if train_dir is not None:
        s["train_manifest"] = _json(train_dir / MANIFEST)
        s["loss_plot"] = loss_plot(_jsonl(train_dir / LOG_FILE))
    data_manifest = _json(layout.data / MANIFEST)
    if data_manifest:
        s["data"] = data_manifest.get("summary")
    compare = _json(layout.file("compare.json"))
    if compare:
        # a recipe run holds its evaluations; compare.json's paths are relative to where it ran
        base_dir = layout.base if layout.base.is_dir() else Path(compare["base_run"])
        tuned_dir = layout.tuned if layout.tuned.is_dir() else Path(compare["tuned_run"])
        s["compare"] = compare
        s["metrics_plot"] = metrics_plot(compare["metrics"])
        s["examples"] = _examples(base_dir, tuned_dir)
        s["efficiency"] = [{"run": d.name, **((_json(d / METRICS_FILE) or {}).get("efficiency") or {})}
                           for d in (base_dir, tuned_dir)]
    elif (run / METRICS_FILE).is_file():
        s["metrics"] = _json(run / METRICS_FILE)
    study = _json(run / "study.json")
    if study:  # a study directory (tunebench study): its arms side by side
        from .study import pareto_plot

        s["study"] = study
        s["pareto_plot"] = pareto_plot(study)
    forgetting = _json(layout.file("forgetting.json"))
    if forgetting:
        s["forgetting"] = forgetting
        s["forgetting_plot"] = forgetting_plot(forgetting)
    benches = [d for d in (layout.base_bench, layout.tuned_bench, run) if (d / RESULTS_FILE).is_file()]
    s["benches"] = [{"name": d.name, **_json(d / RESULTS_FILE)} for d in benches]
    s["reliability_plot"] = reliability_plot({d.name: _jsonl(d / BENCH_EXAMPLES_FILE) for d in benches}) if benches else None
    manifests = [m for m in (stage, s.get("train_manifest"), _json(layout.base / MANIFEST)) if m]
    s["environment"] = manifests[0]["environment"] if manifests else None
    s["stages"] = [{"stage": p.parent.name if p.parent != run else m.get("stage"), "wall_time_s": m.get("wall_time_s"),
                    "started": m.get("started")}
                   for p in sorted(run.glob(f"*/{MANIFEST}")) + [run / MANIFEST] if (m := _json(p))]
    if not any(s.get(k) for k in ("recipe", "compare", "metrics", "forgetting", "loss_plot", "study")) and not s["benches"]:
        raise UserError(f"{run}: nothing to report (no recipe.json, compare.json, metrics.json, log.jsonl or results.json)")
    return s


def build(runs: list[Path | str]) -> str:
    from .. import __version__

    sections = [_section_for(Path(r)) for r in runs]
    return _TEMPLATES.get_template("report.html.j2").render(
        sections=sections, version=__version__, generated=time.strftime("%Y-%m-%d %H:%M"),
        dumps=lambda x: json.dumps(x, indent=2, ensure_ascii=False, default=str))


def write(runs: list[Path | str], out: Path | str) -> Path:
    out = Path(out)
    atomic_write_text(out, build(runs))
    return out
