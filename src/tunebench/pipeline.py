"""The stages as functions over run directories, and `run`, which chains them from a recipe."""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import models
from .config import (
    CONTAMINATION_MIN_WORDS,
    CONTAMINATION_N,
    ContaminationConfig,
    DataConfig,
    GenerateConfig,
    MixtureConfig,
    ModelConfig,
    Recipe,
    TrainConfig,
)
from .data.contamination import ScoredRows
from .data.examples import SPLITS, load_prepared, prepare
from .data.sources import Pool
from .data.templates import PromptTask
from .errors import UserError
from .generation import generate, merge_stats
from .io import processes
from .io.layout import (
    MANIFEST,
    METRICS_FILE,
    PREDICTIONS_FILE,
    PREDICTIONS_PARTIAL_FILE,
    RESULTS_FILE,
    Prediction,
    RecipeRun,
    recorded,
    stage_config,
)
from .io.locations import data_root
from .io.processes import SharedJournal
from .io.runs import Stage, completed, read_json, write_json, write_jsonl
from .models.batching import Formatter, prompt_of
from .reports import compare as compare_mod


def prepare_stage(cfg: DataConfig, out: Path | str, mixture: MixtureConfig | None = None,
                  contamination: ContaminationConfig | None = None, evaluation: dict | None = None) -> dict:
    """Prepared splits; with `mixture`, a multi-task training set (mixture.json); with `contamination`
    and `evaluation` (what the run will evaluate on), the overlap check (contamination.json)."""
    checking = contamination is not None and contamination.enabled and evaluation is not None
    with Stage(out, "prepare", prepare_config(cfg, mixture, contamination, evaluation)) as st:
        n, min_words = (contamination.n, contamination.min_words) if contamination else (CONTAMINATION_N, CONTAMINATION_MIN_WORDS)
        if mixture is not None:
            from .data import mixtures

            train, validation, plan = build_mixture(mixture, n, min_words)
            examples, summary = prepare(cfg, only=("test",))
            examples.update(train=train, validation=validation)
        else:
            examples, summary = prepare(cfg)
        dropped: Counter = Counter()
        if checking:
            from .data import contamination as contam

            report = contam.check_run(examples, cfg, contamination, evaluation, evaluation_benchmarks(evaluation))
            if contamination.drop:
                before = examples["train"]
                examples["train"] = contam.drop(before, report)
                gone = set(report["dropped"])
                dropped = Counter(r.get("task") for r in before if r["id"] in gone)
                summary["counts"]["train"] = len(examples["train"])
                summary.setdefault("templates", {})["train"] = dict(Counter(r["template"] for r in examples["train"]))
            write_json(Path(out) / "contamination.json", report)
            contam.print_report(report, contamination.show)
            summary["contamination"] = contam.summary_line(report)
        if mixture is not None:
            realised = mixtures.realised(examples["train"], examples["validation"], plan, dropped)
            write_json(Path(out) / "mixture.json", realised)
            mixtures.print_table(realised)
            summary = mixtures.summary(realised, examples, summary)
        for split in SPLITS:
            write_jsonl(Path(out) / f"{split}.jsonl", examples[split])
        st.extra["summary"] = summary
    return summary


def contamination_stage(data_dir: Path, data_cfg: DataConfig, cfg: ContaminationConfig, evaluation: dict,
                        out: Path) -> dict:
    """`tunebench contamination`: a prepared training set's overlap with what `evaluation` names
    (contamination.json in `out`); with `cfg.drop`, the overlapping examples leave train.jsonl."""
    from .data import contamination as contam

    examples = {"train": load_prepared(data_dir, "train")}
    split = evaluation.get("split")
    if split and (data_dir / f"{split}.jsonl").is_file():
        examples[split] = load_prepared(data_dir, split)
    report = contam.check_run(examples, data_cfg, cfg, evaluation, evaluation_benchmarks(evaluation))
    if cfg.drop and report["contaminated_train"]:
        write_jsonl(data_dir / "train.jsonl", contam.drop(examples["train"], report))
    write_json(out / "contamination.json", report)
    contam.print_report(report, cfg.show)
    if report["dropped"]:
        print(f"{data_dir}/train.jsonl: {len(report['dropped'])} examples dropped; train again on it for a clean model")
    return report


def reserved_rows(task: PromptTask) -> list[ScoredRows]:
    """The benchmark rows a prompt task's training pool leaves out: for each `source.reserve` entry,
    the first N examples that benchmark scores (what `sources.pool` and `mixtures.build` take)."""
    if task.data is None:
        return []
    from .benchmarks.tasks import registry

    out = []
    for r in task.data.reserve:
        if r["benchmark"] not in registry():
            raise UserError(f"{task.source}: source.reserve names unknown benchmark '{r['benchmark']}'")
        out.append(_first_scored(str(data_root()), r["benchmark"], r["first"]))
    return out


