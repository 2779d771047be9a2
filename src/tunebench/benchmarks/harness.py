"""Run tasks on a model: per-example results as they go, task metrics, suite aggregates.

Writes DIR/results.json (one entry per task: name, kind, metric names and values, n, shots,
model) and DIR/examples.jsonl (each example's choices, their log-likelihood `scores`, the
`prediction`, and `score`: the example's value of the task's primary metric). Finished tasks
are kept in DIR/tasks/ and not recomputed when the same run is started again.
"""
from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path

from .. import models
from ..errors import UserError
from ..io import processes
from ..io.layout import BENCH_EXAMPLES_FILE, RESULTS_FILE, recorded
from ..io.processes import SharedJournal
from ..io.runs import Stage, inside, read_json, write_json, write_jsonl
from ..metrics.choices import macro_f1, multiple_choice_metrics
from ..metrics.generation import GEN_METRICS, generation_metrics
from ..metrics.helm import (
    FAMILIES,
    PeakMemory,
    bias,
    calibration_for_rows,
    efficiency,
    fairness_summary,
    robustness_summary,
    toxicity,
)
from ..models.batching import Formatter
from ..models.profile import profile_for
from . import bigbench_metrics as bbm
from .bigbench import MAX_LENGTH
from .perturbations import FAIRNESS, ROBUSTNESS, seeded
from .scoring import Scorer, postprocess
from .tasks import (
    BenchmarkTask,
    Example,
    examples_for,
    seed_for,
    subtask_key,
    subtask_limit,
)

SCORING = {
    "lm-eval": ("lm-evaluation-harness conventions: choices scored by log-likelihood, a trailing space of the context "
                "moved to each choice and the choice's tokens read off tokenize(context + choice); accuracy uses the "
                "summed log-probability, accuracy_norm divides it by the choice's length in characters"),
    "bigbench": ("BIG-bench JSON tasks as bigbench 1.0.0's own code scores them (json_task.py, task_metrics.py, "
                 "model_utils.py, results.py): choices appended in BIG-bench's seeded order, context and choice "
                 "tokenized apart, log-probabilities renormalised over the choices, BIG-bench's tie-breaking, "
                 "post-processing and metrics; MMLU, GLUE and SuperGLUE keep the lm-eval conventions"),
}
DEVIATIONS = {"bigbench": [
    "greedy decoding: BIG-bench's Hugging Face wrapper samples (temperature 1, top-k 40), so its generative scores "
    "vary from run to run",
    "generation stops early once BIG-bench's post-processing of the output can no longer change (stop string found, "
    "default regex closed, 256 characters); the scored output is the same as after 256 tokens",
    "rouge: T5's bootstrap median with numpy's generator seeded at 0 (BIG-bench leaves it unseeded)",
    "bleurt is not computed (its checkpoint is a download)",
]}
DEFAULT_NEW_TOKENS = {"bigbench": MAX_LENGTH, "lm-eval": 32}



def bench_config(model_cfg, cfg, tasks: list[BenchmarkTask], limit: int | None) -> dict:
    """The settings a benchmark run records in its manifest (what a skip check compares)."""
    return {"model": model_cfg.model_dump(), "bench": recorded(cfg), "tasks": [t.name for t in tasks], "limit": limit}


