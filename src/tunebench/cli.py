"""`tunebench`: a thin CLI over the pipeline. Each stage's flags come from its config model.

A user's mistake (UserError) prints one line to stderr and exits 2; anything else is a bug in
tunebench and keeps its traceback (exit 1).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings

from .config import (
    BenchConfig,
    CompareConfig,
    ContaminationConfig,
    DataConfig,
    GenerateConfig,
    MixtureConfig,
    ModelConfig,
    TrainConfig,
    add_flags,
    from_flags,
    load_recipe,
)
from .errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line like every other user error (not usage + error)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (a subcommand's default must not hide
    a value given before it, hence SUPPRESS)."""
    c = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    c.add_argument("--data-root", default=default, metavar="DIR",
                   help="folder holding dialogsum/, mmlu/, glue/, bigbench/ ... [default: $TUNEBENCH_DATA, a recipe's "
                        "data_root, or shared/data found in the working directory or above]")
    c.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="let libraries (transformers, datasets, huggingface_hub) print their warnings and retries")
    return c


def _sub(subparsers, name: str, **kw) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, parents=[_common(suppress=True)], **kw)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="tunebench", description="Instruction fine-tuning with numbers that show what it did.",
                parents=[_common(suppress=False)])
    p.add_argument("--version", action="version", version=f"tunebench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _stage_commands(sub)
    _benchmark_commands(sub)
    _data_commands(sub)
    _tool_commands(sub)
    _hub_commands(sub)
    _study_command(sub)
    _export_command(sub)
    return p


def _study_command(sub) -> None:
    """Study: a grid of arms over one recipe (full vs LoRA x single- vs multi-task by default)."""
    s = _sub(sub, "study", help="run a grid of arms over one base recipe, with the trade-off of task gain "
                                "against forgetting (study.md/json, pareto.png, report.html)")
    s.add_argument("study", help="study YAML file")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field for every arm, e.g. --set train.max_steps=2 (repeatable)")
    s.add_argument("--check", action="store_true", help="check every arm's recipe and print the plan; run nothing")
    s.add_argument("--fresh", action="store_true", help="redo every stage, even those already complete")


def _stage_commands(sub) -> None:
    """Run, prepare, train, generate and evaluate: the pipeline's stages."""
    r = _sub(sub, "run", help="run a recipe: prepare, evaluate base, train, evaluate tuned, compare")
    r.add_argument("recipe", help="recipe YAML file")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set train.lr=1e-4 (repeatable)")
    r.add_argument("--fresh", action="store_true", help="redo stages that are already complete")
    r.add_argument("--check", action="store_true",
                   help="check the whole recipe without loading a model, print the plan, and stop")

    pr = _sub(sub, "prepare", help="records -> train/validation/test prompt-completion JSONL")
    pr.add_argument("--out", required=True, help="directory for train.jsonl, validation.jsonl, test.jsonl")
    add_flags(pr, DataConfig)
    # --mixture-tasks turns the training split into a multi-task mixture (the data flags still give the test split)
    add_flags(pr, MixtureConfig, prefix="mixture")

    t = _sub(sub, "train", help="fine-tune (LoRA or full) on a prepared data directory")
    t.add_argument("--data", required=True, help="directory written by `tunebench prepare`")
    t.add_argument("--out", required=True, help="training run directory")
    t.add_argument("--resume", action="store_true", help="continue from the last good checkpoint in --out")
    add_flags(t, ModelConfig)
    add_flags(t, TrainConfig)

    for name, help_ in (("generate", "generate completions for a prepared split (predictions.jsonl)"),
                        ("evaluate", "generate and score: predictions.jsonl and metrics.json")):
        g = _sub(sub, name, help=help_)
        g.add_argument("--data", required=True, help="directory written by `tunebench prepare`")
        g.add_argument("--out", required=True, help="evaluation run directory")
        add_flags(g, ModelConfig)
        add_flags(g, GenerateConfig)


def _benchmark_commands(sub) -> None:
    """Bench and compare."""
    b = _sub(sub, "bench", help="score a model on benchmark tasks (results.json, examples.jsonl)")
    b.add_argument("--out", help="benchmark run directory")
    b.add_argument("--list", action="store_true", help="list every task and suite with sizes, then exit")
    add_flags(b, ModelConfig, skip=("chat_template",))
    add_flags(b, BenchConfig)

    c = _sub(sub, "compare", help="two evaluation runs (metric table, examples), two benchmark runs (forgetting), "
                                       "or recipe runs (base and every tuned model, summarization and forgetting suite)")
    c.add_argument("base_run")
    c.add_argument("tuned_run")
    c.add_argument("more_runs", nargs="*", metavar="RUN", help="more recipe run directories")
    c.add_argument("--out", help="where compare.md / compare.json go (default: the tuned run's parent)")
    add_flags(c, CompareConfig)


def _data_commands(sub) -> None:
    """The template library and the contamination check."""
    tp = _sub(sub, "templates", help="the prompt-template library")
    tsub = tp.add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    tl = _sub(tsub, "list", help="every task and its templates")
    tl.add_argument("--task", help="only this task (a name or a task YAML file)")
    tl.add_argument("--task-file", action="append", default=[], help="also list the tasks of this YAML file (repeatable)")
    ts = _sub(tsub, "show", help="a task's templates (or one), rendered on a real record of its data")
    ts.add_argument("name", help="TASK, TASK/TEMPLATE or TEMPLATE")
    ts.add_argument("--template", help="only this template of TASK")
    ts.add_argument("--index", type=int, default=0, help="which usable record of the task's training file [default: 0]")
    ts.add_argument("--shots", type=int, default=0, help="render few-shot, with the next records as exemplars")
    ts.add_argument("--task-file", action="append", default=[], help="a YAML file declaring TASK (repeatable)")

    ct = _sub(sub, "contamination", help="n-gram overlap of a prepared training set with evaluation sets")
    ct.add_argument("--data", help="prepared directory (train.jsonl); default with --recipe: OUT/data")
    ct.add_argument("--recipe", help="check exactly what this recipe evaluates on (its test split, its forgetting suite)")
    ct.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    ct.add_argument("--suite", action="append", default=[], help="benchmark suite to check against (repeatable)")
    ct.add_argument("--task", action="append", default=[], help="benchmark task to check against (repeatable)")
    ct.add_argument("--limit", type=int, help="first N examples per benchmark task (default: the suite's)")
    ct.add_argument("--shots", type=int, default=0)
    ct.add_argument("--eval-dataset", help="a dataset (dialogsum or a path) whose --eval-split is an evaluation set")
    ct.add_argument("--eval-task", default="dialogsum", help="its template task (for its field names) [default: dialogsum]")
    ct.add_argument("--eval-split", default="test", choices=["validation", "test"])
    ct.add_argument("--eval-limit", type=int, help="first N examples of that split")
    ct.add_argument("--out", help="where contamination.json goes [default: the --data directory]")
    add_flags(ct, ContaminationConfig, skip=("enabled",))


def _tool_commands(sub) -> None:
    """Report, chat and the model registry."""
    rp = _sub(sub, "report", help="one self-contained HTML report from run directories")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("-o", "--output", default="report.html", help="HTML file to write [default: report.html]")

    ch = _sub(sub, "chat", help="talk to a model (base or tuned) with the training prompt format")
    ch.add_argument("model", metavar="MODEL_OR_RUN")
    ch.add_argument("--compare", action="store_true", help="answer with the base and the tuned model side by side")
    ch.add_argument("--template", help="render each input through this template first (e.g. dialogsum/summarize_conversation)")
    ch.add_argument("--max-new-tokens", type=int, default=128)
    ch.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto")
    ch.add_argument("--trust-remote-code", action="store_true")

    _sub(sub, "models", help="registered model names")


def _hub_commands(sub) -> None:
    """Push: a training run to the Hugging Face Hub."""
    ps = _sub(sub, "push", help="upload a training run to the Hugging Face Hub: the merged model (else the adapter), "
                                "the model card, the report")
    ps.add_argument("run", metavar="RUN", help="a training run (tunebench train --out) or a recipe run's directory")
    ps.add_argument("--repo", required=True, metavar="ORG/NAME", help="the Hub model repository (created if missing)")
    ps.add_argument("--dry-run", action="store_true", help="list what would be uploaded, with sizes; no network")
    ps.add_argument("--private", action="store_true", help="create the repository private")


def _export_command(sub) -> None:
    """Export: a run or model out as plain transformers files, and as GGUF."""
    ex = _sub(sub, "export", help="a run or model as one directory plain transformers loads (LoRA folded in), "
                                  "optionally with a GGUF for llama.cpp / Ollama")
    ex.add_argument("model", metavar="RUN_OR_MODEL",
                    help="a training run (or a recipe run: its train/), a registered model name or a model directory")
    ex.add_argument("--out", required=True, metavar="DIR", help="directory to write (new, empty, or an earlier export)")
    ex.add_argument("--gguf", action="append", default=[], choices=["f32", "f16", "q8_0"],
                    help="also write DIR/gguf/model-TYPE.gguf (repeatable; llama-architecture models): f32 "
                         "lossless, f16 half the size, q8_0 a quarter")
    ex.add_argument("--trust-remote-code", action="store_true")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if argv is None:  # a command line, not a call from Python: start over under jemalloc (memory.py)
        from .io.memory import start_under_jemalloc

        start_under_jemalloc()
    if argv is None and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `tunebench bench --list | head` ends quietly
    args = _parser().parse_args(argv)
    _quiet_libraries(args.verbose)
    from .io import locations

    locations.reset()
    locations.configure(args.data_root)
    try:
        return _dispatch(args) or 0
    except UserError as e:
        for line in str(e).splitlines():  # several only for a recipe checked whole: one problem a line
            print(f"tunebench: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunebench: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries(verbose: bool) -> None:
    """Library chatter (warnings, Hub retries, progress bars) off unless --verbose: a user's mistake
    must end in tunebench's one line, not below a screen of someone else's. Set before the libraries
    are imported, which read these at import."""
    if verbose:
        return
    for var, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DATASETS_VERBOSITY", "error"),
                       ("HF_HUB_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(var, value)
    for name in ("transformers", "datasets", "huggingface_hub", "urllib3", "filelock", "fsspec", "accelerate", "peft", "gguf"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    # a library imported before this call (tunebench used from Python) read the settings already
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()


def _dispatch(args) -> int | None:
    from . import pipeline

    if args.command == "run":
        from .preflight import load_and_check, plan

        recipe, rf, facts = load_and_check(args.recipe, args.overrides)
        if args.check:
            print("\n".join(plan(recipe, rf, facts, args.fresh)))
            return 0
        pipeline.run_recipe(recipe, fresh=args.fresh)
    elif args.command == "study":
        from . import study

        st = study.load_study(args.study, args.overrides)
        if args.check:
            print("\n".join(study.plan(st, study.check(st), args.fresh)))
            return 0
        study.run(st, fresh=args.fresh)
    elif args.command == "prepare":
        mixture = from_flags(MixtureConfig, args, prefix="mixture") if args.mixture_tasks else None
        s = pipeline.prepare_stage(from_flags(DataConfig, args), args.out, mixture)
        print(f"{args.out}: {s['counts']} from {s['source']}")
    elif args.command == "train":
        s = pipeline.train_stage(from_flags(ModelConfig, args), from_flags(TrainConfig, args), args.data, args.out, args.resume)
        if _main_process():
            skipped = f", {s['skipped_overlong']} training examples over --max-length skipped" if s.get("skipped_overlong") else ""
            print(f"{args.out}: {s['steps']} steps, final loss {s['final_loss']}, validation loss {s['final_val_loss']}{skipped}")
    elif args.command == "generate":
        r = pipeline.generate_stage(from_flags(ModelConfig, args), from_flags(GenerateConfig, args), args.data, args.out)
        if _main_process():
            print(f"{args.out}/predictions.jsonl: {len(r['predictions'])} predictions")
    elif args.command == "evaluate":
        m = pipeline.evaluate_stage(from_flags(ModelConfig, args), from_flags(GenerateConfig, args), args.data, args.out)
        if _main_process():
            print(" ".join(f"{k}={m[k]:.4f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu")) + f" n={m['n']}")
    elif args.command == "bench":
        _bench(args)
    elif args.command == "compare":
        _compare(args)
    elif args.command == "templates":
        _templates(args)
    elif args.command == "contamination":
        _contamination(args)
    elif args.command == "report":
        from .reports.html import write

        print(f"written: {write(args.runs, args.output)}")
    elif args.command == "chat":
        from .generation.chat import chat

        chat(args.model, args.compare, args.template, args.max_new_tokens, args.trust_remote_code, args.chat_template)
    elif args.command == "push":
        from .reports.push import push

        print("\n".join(push(args.run, args.repo, args.dry_run, args.private)))
    elif args.command == "export":
        _export(args)
    elif args.command == "models":
        from .models import REGISTRY

        for name in REGISTRY:
            print(name)
    return 0


def _main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (or the only process) says what a stage did."""
    from .io.runs import is_main_process

    return is_main_process()


def _export(args) -> None:
    from .models.export import export

    info = export(args.model, args.out, args.gguf, args.trust_remote_code)
    print(f"{args.out}: {info['model']}" + (f" + adapter {info['adapter_merged']} folded in" if info["adapter_merged"] else "")
          + "".join(f", {g['file']} ({q}, {g['bytes'] / 1e6:.0f} MB)" for q, g in info["gguf"].items()))


def _bench(args) -> None:
    from .benchmarks.harness import run_bench
    from .benchmarks.tasks import example_count, registry, resolve_tasks, suites

    if args.list:
        reg = registry()
        print("suites:")
        for name, spec in suites().items():
            try:
                tasks, limit = resolve_tasks(suite_names=[name])
                size = example_count(tasks, limit)
                print(f"  {name:<22} {len(tasks):>3} tasks {size:>6} examples  {spec['description']}"
                      + (f" (first {limit} per task)" if limit else ""))
            except UserError as e:
                print(f"  {name:<22} unavailable: {e}")
        print("tasks:")
        for name, t in reg.items():
            print(f"  {name:<48} {t.kind:<16} {t.size if t.size is not None else 'missing':>7}  {t.source}")
        return
    if not args.out:
        raise UserError("bench: --out is required (where results.json goes)")
    cfg = from_flags(BenchConfig, args)
    tasks, suite_limit = resolve_tasks(cfg.task, cfg.suite)
    results = run_bench(from_flags(ModelConfig, args), cfg, tasks, args.out, cfg.limit or suite_limit)
    if _main_process():
        print(f"{args.out}/results.json: {len(results['tasks'])} tasks, macro average {results['aggregates']['macro']:.4f}")


def _compare(args) -> None:
    from .reports import compare, forgetting

    what, c, md, js = compare.compare_any([args.base_run, args.tuned_run, *args.more_runs], args.out,
                                          from_flags(CompareConfig, args).examples)
    {"runs": compare.print_runs, "forgetting": forgetting.print_table, "evaluation": compare.print_table}[what](c)
    print(f"written: {md}, {js}")


def _templates(args) -> None:
    from .data.templates import all_tasks, find_template, get_task

    if args.templates_command == "list":
        if args.task:
            task = get_task(args.task, args.task_file)
            print(f"{task.name}: {task.description} (inputs: {', '.join(task.inputs)})")
            for t in task.templates:
                first = t.prompt.replace("\n", " ")
                mark = " [inverted]" if t.inverted else " [own target]" if t.target != task.target else ""
                print(f"  {t.name:<26} {first[:70]}{'...' if len(first) > 70 else ''}{mark}")
            if task.data:
                print(f"  source: {task.data.describe()}")
            return
        tasks = all_tasks(args.task_file)
        print(f"{'task':<16} {'templates':>9} {'inverted':>8}  source")
        for task in tasks.values():
            inv = sum(t.inverted for t in task.templates)
            print(f"{task.name:<16} {len(task.templates):>9} {inv:>8}  {task.data.describe() if task.data else '(no source: single-task data only)'}")
            print(f"{'':<16} {', '.join(t.name for t in task.templates)}")
        return
    name = args.name
    tasks = all_tasks(args.task_file)
    if name in tasks or name.endswith((".yaml", ".yml")):
        task = get_task(name, args.task_file)
        templates = [task.template(args.template)] if args.template else list(task.templates)
    else:
        t = find_template(name)
        task, templates = get_task(t.task), [t]
    records = _show_records(task, args.index, args.shots)
    record, shots = (records[0], records[1:]) if records else ({v: f"<{v}>" for v in task.variables}, [])
    if records:
        print(f"# {task.name}: record {record['_id']} ({record['_source']})")
    else:
        print(f"# {task.name}: no source data, placeholders shown")
    from .data.mixtures import render

    for t in templates:
        flag = " (inverted)" if t.inverted else ""
        if len(templates) == 1:
            print(f"# {task.name}/{t.name}{flag}\n--- template ---\n{t.prompt}")
        else:
            print(f"\n# {task.name}/{t.name}{flag}")
        print(f"--- rendered{f' ({len(shots)}-shot)' if shots else ''} ---\n{render(t, record, shots)}\n"
              f"--- target ---\n{t.render_target(record)}")


def _show_records(task, index: int, shots: int) -> list[dict]:
    if task.data is None:
        return []
    from .data.sources import sample_records

    records = sample_records(task, index + shots + 1)
    if len(records) <= index:
        raise UserError(f"task '{task.name}': --index {index}, but only {len(records)} usable records")
    return records[index:]


def _contamination(args) -> None:
    from pathlib import Path

    from .pipeline import contamination_stage, evaluation_of

    cfg = from_flags(ContaminationConfig, args)
    if args.recipe:
        recipe = load_recipe(args.recipe, args.overrides)
        data_dir = Path(args.data or Path(recipe.out) / "data")
        evaluation, data_cfg = evaluation_of(recipe), recipe.data
        cfg = from_flags(ContaminationConfig, args, base=recipe.contamination)
    else:
        if not args.data:
            raise UserError("contamination: give --data DIR (a prepared directory) or --recipe FILE")
        if not (args.suite or args.task or args.eval_dataset):
            raise UserError("contamination: nothing to check against (give --suite, --task or --eval-dataset)")
        data_dir = Path(args.data)
        evaluation = {}
        if args.eval_dataset:
            evaluation.update(split=args.eval_split, limit=args.eval_limit)
        if args.suite or args.task:
            evaluation["benchmarks"] = {"suite": args.suite, "task": args.task, "limit": args.limit, "shots": args.shots}
        data_cfg = DataConfig(dataset=args.eval_dataset or "dialogsum", task=args.eval_task)
    out = Path(args.out or data_dir)
    contamination_stage(data_dir, data_cfg, cfg, evaluation, out)
    print(f"written: {out / 'contamination.json'}")


if __name__ == "__main__":
    sys.exit(main())
