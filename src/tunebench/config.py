"""The recipe: one validated YAML file whose sections mirror the CLI's flags.

Every stage's flags are generated from the same pydantic models (`add_flags` / `from_flags`),
so a recipe key and its flag can never drift apart: `train.lora_r` is `--lora-r`.
"""
from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import UserError, UserErrors, suggest
from .io import yamlfile
from .io.yamlfile import Where, key_name

# defaults that more than one layer uses, defined here once
CONTAMINATION_N = 13          # contamination check: n-gram length in words (GPT-3's choice)
CONTAMINATION_MIN_WORDS = 4   # contamination check: evaluation texts shorter than this are not checked
LM_EVAL_SEED = 1234           # an unset benchmark seed under lm-eval's convention (lm-evaluation-harness's default)
BIGBENCH_SEED = 42            # an unset benchmark seed under BIG-bench's convention (JsonTask's random_seed)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(Section):
    """Which model, and how to load it."""

    model: str = Field("smollm2-135m-instruct", description="registered name, local directory, training run or Hub id")
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto", description="wrap prompts in the tokenizer's chat template (auto: when it has one)"
    )
    trust_remote_code: bool = Field(False, description="allow a Hub model's own Python code to run")


# A field added after runs were recorded: left out of a stage's recorded settings while at its
# default (io.layout.stage_config), so stages finished before it existed are not redone.
ADDED = {"recorded_when_set": True}


class DataConfig(Section):
    """Where records come from and how they become prompts (the `prepare` stage)."""

    dataset: str = Field("dialogsum", description="'dialogsum' (in the data root), a path to a JSONL/CSV/TSV/Parquet file or a directory, or a Hub id (org/name)")
    path: Optional[str] = Field(None, description="directory of the named dataset (default: <data root>/<dataset>)")
    task: str = Field("dialogsum", description="template set in the library (tunebench templates list)")
    fields: dict[str, str] = Field(default_factory=dict, description="template variable -> column name in your data")
    id_field: Optional[str] = Field(None, description="column holding a record id (default: file:line)")
    templates: Union[Literal["all"], list[str]] = Field("all", description="training templates: 'all' or a list of names")
    template_choice: Literal["random", "fixed"] = Field(
        "random", description="random: a seeded template per training example; fixed: the first one for all"
    )
    eval_template: Optional[str] = Field(None, description="template for validation and test (default: the first one)")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="used only when the data has no official split")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="used only when the data has no official split")
    train_limit: Optional[int] = Field(None, gt=0, description="seeded random subset of the training split")
    validation_limit: Optional[int] = Field(None, gt=0, description="first N of the (shuffled) validation split")
    test_limit: Optional[int] = Field(None, gt=0, description="first N of the test split, in file order")
    seed: int = Field(0, description="split, subset and template-choice seed")
    format: Literal["auto", "task", "messages", "sharegpt", "alpaca"] = Field(
        "auto", description="task: rendered through the task's templates; messages (OpenAI), sharegpt, alpaca: chat "
        "records, trained on every assistant turn; auto: a chat format when the records have its fields",
        json_schema_extra=ADDED)
    dataset_config: Optional[str] = Field(None, description="a Hub dataset's configuration (subset) name",
                                          json_schema_extra=ADDED)
    dataset_split: Optional[str] = Field(
        None, description="take only this split of a Hub or save_to_disk dataset, and carve validation and test out of "
        "it with the fractions (default: every official split kept)", json_schema_extra=ADDED)


class TrainConfig(Section):
    """Fine-tuning hyperparameters (the `train` stage)."""

    method: Literal["lora", "full"] = "lora"
    epochs: int = Field(1, gt=0)
    max_steps: Optional[int] = Field(None, gt=0, description="stop after this many optimizer steps")
    batch_size: int = Field(8, gt=0, description="examples per micro-batch and process")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    lr: float = Field(3e-4, gt=0)
    schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(512, gt=8, description="prompt + completion tokens")
    overlong: Literal["skip", "error"] = Field(
        "skip", description="over-long training examples: skip them (counted, reported) or stop with an error"
    )
    lora_r: int = Field(16, gt=0)
    lora_alpha: float = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: str = Field("all-linear", description="'all-linear' or comma-separated module names")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast where the hardware has it")
    group_by_length: bool = Field(True, description="batch similar lengths together: less padding, same loss")
    padding_free: bool = Field(False, description="decoder-only: each micro-batch's sequences in one row, positions "
                               "restarting per sequence, no padding (varlen flash attention on a GPU when installed)",
                               json_schema_extra=ADDED)
    eval_every: Optional[int] = Field(None, gt=0, description="validation loss every N steps (always at epoch end)")
    save_every: int = Field(50, gt=0, description="checkpoint every N optimizer steps")
    keep_checkpoints: int = Field(2, gt=0)
    merge: bool = Field(True, description="also save the LoRA merged into the base, loadable by plain transformers")
    report_to: list[Literal["tensorboard", "mlflow", "wandb", "none"]] = Field(
        default_factory=lambda: ["tensorboard"], description="experiment trackers (tensorboard logs go to OUT/tensorboard)")
    seed: int = 0