def run_bench(model_cfg, cfg, tasks: list[BenchmarkTask], out: Path | str, limit: int | None) -> dict:
    """Under torchrun / accelerate launch every process scores its share of each task's examples
    (journaled in its own file); every process gets every score, and rank 0 writes the files."""
    out = Path(out)
    procs = processes.current()
    device = procs.device(models.default_device())
    dtype = models.pick_dtype(cfg.precision, device)
    config = bench_config(model_cfg, cfg, tasks, limit)
    say = print if procs.main else (lambda *a, **k: None)
    with Stage(out, "bench", config) as st:
        model, tok, resolved = models.load(model_cfg.model, dtype, model_cfg.trust_remote_code)
        model.to(device)
        fmt = Formatter.for_model(tok, model.config.is_encoder_decoder, cfg.chat_template, raw=True)
        scorer = Scorer(model, fmt, cfg.batch_size)
        # everything that changes the numbers: two runs are compared only when these are equal
        fmt_info = {"chat_template": fmt.use_chat, "shots": cfg.shots, "seed": cfg.seed, "limit": limit,
                    "select": cfg.select, "max_new_tokens": cfg.max_new_tokens, "scoring": cfg.scoring,
                    "precision": str(dtype).replace("torch.", ""), "decoding": "greedy"}
        entries, t0 = [], time.time()
        (out / "tasks").mkdir(exist_ok=True)
        for i, task in enumerate(tasks, 1):
            cache = inside(out, "tasks/" + re.sub(r"[^A-Za-z0-9_.-]", "__", task.name) + ".json")
            if cache.is_file():
                done = read_json(cache)
                if (done["entry"]["format"] == fmt_info and done["entry"]["model"] == model_cfg.model
                        and done["entry"].get("metrics_requested") == sorted(cfg.metrics)):
                    entries.append(done)
                    say(f"[bench] {i}/{len(tasks)} {task.name}: done earlier, kept")
                    continue
            # per-example results journaled as they come: a killed run recomputes only what is missing
            journal = SharedJournal(cache.with_suffix(".partial.jsonl"), {"task": task.name, "model": model_cfg.model_dump(),
                                                                          "format": fmt_info, "metrics": sorted(cfg.metrics)},
                                    procs)
            if journal.note():
                print(f"[bench] {journal.note()}", flush=True)
            entry, rows = run_task(task, scorer, model, fmt, cfg, limit, journal)
            entry.update(model=model_cfg.model, format=fmt_info)
            if procs.main:
                write_json(cache, {"entry": entry, "examples": rows})
                journal.discard()
            entries.append({"entry": entry, "examples": rows})
            say(f"[bench] {i}/{len(tasks)} {task.name}: {entry['primary_metric']}={entry['primary']:.3f} "
                f"(n={entry['n']}, {entry['seconds']:.0f}s)")
        conventions = sorted({e["entry"]["scoring"] for e in entries})
        results = {
            "model": model_cfg.model, "model_path": resolved.path, "adapter": resolved.adapter,
            "format": fmt_info, "limit": limit, "precision": fmt_info["precision"],
            "scoring": {c: {"note": SCORING[c], "deviations": DEVIATIONS.get(c, [])} for c in conventions},
            "tasks": [e["entry"] for e in entries], "aggregates": aggregates([e["entry"] for e in entries]),
            "efficiency": {"seconds": round(time.time() - t0, 1),
                           "examples": sum(e["entry"]["n"] for e in entries),
                           **({"processes": procs.world} if procs.world > 1 else {})},
        }
        if procs.main:
            write_json(out / RESULTS_FILE, results)
            write_jsonl(out / BENCH_EXAMPLES_FILE, (r for e in entries for r in e["examples"]))
            if cfg.output_format == "lm-eval":
                from . import lm_eval_format

                lm_eval_format.write(out, results, entries, {
                    "model": model, "tokenizer": tok, "use_chat": fmt.use_chat, "bench": cfg, "started": st.t0,
                    "device": str(device), "sizes": {t.name: t.size for t in tasks},
                    "max_new_tokens": {c: cfg.max_new_tokens or n for c, n in DEFAULT_NEW_TOKENS.items()}})
        st.extra["summary"] = {"tasks": len(entries), "macro": results["aggregates"]["macro"]}
    return results