@lru_cache(maxsize=64)
def _first_scored(root: str, name: str, first: int) -> ScoredRows:
    """The first `first` examples benchmark `name` scores (as a forgetting run picks them by default)."""
    from .benchmarks.tasks import registry, scored_rows

    return scored_rows([registry()[name]], first)[0]


def task_pool(task: PromptTask, n: int = CONTAMINATION_N, min_words: int = CONTAMINATION_MIN_WORDS) -> Pool:
    """A prompt task's training pool, its reserved benchmark rows left out."""
    from .data.sources import pool

    return pool(task, n, min_words, reserved_rows(task))


def build_mixture(mixture: MixtureConfig, n: int = CONTAMINATION_N, min_words: int = CONTAMINATION_MIN_WORDS) -> tuple[list[dict], list[dict], dict]:
    """`mixtures.build` with each task's reserved benchmark rows left out of its pool."""
    from .data import mixtures

    reserved = {task.name: reserved_rows(task) for task, _ in mixtures.resolve(mixture)}
    return mixtures.build(mixture, n, min_words, reserved)


def evaluation_benchmarks(evaluation: dict) -> list[ScoredRows] | None:
    """The scored rows of the benchmarks an evaluation (`evaluation_of`) names, for `contamination.check_run`."""
    bench = evaluation.get("benchmarks")
    if not bench:
        return None
    from .benchmarks.tasks import resolve_tasks, scored_rows

    tasks, suite_limit = resolve_tasks(bench.get("task", []), bench.get("suite", []))
    return scored_rows(tasks, bench.get("limit") or suite_limit, bench.get("shots", 0), bench.get("seed"),
                       bench.get("select", "first"), bench.get("scoring", "bigbench"))


def prepare_config(cfg: DataConfig, mixture=None, contamination=None, evaluation=None) -> dict:
    """The settings a prepared directory depends on (a plain data section stays as it was: old runs resume)."""
    checking = contamination is not None and contamination.enabled and evaluation is not None
    if mixture is None and not checking:
        return recorded(cfg)
    return {"data": recorded(cfg), "mixture": mixture.model_dump() if mixture else None,
            "contamination": contamination.model_dump() if checking else None, "evaluation": evaluation if checking else None}


def evaluation_of(recipe: Recipe) -> dict:
    """What a recipe evaluates on: the summarization split and the forgetting benchmarks."""
    ev = {"split": recipe.evaluate.split, "limit": recipe.evaluate.limit}
    f = recipe.forgetting
    if f and f.enabled:
        ev["benchmarks"] = {"suite": f.suite, "task": f.task, "limit": f.limit, "shots": f.shots, "seed": f.seed,
                            "select": f.select, "scoring": f.scoring}
    return ev


def train_stage(model_cfg: ModelConfig, cfg: TrainConfig, data_dir: Path | str, out: Path | str, resume: bool = False) -> dict:
    from .training import train

    config = stage_config(data_dir, model=model_cfg, train=cfg)
    with Stage(out, "train", config) as st:
        summary = train(model_cfg, cfg, data_dir, out, resume=resume)
        st.extra["summary"] = summary
    if processes.current().main:  # the card reads the manifest just written: settings and command
        from .reports import card

        card.write(out)
    return summary