class GenerateConfig(Section):
    """Generation and scoring (the `generate` / `evaluate` stages)."""

    split: Literal["train", "validation", "test"] = "test"
    limit: Optional[int] = Field(None, gt=0, description="first N examples of the split")
    batch_size: int = Field(16, gt=0)
    max_new_tokens: int = Field(96, gt=0)
    num_beams: int = Field(1, gt=0, description="1 = greedy")
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    metrics: list[Literal["all", "accuracy", "bias", "toxicity", "efficiency"]] = Field(
        default_factory=list, description="HELM-style families to add to metrics.json (all: every one that applies)")


class BenchConfig(Section):
    """Benchmark runs (the `bench` stage, and a recipe's `forgetting:` section)."""

    suite: list[str] = Field(default_factory=list, description="named suites (tunebench bench --list)")
    task: list[str] = Field(default_factory=list, description="task names, BIG-bench task.json files or directories")
    limit: Optional[int] = Field(None, gt=0, description="N examples per task (default: the suite's)")
    select: Literal["first", "seeded"] = Field(
        "first", description="which N a limit keeps: the first in file order, or seeded: BIG-bench's draw "
        "(RandomState(seed).choice, as its max_examples)")
    scoring: Literal["bigbench", "lm-eval"] = Field(
        "bigbench", description="how BIG-bench JSON tasks are prompted and scored: bigbench (as BIG-bench's own code) "
        "or lm-eval (lm-evaluation-harness tokenization); MMLU, GLUE and SuperGLUE always use lm-eval's")
    shots: int = Field(0, ge=0)
    seed: Optional[int] = Field(None, description="choice order, shot and example selection (default: "
                                f"{BIGBENCH_SEED} for BIG-bench tasks scored the bigbench way, as BIG-bench; "
                                f"{LM_EVAL_SEED} otherwise)")
    batch_size: int = Field(8, gt=0, description="questions per forward pass")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "fp32", description="fp32 keeps choices identical across batch sizes and to lm-eval; bf16 is ~2x faster")
    chat_template: Literal["auto", "on", "off"] = Field("off", description="wrap contexts in the chat template")
    max_new_tokens: Optional[int] = Field(None, gt=0, description="for generative tasks (default: 256 under "
                                          "bigbench scoring, BIG-bench's max_length; 32 under lm-eval)")
    metrics: list[Literal["all", "robustness", "fairness"]] = Field(
        default_factory=list, description="also score perturbed copies: robustness (5 perturbations), fairness "
        "(3 counterfactuals); each costs one more pass per perturbation. accuracy, calibration and efficiency are always on")
    output_format: Literal["tunebench", "lm-eval"] = Field(
        "tunebench", description="lm-eval: also write lm-evaluation-harness's output layout (DIR/lm-eval/MODEL/"
        "results_TIME.json, samples_TASK_TIME.jsonl) for tools that read lm-eval's results", json_schema_extra=ADDED)


class ForgettingConfig(BenchConfig):
    """A recipe's `forgetting:` section: benchmark base and tuned models, then compare."""

    enabled: bool = True
    suite: list[str] = Field(default_factory=lambda: ["forgetting-core"])


class MixtureTask(Section):
    """One task of a mixture: a name from the template library (or a user's task file)."""

    task: str
    weight: float = Field(1.0, gt=0, description="multiplies the task's mixing rate")
    templates: Union[Literal["all"], list[str]] = Field("all", description="'all' or template names")