def run_task(task: BenchmarkTask, scorer: Scorer, model, fmt: Formatter, cfg, limit: int | None,
             journal: SharedJournal | None = None) -> tuple[dict, list[dict]]:
    """One task's entry for results.json and its per-example rows."""
    peak = PeakMemory("task")  # resets the peak counters: the efficiency figures get this task's own peak
    part = _run_container(task, scorer, model, fmt, cfg, limit, journal) if task.subtasks else \
        _run_leaf(task, scorer, model, fmt, cfg, limit, journal)
    entry, rows = part["entry"], part["rows"]
    base_pred, base_ok = part["outcome"]
    perturbed = part["perturbed"]
    families = {
        "accuracy": dict(entry["scores"]) | {"primary_metric": entry["primary_metric"], "primary": entry["primary"]},
        "calibration": calibration_for_rows([r for r in rows if "scores" in r]),
        "efficiency": efficiency(part["seconds"], len(rows), part["tokens"], part["sum_sq"], part["generated"],
                                 part["gen_seconds"], model, peak, sum(len(runs) for runs in part["perturbed"].values())),
    }
    for family, summary in (("robustness", lambda r: robustness_summary(base_ok, r)),
                            ("fairness", lambda r: fairness_summary(base_pred, base_ok, r))):
        families[family] = summary(perturbed[family]) if family in perturbed else {
            "not_run": f"costs {len(ROBUSTNESS if family == 'robustness' else FAIRNESS)} more passes: "
                       f"tunebench bench --metrics {family} (or all)"}
    outputs = [r["output"] for r in rows if "output" in r]
    if not outputs:
        reason = "multiple-choice answers are scored, not generated: there is no text to measure"
        families["bias"] = families["toxicity"] = {"not_applicable": reason}
    else:
        families["bias"], families["toxicity"] = bias(outputs), toxicity(outputs)
    entry["metrics"] = {f: families[f] for f in FAMILIES}  # the seven, always in the same order
    entry.update(n=len(rows), shots=cfg.shots, source=task.source, metrics_requested=sorted(cfg.metrics),
                 seconds=round(part["seconds"], 2), examples_per_s=round(len(rows) / max(part["seconds"], 1e-9), 2))
    return entry, rows


def _run_container(task: BenchmarkTask, scorer: Scorer, model, fmt: Formatter, cfg, limit: int | None,
                   journal: SharedJournal | None) -> dict:
    """A BIG-bench container: each subtask scored on its own (limit // subtasks examples), the
    scores averaged over subtasks (BIG-bench's add_aggregate_scores). Each example row carries a
    `weight` (1 / (subtasks x its subtask's examples)), so the weighted mean of the rows' `score`
    is the task's primary score."""
    per = subtask_limit(task, limit)
    parts = []
    for sub in task.subtasks:
        key = subtask_key(sub)
        p = _run_leaf(sub, scorer, model, fmt, cfg, per, journal, prefix=f"{key}/")
        for r in p["rows"]:
            r.update(task=task.name, id=f"{key}:{r['id']}", subtask=key)
        parts.append((key, p))
    convention = parts[0][1]["entry"]["scoring"]
    subs = [{"scores": p["entry"]["scores"], "preferred": p["entry"]["preferred_metric"], "low": p["low"], "high": p["high"]}
            for _, p in parts]
    if convention == "bigbench":
        scores, preferred = bbm.aggregate(subs, container=True)
    else:
        names = sorted({m for s in subs for m in s["scores"]})
        scores = {m: statistics.mean(s["scores"][m] for s in subs if m in s["scores"]) for m in names}
        preferred = parts[0][1]["entry"]["primary_metric"]
    primary = preferred if preferred in scores else next(iter(scores))
    rows, pred, ok = [], [], []
    for key, p in parts:
        n, metric = len(p["rows"]), p["entry"]["primary_metric"]
        for r in p["rows"]:
            # the row's share of the task's primary score
            r["weight"] = 1 / (len(parts) * n)
            if primary == "normalized_aggregate_score":
                r["score"] = bbm.normalized(r["score"], p["low"], p["high"])
            elif metric != primary:
                raise UserError(f"{task.name}: subtasks report different primary metrics; no per-example score for {primary}")
        rows += p["rows"]
        pred += p["outcome"][0]
        ok += p["outcome"][1]
    perturbed = {}
    for family in parts[0][1]["perturbed"]:
        perturbed[family] = {name: ([x for _, p in parts for x in p["perturbed"][family][name][0]],
                                    [x for _, p in parts for x in p["perturbed"][family][name][1]])
                             for name in parts[0][1]["perturbed"][family]}
    entry = {"name": task.name, "family": task.family, "category": task.category, "kind": task.kind,
             "scoring": convention, "metric_names": sorted(scores), "scores": scores, "preferred_metric": preferred,
             "primary_metric": primary, "primary": scores[primary],
             "subtasks": {key: {"n": len(p["rows"]), "scores": p["entry"]["scores"],
                                "preferred_metric": p["entry"]["preferred_metric"]} for key, p in parts},
             "not_computed": {f"{key}:{m}": why for key, p in parts for m, why in p["entry"]["not_computed"].items()}}
    return {"entry": entry, "rows": rows, "outcome": (pred, ok), "perturbed": perturbed,
            **{k: sum(p[k] for _, p in parts) for k in ("seconds", "tokens", "sum_sq", "generated", "gen_seconds")}}