def generate_stage(model_cfg: ModelConfig, cfg: GenerateConfig, data_dir: Path | str, out: Path | str) -> dict:
    """predictions.jsonl (id, prompt, prediction, references) for one split.

    Predictions are journaled as each batch finishes (predictions.partial.jsonl): a killed run
    started again generates only what is missing. Under torchrun / accelerate launch each process
    generates its share of the examples (journaled in its own file) and rank 0 gathers them and
    writes the files: the same predictions as one process.
    """
    examples = load_prepared(data_dir, cfg.split)
    if cfg.limit:
        examples = examples[: cfg.limit]
    if not examples:
        raise UserError(f"{data_dir}/{cfg.split}.jsonl: no examples to generate for")
    procs = processes.current()
    device = procs.device(models.default_device())
    dtype = models.pick_dtype(cfg.precision, device)
    config = stage_config(data_dir, model=model_cfg, generate=cfg)
    with Stage(out, "generate", config) as st:
        # batch size (and the number of processes) changes nothing but speed, so a resumed run may use another
        header = {**config, "generate": cfg.model_dump(exclude={"batch_size"}), "ids": _digest([e["id"] for e in examples])}
        model, tok, resolved = models.load(model_cfg.model, dtype, model_cfg.trust_remote_code)
        journal = SharedJournal(Path(out) / PREDICTIONS_PARTIAL_FILE, header, procs)
        if journal.note():
            print(f"[tunebench] {journal.note()}", flush=True)
        todo = [i for i in range(len(examples)) if str(i) not in journal.done]
        mine = procs.share(todo, lambda i: len(examples[i]["prompt"]))
        model.to(device)
        fmt = Formatter.for_model(tok, model.config.is_encoder_decoder, model_cfg.chat_template)

        def record(idx: list[int], outs: list[str]) -> None:
            journal.append([{"key": str(mine[j]), "prediction": o} for j, o in zip(idx, outs)])

        outs, stats = generate(model, fmt, [prompt_of(examples[i]) for i in mine], cfg.batch_size, cfg.max_new_tokens,
                               cfg.num_beams, desc=f"generate {Path(out).name}" + (f" [rank 0 of {procs.world}]" if procs.world > 1 else ""),
                               progress=procs.main, on_batch=record)
        stats = _gathered(procs, journal, {str(i): {"prediction": o} for i, o in zip(mine, outs)}, stats)
        rows: list[Prediction] = []
        if procs.main:
            rows = [{"id": e["id"], "prompt": e["prompt"], "prediction": journal.done[str(i)]["prediction"],
                     "references": e.get("references") or [e["completion"]]} for i, e in enumerate(examples)]
            write_jsonl(Path(out) / PREDICTIONS_FILE, rows)
            journal.discard()
        st.extra["efficiency"] = {**stats, **_cost(model, stats, st.peak), "precision": str(dtype).replace("torch.", ""),
                                  "device": str(device), "resumed_examples": len(examples) - len(todo),
                                  **({"processes": procs.world} if procs.world > 1 else {})}
        st.extra["model"] = {"name": model_cfg.model, "path": resolved.path, "adapter": resolved.adapter}
    return {"predictions": rows, "efficiency": st.extra["efficiency"]}


def _gathered(procs: processes.Processes, journal: SharedJournal, mine: dict[str, dict], stats: dict) -> dict:
    """Every process's new results into rank 0's journal view, and the efficiency figures of the
    whole launch (counts summed, the slowest process's seconds): rank 0's, the only ones written."""
    parts = procs.gather((mine, stats))
    if parts is None:
        return stats
    for done, _ in parts:
        journal.done.update(done)
    return merge_stats([s for _, s in parts])


def _digest(items: list) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def _cost(model, stats: dict, peak=None) -> dict:
    """Peak memory (the stage's own when `peak` was opened at its start) and the estimated forward
    FLOPs per example of a generation run."""
    from .metrics.helm import efficiency

    e = efficiency(stats["seconds"], stats["examples"], stats["prompt_tokens"], stats["sum_sq_lengths"],
                   stats["generated_tokens"], stats["seconds"], model, peak)
    return {k: e[k] for k in e if k.startswith(("peak_", "process_peak_", "estimated_"))}


def score_stage(out: Path | str, model_name: str, data: str, families: list[str] = ()) -> dict:
    """metrics.json from predictions.jsonl; `families` adds HELM-style metric families."""
    from .io.runs import read_jsonl
    from .metrics import score
    from .metrics.helm import generation_families

    rows = read_jsonl(Path(out) / PREDICTIONS_FILE)
    preds = [r["prediction"] for r in rows]
    m = score(preds, [r["references"] for r in rows])
    manifest = read_json(Path(out) / MANIFEST) if (Path(out) / MANIFEST).is_file() else {}
    metrics = {**m, "n": len(rows), "model": model_name, "data": data,
               "efficiency": manifest.get("efficiency")}
    if families:
        metrics["metrics"] = generation_families(m, preds, manifest.get("efficiency"), families)
    write_json(Path(out) / METRICS_FILE, metrics)
    return metrics


def evaluate_stage(model_cfg: ModelConfig, cfg: GenerateConfig, data_dir: Path | str, out: Path | str) -> dict:
    generate_stage(model_cfg, cfg, data_dir, out)
    if not processes.current().main:  # predictions.jsonl is rank 0's to write and to score
        return {}
    data = f"{Path(data_dir).resolve()}:{cfg.split}" + (f"[:{cfg.limit}]" if cfg.limit else "")
    return score_stage(out, model_cfg.model, data, cfg.metrics)