class MixtureConfig(Section):
    """A FLAN-style multi-task training set (the `prepare` stage with a `mixture:` section).

    Rates: weight * min(pool, cap) ** (1 / temperature), normalised; counts split `total` exactly.
    """

    tasks: list[MixtureTask] = Field(default_factory=list, description="task names or {task, weight, templates}")
    task_files: list[str] = Field(default_factory=list, description="extra task YAML files (tunebench templates list --task F)")
    cap: Optional[int] = Field(3000, gt=0, description="records per task counted for its rate (FLAN: 3,000); null: no cap")
    temperature: float = Field(1.0, gt=0, description="1: examples-proportional; higher flattens the rates towards equal")
    total: int = Field(1000, gt=0, description="training examples in the mixture")
    fewshot_share: float = Field(0.3, ge=0, le=1, description="share of each task's examples rendered few-shot")
    max_shots: int = Field(3, ge=1, description="a few-shot example gets 1..max_shots exemplars of its task")
    fewshot_max_words: int = Field(300, gt=0, description="exemplars are dropped until a few-shot prompt fits")
    inverted: bool = Field(True, description="include templates that turn a task around (summary -> dialogue)")
    validation_per_task: int = Field(8, ge=0, description="held-out validation examples per task (zero-shot)")
    seed: int = Field(0, description="records, templates, few-shot choice and exemplars")

    @field_validator("tasks", mode="before")
    @classmethod
    def _names(cls, v):
        # `tasks: [sst2, rte]` and `--mixture-tasks sst2` are shorthand for {task: NAME}
        return [{"task": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v


class ContaminationConfig(Section):
    """N-gram overlap of the training examples with every evaluation set the run uses."""

    enabled: bool = Field(True, description="check before training and evaluation")
    n: int = Field(CONTAMINATION_N, ge=2, description="n-gram length in words (GPT-3 used 13)")
    min_words: int = Field(CONTAMINATION_MIN_WORDS, ge=2, description="evaluation texts shorter than this are not checked")
    drop: bool = Field(False, description="remove overlapping examples from the training set")
    show: int = Field(10, ge=0, description="overlaps printed (all of them go to contamination.json)")


class CompareConfig(Section):
    examples: int = Field(3, ge=0, description="side-by-side examples in the compare table")


class Recipe(Section):
    name: str = "run"
    out: str = Field("runs/run", description="run directory; every stage writes below it")
    data_root: Optional[str] = Field(None, description="folder holding dialogsum/, mmlu/, glue/, bigbench/ ... relative to "
                                     "the recipe file (default: --data-root, $TUNEBENCH_DATA, or shared/data found upward)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: GenerateConfig = Field(default_factory=GenerateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    forgetting: Optional[ForgettingConfig] = None
    mixture: Optional[MixtureConfig] = None
    contamination: ContaminationConfig = Field(default_factory=ContaminationConfig)


# ---------------------------------------------------------------------------- loading

@dataclass
class RecipeFile:
    """A recipe as written: its mapping (overrides applied), where each key is, and which keys an
    override gave (key -> where that override was written; None: `--set`)."""

    path: Path
    raw: dict
    where: Where
    overridden: dict = dc_field(default_factory=dict)

    def at(self, *loc) -> str:
        """`file:line: key` for a key of the file, `--set key` for one an override gave, the
        override's own place (a study file's line) for one given there."""
        key = key_name(loc)
        for n in range(len(loc), 0, -1):
            given = key_name(loc[:n])
            if given in self.overridden:
                origin = self.overridden[given]
                return f"--set {key}" if origin is None else origin + key[len(given):]
        return self.where(*loc)


def parse_override(item: str) -> tuple[str, Any]:
    """`train.lr=1e-4` as (key, value), the value read as YAML."""
    key, sep, value = item.partition("=")
    if not sep:
        raise UserError(f"override '{item}': expected key=value, e.g. train.lr=1e-4")
    return key.strip(), yaml.safe_load(value)


def read_recipe(path: str | Path, overrides: list[str] = (), settings: list[tuple[str, Any, str]] = ()) -> RecipeFile:
    """The recipe file with `settings` ((key, value, where it was written): a study's overrides)
    applied, then the `--set` `overrides`."""
    path = Path(path)
    raw, node = yamlfile.load(path, "recipe file")
    if raw is None:
        raise UserError(f"{path}: the recipe is empty (an empty recipe would run every default: write the sections "
                        "you mean, e.g. recipes/dialogsum-lora.yaml)")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe is a mapping of sections (model, data, train, evaluate, ...)")
    overridden: dict = {}
    for key, value, origin in [*settings, *((*parse_override(item), None) for item in overrides)]:
        _set_path(raw, key.split("."), copy.deepcopy(value))
        overridden[key] = origin
    rf = RecipeFile(path, raw, Where(path, node), overridden)
    from .io import locations

    root = raw.get("data_root")  # the recipe's own data root counts from here on (locations.py: the order)
    locations.use_recipe(path, root if isinstance(root, str) else None, rf.at("data_root"))
    return rf


def validate_recipe(rf: RecipeFile) -> tuple[Optional["Recipe"], list[tuple[tuple, str]], list[tuple]]:
    """(recipe, every problem as (key location, message), the locations that failed). With problems,
    the recipe is the file without those keys, over their defaults (None if even that fails), so
    that the rest can still be checked in the same pass."""
    try:
        return Recipe.model_validate(rf.raw), [], []
    except ValidationError as e:
        errors = e.errors()
    bad = [_loc(err) for err in errors]
    rest = copy.deepcopy(rf.raw)
    for loc in bad:
        _drop(rest, loc)
    try:
        partial = Recipe.model_validate(rest)
    except ValidationError:
        partial = None
    return partial, [(loc, _message(err, loc)) for err, loc in zip(errors, bad)], bad


def _loc(err: dict) -> tuple:
    """The key location of a pydantic error, without pydantic's own steps into a Literal or a list type."""
    return tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("literal[", "list["))))