def _run_leaf(task: BenchmarkTask, scorer: Scorer, model, fmt: Formatter, cfg, limit: int | None, journal: SharedJournal | None,
              prefix: str = "") -> dict:
    """A task with examples: its scores, per-example rows, the (prediction, right?) outcomes for the
    robustness and fairness comparisons, and what the model ran (for the efficiency figures)."""
    t0 = time.time()
    tokens0, sq0 = scorer.tokens, scorer.sum_sq_lengths
    convention = task.scoring(cfg.scoring)
    run = _Pass(task, convention, scorer, model, fmt, cfg, journal, prefix)
    examples = examples_for(task, cfg.shots, cfg.seed, limit, cfg.select, cfg.scoring)
    if not examples:
        raise UserError(f"{task.name}: no examples to score")
    rows = [{"task": task.name, "id": e.id, "context": e.context} for e in examples]
    main = run(examples, "", progress=True)
    if convention == "bigbench":
        scores, per_example, not_computed = _bigbench_scores(task, run, examples, rows, main)
    else:
        scores, per_example, not_computed = _lm_eval_scores(task, examples, rows, main)
    preferred = task.bigbench.preferred if convention == "bigbench" else task.preferred
    primary = (preferred if preferred in per_example else
               "accuracy" if "accuracy" in per_example else
               "multiple_choice_grade" if "multiple_choice_grade" in per_example else next(iter(per_example)))
    for row, s in zip(rows, per_example[primary]):
        row["score"] = s
    perturbed = {}
    for family, table in (("robustness", ROBUSTNESS), ("fairness", FAIRNESS)):
        if "all" in cfg.metrics or family in cfg.metrics:
            perturbed[family] = {name: run(examples_for(task, cfg.shots, cfg.seed, limit, cfg.select, cfg.scoring,
                                                        seeded(fn, name, seed_for(cfg.seed, convention))), name)["outcome"]
                                 for name, fn in table.items()}
    spec = task.bigbench
    low, high = (spec.low_score, spec.high_score) if spec is not None and convention == "bigbench" else (0.0, 1.0)
    entry = {"name": task.name, "family": task.family, "category": task.category, "kind": task.kind,
             "scoring": convention, "metric_names": sorted(scores), "scores": scores,
             "preferred_metric": preferred if preferred in scores else primary,
             "primary_metric": primary, "primary": scores[primary], "not_computed": not_computed}
    return {"entry": entry, "rows": rows, "outcome": main["outcome"], "perturbed": perturbed, "low": low, "high": high,
            "seconds": time.time() - t0, "tokens": scorer.tokens - tokens0 + run.stats["prompt_tokens"],
            "sum_sq": scorer.sum_sq_lengths - sq0 + run.stats["sum_sq_lengths"],
            "generated": run.stats["generated_tokens"], "gen_seconds": run.stats["seconds"]}