@dataclass(frozen=True)
class Shared:
    """What the arms of a study share (`tunebench study`): the prepared evaluation data, whose test
    split every arm's tuned model is scored on, the base model's evaluation and its benchmark run."""

    data: Path
    base: Path
    base_bench: Path | None = None


def recipe_stages(recipe: Recipe, shared: Shared | None = None) -> dict[str, tuple[Path, dict]]:
    """Directory and config of each resumable stage of a recipe run: a stage whose directory holds a
    complete manifest with exactly this config is skipped (what `run` does and `run --check` says).
    The stages themselves record the same configs (stage_config). With `shared` (a study's arm) the
    base model's evaluation is the study's and the tuned model is scored on the study's data."""
    run = RecipeRun(Path(recipe.out))
    evaluated_on = shared.data if shared else run.data
    return {
        "prepare": (run.data, prepare_config(recipe.data, recipe.mixture, recipe.contamination, evaluation_of(recipe))),
        "base": (shared.base if shared else run.base, stage_config(evaluated_on, model=recipe.model, generate=recipe.evaluate)),
        "train": (run.train, stage_config(run.data, model=recipe.model, train=recipe.train)),
        "tuned": (run.tuned, stage_config(evaluated_on, model=tuned_model(recipe), generate=recipe.evaluate)),
    }


def tuned_model(recipe: Recipe) -> ModelConfig:
    return recipe.model.model_copy(update={"model": str(RecipeRun(Path(recipe.out)).train)})


def run_recipe(recipe: Recipe, fresh: bool = False, shared: Shared | None = None) -> dict:
    """prepare -> evaluate base -> train -> evaluate tuned -> compare [-> benchmark both -> forgetting].

    Stages already complete with the same settings are skipped, so an interrupted run continues.
    Under torchrun / accelerate launch the model stages (evaluate, train, benchmark) are split over
    the processes; rank 0 alone prepares, compares and reports, and decides what is skipped.
    With `shared` (an arm of a study, after `shared_stages`) the base model is not evaluated or
    benchmarked here: the study's runs are used, and the tuned model is scored on the study's data.
    """
    run = RecipeRun(Path(recipe.out))
    t0 = time.time()
    procs = processes.current()
    stages = recipe_stages(recipe, shared)
    data_dir, base_dir, train_dir, tuned_dir = (stages[k][0] for k in ("prepare", "base", "train", "tuned"))
    forgetting = recipe.forgetting if recipe.forgetting and recipe.forgetting.enabled else None
    total = 7 if forgetting else 5
    step = iter(range(1, total + 1))

    def say(msg):
        n = next(step)
        if procs.main:
            print(f"[tunebench] {n}/{total} {msg}", flush=True)

    def skip(name, also: Path | None = None):
        d, cfg = stages[name]
        return procs.first(lambda: _skipped(d, cfg, fresh, also))

    procs.first(lambda: models.resolve(recipe.model.model))  # converts the registered default once, before the first stage
    say(f"prepare{' mixture' if recipe.mixture else ''}"
        f"{', contamination check' if recipe.contamination.enabled else ''} -> {data_dir}")
    if not skip("prepare"):
        procs.first(lambda: _prepare(recipe, data_dir))
    elif procs.main and (data_dir / "contamination.json").is_file():
        from .data import contamination as contam

        print(f"[tunebench]     {contam.summary_line(read_json(data_dir / 'contamination.json'))}")
    say(f"evaluate base model -> {base_dir}" + (" (the study's, shared by every arm)" if shared else ""))
    if shared is None and not skip("base", base_dir / METRICS_FILE):
        evaluate_stage(recipe.model, recipe.evaluate, data_dir, base_dir)
    say(f"train ({recipe.train.method}) -> {train_dir}")
    if not skip("train"):
        train_stage(recipe.model, recipe.train, data_dir, train_dir, resume=True)
    say(f"evaluate tuned model -> {tuned_dir}")
    tuned = tuned_model(recipe)
    if not skip("tuned", tuned_dir / METRICS_FILE):
        evaluate_stage(tuned, recipe.evaluate, shared.data if shared else data_dir, tuned_dir)
    say(f"compare -> {run.file('compare.md')}")
    result = {"compare": procs.first(lambda: _compare_evaluations(base_dir, tuned_dir, run.root, recipe.compare.examples))}
    if forgetting:
        result["forgetting"] = _forgetting(recipe, forgetting, tuned, say, shared, fresh)
    if procs.main:
        write_json(run.recipe, {"recipe": recipe.model_dump(), "wall_time_s": round(time.time() - t0, 1)})
        from .reports.html import write as write_report

        print(f"[tunebench] report -> {write_report([run.root], run.report)}")
        from .reports import card

        # also when every stage was skipped: an existing run gets its card with the results
        print(f"[tunebench] model card -> {card.write(run.train, run.root)}")
    return result


