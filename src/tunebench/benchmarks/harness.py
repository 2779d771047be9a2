"""Run tasks on a model: per-example results as they go, task metrics, suite aggregates.

Writes DIR/results.json (one entry per task: name, kind, metric names and values, n, shots,
model) and DIR/examples.jsonl (each example's choices, their log-likelihood `scores`, the
`prediction`, and `score`: the example's value of the task's primary metric). Finished tasks
are kept in DIR/tasks/ and not recomputed when the same run is started again.
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path


from .. import models
from ..batching import Formatter
from ..errors import UserError
from ..runs import Journal, Stage, inside, read_json, write_json, write_jsonl
from .multimetric import FAMILIES, PeakMemory, bias, calibration_for_rows, efficiency, toxicity
from .perturbations import FAIRNESS, ROBUSTNESS, seeded
from .scoring import Scorer, postprocess
from .tasks import Example, Task

GEN_METRICS = {"exact_str_match", "case_insensitive_str_match", "bleu", "rouge", "sequence_f1",
               "numeric_match_with_0_1_relative_error"}
SCORING_NOTE = ("choices scored by log-likelihood with lm-evaluation-harness tokenization; accuracy uses the summed "
                "log-probability, accuracy_norm divides it by the choice's length in characters")


def run_bench(model_cfg, cfg, tasks: list[Task], out: Path | str, limit: int | None) -> dict:
    out = Path(out)
    device = models.default_device()
    dtype = models.pick_dtype(cfg.precision, device)
    config = {"model": model_cfg.model_dump(), "bench": cfg.model_dump(), "tasks": [t.name for t in tasks], "limit": limit}
    with Stage(out, "bench", config) as st:
        model, tok, resolved = models.load(model_cfg.model, dtype, model_cfg.trust_remote_code)
        model.to(device)
        fmt = Formatter.for_model(tok, model.config.is_encoder_decoder, cfg.chat_template, raw=True)
        scorer = Scorer(model, fmt, cfg.batch_size)
        fmt_info = {"chat_template": fmt.use_chat, "shots": cfg.shots, "seed": cfg.seed, "limit": limit,
                    "max_new_tokens": cfg.max_new_tokens, "scoring": SCORING_NOTE}
        entries, t0 = [], time.time()
        (out / "tasks").mkdir(exist_ok=True)
        for i, task in enumerate(tasks, 1):
            cache = inside(out, "tasks/" + re.sub(r"[^A-Za-z0-9_.-]", "__", task.name) + ".json")
            if cache.is_file():
                done = read_json(cache)
                if (done["entry"]["format"] == fmt_info and done["entry"]["model"] == model_cfg.model
                        and done["entry"].get("metrics_requested") == sorted(cfg.metrics)):
                    entries.append(done)
                    print(f"[bench] {i}/{len(tasks)} {task.name}: done earlier, kept")
                    continue
            # per-example results journaled as they come: a killed run recomputes only what is missing
            journal = Journal(cache.with_suffix(".partial.jsonl"), {"task": task.name, "model": model_cfg.model_dump(),
                                                                    "format": fmt_info, "precision": str(dtype),
                                                                    "metrics": sorted(cfg.metrics)})
            if journal.note():
                print(f"[bench] {journal.note()}", flush=True)
            entry, rows = run_task(task, scorer, model, fmt, cfg, limit, journal)
            entry.update(model=model_cfg.model, format=fmt_info)
            write_json(cache, {"entry": entry, "examples": rows})
            journal.discard()
            entries.append({"entry": entry, "examples": rows})
            print(f"[bench] {i}/{len(tasks)} {task.name}: {entry['primary_metric']}={entry['primary']:.3f} "
                  f"(n={entry['n']}, {entry['seconds']:.0f}s)")
        results = {
            "model": model_cfg.model, "model_path": resolved.path, "adapter": resolved.adapter,
            "format": fmt_info, "limit": limit, "precision": str(dtype).replace("torch.", ""),
            "tasks": [e["entry"] for e in entries], "aggregates": aggregates([e["entry"] for e in entries]),
            "efficiency": {"seconds": round(time.time() - t0, 1),
                           "examples": sum(e["entry"]["n"] for e in entries)},
        }
        write_json(out / "results.json", results)
        write_jsonl(out / "examples.jsonl", (r for e in entries for r in e["examples"]))
        st.extra["summary"] = {"tasks": len(entries), "macro": results["aggregates"]["macro"]}
    return results


def run_task(task: Task, scorer: Scorer, model, fmt: Formatter, cfg, limit: int | None,
             journal: Journal | None = None) -> tuple[dict, list[dict]]:
    t0 = time.time()
    peak = PeakMemory("task")  # resets the peak counters: the efficiency figures get this task's own peak
    tokens0, sq0 = scorer.tokens, scorer.sum_sq_lengths
    gen_stats = {"prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0, "sum_sq_lengths": 0}
    examples = task.load(cfg.shots, cfg.seed)
    if limit:
        examples = examples[:limit]
    rows = [{"task": task.name, "id": e.id, "context": e.context} for e in examples]
    scores: dict[str, float] = {}
    not_computed: dict[str, str] = {}
    per_example: dict[str, list[float]] = {}
    if task.kind == "multiple_choice":
        choice_scores = scorer.score(examples, desc=task.name, journal=journal)
        mc = multiple_choice_metrics(examples, choice_scores)
        for row, e, cs, pred, pred_norm in zip(rows, examples, choice_scores, mc["pred"], mc["pred_norm"]):
            # scores: each choice's summed log-likelihood; scores_norm: per character
            row.update(choices=e.choices, gold=e.gold, scores=[c.logprob for c in cs],
                       scores_norm=[c.logprob / max(c.chars, 1) for c in cs], prediction=pred,
                       prediction_norm=pred_norm, correct=pred == e.gold)
        scores.update(accuracy=mc["accuracy"], accuracy_norm=mc["accuracy_norm"])
        per_example["accuracy"] = [float(p == e.gold) for p, e in zip(mc["pred"], examples)]
        if "multiple_choice_grade" in task.metrics:
            grades = [e.choice_scores[p] if e.choice_scores else float(p == e.gold) for p, e in zip(mc["pred"], examples)]
            scores["multiple_choice_grade"] = sum(grades) / len(grades)
            per_example["multiple_choice_grade"] = grades
        if "macro_f1" in task.metrics:
            scores["macro_f1"] = macro_f1([e.gold for e in examples], mc["pred"])
    wanted_gen = [m for m in task.metrics if m in GEN_METRICS]
    if task.kind == "generate" or wanted_gen:
        raw, gen_stats = _generate(model, fmt, examples, cfg, journal, "generate", desc=f"{task.name} (generate)")
        outputs = [postprocess(r, task.stop_string, task.output_regex) for r in raw]
        for row, o, r in zip(rows, outputs, raw):
            row.update(generated=r, output=o)
        g = generation_metrics(outputs, [e.targets for e in examples], wanted_gen or ["exact_str_match"])
        scores.update(g["scores"])
        per_example.update(g["per_example"])
        not_computed.update(g["not_computed"])
        for row, em in zip(rows, g["per_example"].get("exact_str_match", [])):
            row["exact_match"] = bool(em)
    for m in task.metrics:
        if not any(k == m or k.startswith(m + "_") for k in scores) and m not in not_computed:
            not_computed[m] = "not implemented in tunebench"
    primary = task.preferred if task.preferred in per_example else ("accuracy" if "accuracy" in per_example else next(iter(per_example)))
    for row, s in zip(rows, per_example[primary]):
        row["score"] = s
    if task.kind == "multiple_choice":
        base_pred = [r["prediction"] for r in rows]
        base_ok = [bool(r["correct"]) for r in rows]
    else:
        base_pred = [r["output"] for r in rows]
        base_ok = [bool(x) for x in per_example.get("exact_str_match", per_example[primary])]
    wanted = set(cfg.metrics)
    perturbed = {}
    for family, table in (("robustness", ROBUSTNESS), ("fairness", FAIRNESS)):
        if "all" in wanted or family in wanted:
            perturbed[family] = {name: _outcomes(task, task.load(cfg.shots, cfg.seed, seeded(fn, name, cfg.seed))[: len(examples)],
                                                 scorer, model, fmt, cfg, journal, name)
                                 for name, fn in table.items()}
    seconds = time.time() - t0
    families = {
        "accuracy": {k: v for k, v in scores.items()} | {"primary_metric": primary, "primary": scores[primary]},
        "calibration": calibration_for_rows(rows if task.kind == "multiple_choice" else []),
        "efficiency": efficiency(seconds, len(examples), scorer.tokens - tokens0 + gen_stats["prompt_tokens"],
                                 scorer.sum_sq_lengths - sq0 + gen_stats["sum_sq_lengths"], gen_stats["generated_tokens"],
                                 gen_stats["seconds"], model, peak, sum(len(runs) for runs in perturbed.values())),
    }
    for family, summary in (("robustness", lambda r: robustness_summary(base_ok, r)),
                            ("fairness", lambda r: fairness_summary(base_pred, base_ok, r))):
        families[family] = summary(perturbed[family]) if family in perturbed else {
            "not_run": f"costs {len(ROBUSTNESS if family == 'robustness' else FAIRNESS)} more passes: "
                       f"tunebench bench --metrics {family} (or all)"}
    if task.kind == "multiple_choice" and "output" not in rows[0]:
        reason = "multiple-choice answers are scored, not generated: there is no text to measure"
        families["bias"] = families["toxicity"] = {"not_applicable": reason}
    else:
        outputs = [r["output"] for r in rows]
        families["bias"], families["toxicity"] = bias(outputs), toxicity(outputs)
    families = {f: families[f] for f in FAMILIES}  # the seven, always in the same order
    entry = {"name": task.name, "family": task.family, "category": task.category, "kind": task.kind,
             "metric_names": sorted(scores), "scores": scores, "primary_metric": primary, "primary": scores[primary],
             "n": len(examples), "shots": cfg.shots, "source": task.source, "not_computed": not_computed,
             "metrics": families, "metrics_requested": sorted(cfg.metrics),
             "seconds": round(seconds, 2), "examples_per_s": round(len(examples) / max(seconds, 1e-9), 2)}
    return entry, rows


def _outcomes(task: Task, examples: list[Example], scorer: Scorer, model, fmt: Formatter, cfg, journal: Journal | None,
              tag: str) -> tuple[list, list[bool]]:
    """Predictions and correctness for (perturbed) examples: the choice, or the exact-match output."""
    if task.kind == "multiple_choice":
        pred = multiple_choice_metrics(examples, scorer.score(examples, desc=task.name, journal=journal, tag=tag))["pred"]
        return pred, [p == e.gold for p, e in zip(pred, examples)]
    raw, _ = _generate(model, fmt, examples, cfg, journal, tag, progress=False)
    outs = [postprocess(r, task.stop_string, task.output_regex) for r in raw]
    return outs, [any(o == t.strip() for t in e.targets) for o, e in zip(outs, examples)]


def _generate(model, fmt: Formatter, examples: list[Example], cfg, journal: Journal | None, tag: str,
              **kw) -> tuple[list[str], dict]:
    """Greedy completions of the contexts; those already in the journal are not generated again."""
    from ..generation import generate

    done = journal.done if journal is not None else {}
    todo = [i for i in range(len(examples)) if f"{tag}:{i}" not in done]

    def record(idx: list[int], outs: list[str]) -> None:
        if journal is not None:
            journal.append([{"key": f"{tag}:{todo[j]}", "text": o} for j, o in zip(idx, outs)])

    outs, stats = generate(model, fmt, [examples[i].context for i in todo], cfg.batch_size, cfg.max_new_tokens,
                           on_batch=record, **kw)
    if journal is None:
        return outs, stats
    return [journal.done[f"{tag}:{i}"]["text"] for i in range(len(examples))], stats


def robustness_summary(base_ok: list[bool], runs: dict[str, tuple[list, list[bool]]]) -> dict:
    """HELM robustness: accuracy under each invariance perturbation, and worst case per example
    (right only if right on the original and on every perturbed copy)."""
    n = len(base_ok)
    per = {name: sum(ok) / n for name, (_, ok) in runs.items()}
    worst = sum(all([base_ok[i]] + [ok[i] for _, ok in runs.values()]) for i in range(n)) / n
    return {"perturbations": per, "perturbed_accuracy_mean": sum(per.values()) / len(per), "worst_case_accuracy": worst,
            "accuracy_unperturbed": sum(base_ok) / n}


def fairness_summary(base_pred: list, base_ok: list[bool], runs: dict[str, tuple[list, list[bool]]]) -> dict:
    """HELM fairness: accuracy under each counterfactual swap, the largest gap to the original,
    and the share of examples whose prediction changes."""
    n = len(base_ok)
    acc0 = sum(base_ok) / n
    per = {name: {"accuracy": sum(ok) / n, "accuracy_gap": acc0 - sum(ok) / n,
                  "changed_share": sum(p != q for p, q in zip(base_pred, pred)) / n}
           for name, (pred, ok) in runs.items()}
    changed_any = sum(any(base_pred[i] != pred[i] for pred, _ in runs.values()) for i in range(n)) / n
    return {"counterfactuals": per, "max_accuracy_gap": max(abs(v["accuracy_gap"]) for v in per.values()),
            "changed_share_any": changed_any, "accuracy_unperturbed": acc0,
            "worst_case_accuracy": sum(all([base_ok[i]] + [ok[i] for _, ok in runs.values()]) for i in range(n)) / n}


def multiple_choice_metrics(examples: list[Example], choice_scores) -> dict:
    pred = [max(range(len(cs)), key=lambda k: cs[k].logprob) for cs in choice_scores]
    pred_norm = [max(range(len(cs)), key=lambda k: cs[k].logprob / max(cs[k].chars, 1)) for cs in choice_scores]
    n = len(examples)
    return {"pred": pred, "pred_norm": pred_norm,
            "accuracy": sum(p == e.gold for p, e in zip(pred, examples)) / n,
            "accuracy_norm": sum(p == e.gold for p, e in zip(pred_norm, examples)) / n}


def macro_f1(gold: list[int], pred: list[int]) -> float:
    labels = sorted(set(gold) | set(pred))
    f1s = []
    for c in labels:
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / len(f1s)


def _f1(a: str, b: str) -> float:
    x, y = a.lower().split(), b.lower().split()
    common = sum((Counter(x) & Counter(y)).values())
    if not x or not y or not common:
        return float(x == y)
    p, r = common / len(x), common / len(y)
    return 2 * p * r / (p + r)


def _numeric(o: str, t: str) -> float:
    try:
        a, b = float(o), float(t)
    except ValueError:
        return 0.0
    return float(abs(a - b) <= 0.1 * abs(b)) if b else float(a == b)


def generation_metrics(outputs: list[str], targets: list[list[str]], names: list[str]) -> dict:
    from .. import metrics

    scores, per, missing = {}, {}, {}
    for m in names:
        if m == "exact_str_match":
            per[m] = [float(any(o == t.strip() for t in ts)) for o, ts in zip(outputs, targets)]
        elif m == "case_insensitive_str_match":
            per[m] = [float(any(o.lower() == t.strip().lower() for t in ts)) for o, ts in zip(outputs, targets)]
        elif m == "sequence_f1":
            per[m] = [max(_f1(o, t) for t in ts) for o, ts in zip(outputs, targets)]
        elif m == "numeric_match_with_0_1_relative_error":
            per[m] = [max(_numeric(o, t) for t in ts) for o, ts in zip(outputs, targets)]
        elif m == "bleu":
            scores[m] = metrics.bleu(outputs, targets)
            continue
        elif m == "rouge":
            r = metrics.rouge(outputs, targets)
            scores.update({f"rouge_{k}": v for k, v in r.items()})
            continue
        else:
            missing[m] = "not implemented in tunebench"
            continue
        scores[m] = sum(per[m]) / len(per[m])
    return {"scores": scores, "per_example": per, "not_computed": missing}


def aggregates(entries: list[dict]) -> dict:
    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    out = {"macro": mean([e["primary"] for e in entries]), "by_family": {}, "by_category": {}}
    for key, field in (("by_family", "family"), ("by_category", "category")):
        groups: dict[str, list[float]] = {}
        for e in entries:
            groups.setdefault(e[field], []).append(e["primary"])
        out[key] = {g: mean(v) for g, v in sorted(groups.items())}
    return out


def load_results(run: Path | str) -> dict:
    run = Path(run)
    if not (run / "results.json").is_file():
        raise UserError(f"{run}: not a benchmark run (no results.json; run `tunebench bench --out {run}`)")
    results = read_json(run / "results.json")
    examples: dict[str, dict[str, dict]] = {}
    with (run / "examples.jsonl").open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            examples.setdefault(r["task"], {})[r["id"]] = r
    results["_examples"] = examples
    return results