class _Pass:
    """One pass of a task's model work over a list of examples (the original ones, or a perturbed
    copy): choice scores when the task has choices to score, generations when its metrics read
    text, and the outcome (prediction, right?) per example that robustness and fairness compare."""

    def __init__(self, task: BenchmarkTask, convention: str, scorer: Scorer, model, fmt: Formatter, cfg, journal, prefix: str):
        self.task, self.convention, self.scorer, self.model, self.fmt = task, convention, scorer, model, fmt
        self.cfg, self.journal, self.prefix = cfg, journal, prefix
        self.stats = {"prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0, "sum_sq_lengths": 0}
        spec = task.bigbench if convention == "bigbench" else None
        self.spec = spec
        self.choices = bool(spec.mc_metrics) if spec is not None else task.kind == "multiple_choice"
        self.text = bool(spec.generative_metrics) if spec is not None else \
            task.kind == "generate" or any(m in GEN_METRICS for m in task.metrics)

    def __call__(self, examples: list[Example], tag: str, progress: bool = False) -> dict:
        out: dict = {}
        desc = self.task.name + (f" ({tag})" if tag else "")
        if self.choices:
            cs = self.scorer.score(examples, desc=desc, journal=self.journal, tag=self.prefix + (tag or "score"),
                                   convention=self.convention)
            out["choice_scores"] = cs
            if self.spec is not None:
                absolute = [[c.logprob for c in x] for x in cs]
                lp = [bbm.log_probs(a, self.spec.absolute_normalization) for a in absolute]
                pred = [bbm.argmax(x) for x in lp]
                ok = [e.choice_scores[p] == max(e.choice_scores) for p, e in zip(pred, examples)]
                out.update(log_prob=lp)
            else:
                pred = [max(range(len(x)), key=lambda k: x[k].logprob) for x in cs]
                ok = [p == e.gold for p, e in zip(pred, examples)]
            out.update(pred=pred, outcome=(pred, ok))
        if self.text:
            raw, stats = self._generate(examples, self.prefix + (f"{tag}/generate" if tag else "generate"),
                                        progress, desc + " (generate)")
            for k in self.stats:
                self.stats[k] += stats.get(k, 0)
            if self.spec is not None:
                outputs = [bbm.postprocess(r, self.spec.stop_string, self.spec.output_regex) for r in raw]
                ok = [o in e.targets for o, e in zip(outputs, examples)]
            else:
                outputs = [postprocess(r, self.task.stop_string, self.task.output_regex) for r in raw]
                ok = [any(o == t.strip() for t in e.targets) for o, e in zip(outputs, examples)]
            out.update(raw=raw, outputs=outputs)
            if not self.choices:
                out["outcome"] = (outputs, ok)
        return out

    def _generate(self, examples: list[Example], tag: str, progress: bool, desc: str) -> tuple[list[str], dict]:
        """Greedy completions of the contexts; those already in the journal are not generated again."""
        from ..generation import generate, merge_stats

        spec = self.spec
        done = self.journal.done if self.journal is not None else {}
        todo = [i for i in range(len(examples)) if f"{tag}:{i}" not in done]
        procs = processes.current()
        mine = procs.share(todo, lambda i: len(examples[i].context))

        def record(idx: list[int], outs: list[str]) -> None:
            if self.journal is not None:
                self.journal.append([{"key": f"{tag}:{mine[j]}", "text": o} for j, o in zip(idx, outs)])

        kw = {} if spec is None else {"strip": False, "settled": lambda t: bbm.settled(t, spec.stop_string, spec.output_regex)}
        rows = max(self.cfg.batch_size, profile_for(self.model.device).generate_rows)  # decode steps cost ~the same for 8 or 64
        outs, stats = generate(self.model, self.fmt, [examples[i].context for i in mine], rows,
                               self.cfg.max_new_tokens or DEFAULT_NEW_TOKENS[self.convention], on_batch=record,
                               desc=desc, progress=progress and procs.main, **kw)
        new = dict(zip(mine, outs))
        if procs.world > 1:  # every process needs every output: each computes the task's metrics
            parts = procs.all_gather((new, stats))
            new, stats = {i: o for part, _ in parts for i, o in part.items()}, merge_stats([s for _, s in parts])
        elif self.journal is None:
            return outs, stats
        return [new[i] if i in new else done[f"{tag}:{i}"]["text"] for i in range(len(examples))], stats

    def target_scores(self, examples: list[Example]) -> list[list[float]]:
        """Absolute log-probabilities of each example's targets (BIG-bench's log_likelihood)."""
        cs = self.scorer.score(examples, desc=f"{self.task.name} (targets)", journal=self.journal,
                               tag=self.prefix + "targets", convention=self.convention, choices=lambda e: e.targets)
        return [[c.logprob for c in x] for x in cs]


def _bigbench_scores(task: BenchmarkTask, run: _Pass, examples: list[Example], rows: list[dict], main: dict):
    spec = task.bigbench
    scores, per, missing = {}, {}, {}
    if "choice_scores" in main:
        samples = []
        for row, e, cs, lp, p in zip(rows, examples, main["choice_scores"], main["log_prob"], main["pred"]):
            absolute = [c.logprob for c in cs]
            samples.append({"choice": e.choices, "target_scores": dict(zip(e.choices, e.choice_scores)),
                            "log_prob": lp, "absolute_log_prob": absolute})
            # scores: each choice's absolute (summed) log-likelihood; log_prob: renormalised, what BIG-bench picks by
            row.update(choices=e.choices, choice_scores=e.choice_scores, gold=e.gold, targets=e.targets, scores=absolute,
                       log_prob=lp, prediction=p, correct=e.choice_scores[p] == max(e.choice_scores))
        s, p, m = bbm.mc_metrics(samples, spec.mc_metrics)
        scores.update(s), per.update(p), missing.update(m)
    if "outputs" in main:
        for row, o, r, e in zip(rows, main["outputs"], main["raw"], examples):
            row.update(generated=r, output=o, targets=e.targets)
        s, p, m = bbm.generative_metrics([e.targets for e in examples], main["outputs"], spec.generative_metrics)
        scores.update(s), per.update(p), missing.update(m)
    if spec.scoring_metrics:
        scores.update(bbm.log_likelihood(run.target_scores(examples), [e.targets for e in examples]))
    if spec.preferred in scores:
        scores["normalized_aggregate_score"] = bbm.normalized(scores[spec.preferred], spec.low_score, spec.high_score)
    else:
        missing.setdefault(spec.preferred, "preferred score not computed")
    if not per:
        per["exact_str_match"] = [float(o in e.targets) for o, e in zip(main.get("outputs", []), examples)]
    return scores, per, missing


def _lm_eval_scores(task: BenchmarkTask, examples: list[Example], rows: list[dict], main: dict):
    scores: dict[str, float] = {}
    per_example: dict[str, list[float]] = {}
    not_computed: dict[str, str] = {}
    if "choice_scores" in main:
        choice_scores = main["choice_scores"]
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
    if "outputs" in main:
        wanted_gen = [m for m in task.metrics if m in GEN_METRICS]
        for row, o, r in zip(rows, main["outputs"], main["raw"]):
            row.update(generated=r, output=o)
        g = generation_metrics(main["outputs"], [e.targets for e in examples], wanted_gen or ["exact_str_match"])
        scores.update(g["scores"])
        per_example.update(g["per_example"])
        not_computed.update(g["not_computed"])
        for row, em in zip(rows, g["per_example"].get("exact_str_match", [])):
            row["exact_match"] = bool(em)
    for m in task.metrics:
        if not any(k == m or k.startswith(m + "_") for k in scores) and m not in not_computed:
            not_computed[m] = "not implemented in tunebench"
    return scores, per_example, not_computed


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
    """A benchmark run's results.json."""
    run = Path(run)
    if not (run / RESULTS_FILE).is_file():
        raise UserError(f"{run}: not a benchmark run (no {RESULTS_FILE}; run `tunebench bench --out {run}`)")
    return read_json(run / RESULTS_FILE)


def load_examples(run: Path | str) -> dict[str, dict[str, dict]]:
    """A benchmark run's per-example rows, by task and example id."""
    examples: dict[str, dict[str, dict]] = {}
    with (Path(run) / BENCH_EXAMPLES_FILE).open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            examples.setdefault(r["task"], {})[r["id"]] = r
    return examples