def _skipped(d: Path, cfg: dict, fresh: bool, also: Path | None) -> bool:
    """A complete stage (and `also`, the file it ends with, there) is not run again."""
    if not fresh and completed(d, cfg):
        print(f"[tunebench]     {d}: already complete, skipped")
        return also is None or also.is_file()
    return False


def _prepare(recipe: Recipe, data_dir: Path) -> None:
    s = prepare_stage(recipe.data, data_dir, recipe.mixture, recipe.contamination, evaluation_of(recipe))
    print(f"[tunebench]     {s['counts']}")


def _compare_evaluations(base_dir: Path, tuned_dir: Path, root: Path, examples: int) -> dict:
    c = compare_mod.compare(base_dir, tuned_dir, examples)
    compare_mod.write(c, root)
    compare_mod.print_table(c)
    return c


def _forgetting(recipe: Recipe, forgetting, tuned: ModelConfig, say, shared: Shared | None = None,
                fresh: bool = False) -> dict:
    """Both models benchmarked (split over the processes), and the forgetting report (rank 0). In a
    study's arm the base model's benchmark run is the study's, and a complete tuned one is skipped."""
    from .benchmarks.harness import run_bench
    from .benchmarks.tasks import resolve_tasks
    from .reports import forgetting as forgetting_mod

    run = RecipeRun(Path(recipe.out))
    tasks, suite_limit = resolve_tasks(forgetting.task, forgetting.suite)
    limit = forgetting.limit or suite_limit
    base_bench = shared.base_bench if shared else run.base_bench
    say(f"benchmark base and tuned models ({len(tasks)} tasks) -> {base_bench}, {run.tuned_bench}")
    if shared is None:
        run_bench(recipe.model, forgetting, tasks, run.base_bench, limit)
        run_bench(tuned, forgetting, tasks, run.tuned_bench, limit)
    else:
        bench_once(tuned, forgetting, run.tuned_bench, fresh)
    say(f"forgetting report -> {run.file('forgetting.md')}")

    def report() -> dict:
        f = forgetting_mod.compare_bench(base_bench, run.tuned_bench)
        forgetting_mod.write(f, run.root)
        forgetting_mod.print_table(f)
        return f

    return processes.current().first(report)


def bench_once(model_cfg: ModelConfig, forgetting, out: Path, fresh: bool = False) -> None:
    """A benchmark run of the forgetting suite, skipped when complete with these settings (a study's)."""
    from .benchmarks.harness import bench_config, run_bench
    from .benchmarks.tasks import resolve_tasks

    tasks, suite_limit = resolve_tasks(forgetting.task, forgetting.suite)
    limit = forgetting.limit or suite_limit
    cfg = bench_config(model_cfg, forgetting, tasks, limit)
    if not processes.current().first(lambda: _skipped(out, cfg, fresh, out / RESULTS_FILE)):
        run_bench(model_cfg, forgetting, tasks, out, limit)


def shared_stage_configs(recipe: Recipe, shared: Shared) -> dict[str, tuple[Path, dict]]:
    """Directory and config of a study's shared stages (what `shared_stages` runs and `study --check`
    says): the evaluation data, and the base model's evaluation as every arm's recipe_stages has it."""
    return {"data": (shared.data, prepare_config(recipe.data)), "base": recipe_stages(recipe, shared)["base"]}


def shared_stages(recipe: Recipe, shared: Shared, fresh: bool = False) -> None:
    """What every arm of a study shares, each done once: the recipe's data prepared (its test split
    is what every arm is scored on), the base model evaluated on it and benchmarked."""
    procs = processes.current()

    def say(msg):
        if procs.main:
            print(f"[tunebench] study: {msg}", flush=True)

    stages = shared_stage_configs(recipe, shared)
    say(f"prepare the evaluation data -> {shared.data}")
    if not procs.first(lambda: _skipped(*stages["data"], fresh, None)):
        procs.first(lambda: prepare_stage(recipe.data, shared.data))
    say(f"evaluate base model -> {shared.base}")
    if not procs.first(lambda: _skipped(*stages["base"], fresh, shared.base / METRICS_FILE)):
        evaluate_stage(recipe.model, recipe.evaluate, shared.data, shared.base)
    if shared.base_bench is not None:
        say(f"benchmark base model -> {shared.base_bench}")
        bench_once(recipe.model, recipe.forgetting, shared.base_bench, fresh)