def _drop(d, loc: tuple) -> None:
    for k in loc[:-1]:
        if not isinstance(d, (dict, list)) or (isinstance(d, dict) and k not in d):
            return
        d = d[k] if isinstance(d, dict) else (d[k] if isinstance(k, int) and k < len(d) else None)
    if isinstance(d, dict) and loc and loc[-1] in d:
        del d[loc[-1]]
    elif isinstance(d, list) and loc and isinstance(loc[-1], int) and loc[-1] < len(d):
        del d[loc[-1]]


def broken(bad: list[tuple], *loc) -> bool:
    """Whether a schema problem lies at, above or below `loc`: checks of that key are skipped."""
    n = len(loc)
    return any(b[:n] == loc or loc[:len(b)] == b for b in bad)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    rf = read_recipe(path, overrides)
    recipe, problems, _ = validate_recipe(rf)
    if problems:
        raise UserErrors([f"{rf.at(*loc)}: {msg}" for loc, msg in problems])
    return recipe


def _set_path(d: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise UserError(f"override '{'.'.join(keys)}': '{k}' is not a section")
    d[keys[-1]] = value


def _message(err: dict, loc: tuple) -> str:
    if err["type"] != "extra_forbidden":
        return err["msg"]
    known = _known_keys(Recipe, loc[:-1])
    return "unknown key" + suggest(loc[-1], known, f" (known: {', '.join(sorted(known))})")


def _known_keys(model: type[BaseModel], loc) -> list[str]:
    for part in loc:
        if isinstance(part, int):  # an item of a list of sections (mixture.tasks[2])
            continue
        field = model.model_fields.get(part)
        inner = _section_type(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _section_type(annotation):
    """The section model inside Optional[...] or list[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------- CLI flags

def _flag_type(annotation):
    """(argparse type, choices, is_bool) for a field annotation."""
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin is Union and len(args) == 1:
        return _flag_type(args[0])
    if origin is Literal:
        return str, list(get_args(annotation)), False
    if annotation is bool:
        return None, None, True
    if annotation in (int, float, str):
        return annotation, None, False
    return str, None, False  # lists, dicts, unions: parsed as YAML


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel], skip: tuple[str, ...] = (), prefix: str = "") -> None:
    """One flag per field; `prefix` ('mixture') keeps a section's flags apart from another's (--mixture-seed)."""
    group = parser.add_argument_group(model.__name__.replace("Config", "").lower() + " options")
    pre = prefix + "_" if prefix else ""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + (pre + name).replace("_", "-")
        dest = pre + name
        typ, choices, is_bool = _flag_type(field.annotation)
        default = field.get_default(call_default_factory=True)
        help_ = (field.description or "") + (f" [default: {default}]" if default not in (None, []) else "")
        if is_bool:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif get_origin(field.annotation) is list:
            item = (get_args(field.annotation) or (str,))[0]
            # items that are mappings ({task: sst2, weight: 2}) are written as YAML
            group.add_argument(flag, dest=dest, action="append", default=None, help=help_ + " (repeatable)",
                               type=yaml.safe_load if isinstance(item, type) and issubclass(item, BaseModel) else None)
        else:
            complex_ = typ is str and choices is None and field.annotation is not str and get_args(field.annotation) != (str, type(None))
            group.add_argument(flag, dest=dest, default=None, choices=choices, help=help_,
                               type=(yaml.safe_load if complex_ else typ))


def from_flags(model: type[Section], args: argparse.Namespace, base: Optional[Section] = None, what: str = "flags",
               prefix: str = ""):
    pre = prefix + "_" if prefix else ""
    values = base.model_dump() if base is not None else {}
    for name in model.model_fields:
        v = getattr(args, pre + name, None)
        if v is not None:
            values[name] = v
    try:
        return model.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        name = ".".join(str(p) for p in err["loc"][:1]) if err["loc"] else "?"
        raise UserError(f"--{(pre + name).replace('_', '-')}: {err['msg']}") from None
