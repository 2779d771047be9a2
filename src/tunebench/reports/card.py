"""A training run's model card: RUN/README.md in Hugging Face's format, built with huggingface_hub.

The metadata (`ModelCardData`): base_model, library_name, datasets, tags, and a `model-index`
of `EvalResult`s: the summarization metrics (ROUGE, BLEU) of this model and, under the same
metric type with a name that says so, of the base model before tuning; then each forgetting-suite
task's primary metric, this model's and the base model's. The body (report_templates/
model_card.md.j2): the before/after table, the forgetting verdicts, the training settings and
outcome, and the command that reproduces the run.

`tunebench train` writes the card when training ends (settings and command only: nothing has been
evaluated yet); a recipe run rewrites it once compare.json and forgetting.json exist.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import jinja2
import yaml

from ..config import ModelConfig, TrainConfig
from ..io.layout import CARD_FILE, MANIFEST, RESULTS_FILE, RUN_MODEL_FILE, RecipeRun
from ..io.locations import is_hub_id
from ..io.runs import atomic_write_text, read_json
from ..models import hub_origin

# Hub ids of the datasets tunebench reads from local copies (shared/data/SOURCES.md): what a card cites
HUB_DATASETS = {"dialogsum": "knkarthick/dialogsum", "samsum": "Samsung/samsum"}
HUB_BENCHMARKS = {"mmlu": "cais/mmlu", "glue": "nyu-mll/glue", "superglue": "aps/super_glue", "bigbench": "google/bigbench"}
SUMMARIZATION = {"dialogsum", "samsum"}
BASE_SUFFIX = " (base model, before tuning)"

_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "report_templates"),
                                autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def write(train_dir: Path | str, results_dir: Path | str | None = None) -> Path:
    """TRAIN_DIR/README.md, written atomically; `results_dir` (a recipe run's root) adds what it
    holds of compare.json and forgetting.json. Returns the card's path."""
    path = Path(train_dir) / CARD_FILE
    atomic_write_text(path, render(train_dir, results_dir))
    return path


def render(train_dir: Path | str, results_dir: Path | str | None = None) -> str:
    """The card's text, parsed back by huggingface_hub before it is returned (a malformed
    model-index raises here, not on the Hub)."""
    from huggingface_hub import ModelCard

    facts = _facts(Path(train_dir), Path(results_dir) if results_dir else None)
    data = card_data(facts)
    body = _TEMPLATES.get_template("model_card.md.j2").render(**facts)
    text = f"---\n{data.to_yaml()}\n---\n\n{body}"
    ModelCard(text)
    return text


def _facts(train_dir: Path, root: Path | None) -> dict:
    """Everything the card says, read from the run's own files."""
    manifest = read_json(train_dir / MANIFEST)
    saved = read_json(train_dir / RUN_MODEL_FILE)
    cfg = manifest["config"]
    data_dir = Path(cfg["data"])
    data = _data_config(data_dir)
    recipe = read_json(root / "recipe.json")["recipe"] if root and (root / "recipe.json").is_file() else None
    compare = _json(root / "compare.json") if root else None
    forgetting = _json(root / "forgetting.json") if root else None
    base = saved["base_model"]
    hub, note = hub_origin(base)
    files = "merged" if saved.get("merged") and (train_dir / saved["merged"]).is_dir() else \
        "full" if saved.get("model") else "adapter"
    return {"name": (recipe or {}).get("name") or (train_dir.parent.name if train_dir.name == "train" else train_dir.name),
            "base": base, "base_hub": hub, "base_note": note, "method": saved["method"], "files": files,
            "train": cfg["train"], "model": cfg["model"], "summary": manifest.get("summary", {}),
            "environment": manifest.get("environment", {}), "started": manifest.get("started"),
            "data": data, "data_dir": str(data_dir), "dataset": _dataset(data),
            "compare": compare, "split": _split(compare, data), "forgetting": forgetting,
            "kinds": _bench_kinds(root) if forgetting else {},
            "recipe_yaml": yaml.safe_dump(recipe, sort_keys=False) if recipe else None,
            "as_run": _as_run(manifest.get("command") or []),
            "train_command": train_command(cfg, str(train_dir))}


def _json(path: Path):
    return read_json(path) if path.is_file() else None


def _data_config(data_dir: Path) -> dict:
    """The prepare stage's data settings (a mixture's keep them under "data")."""
    m = data_dir / MANIFEST
    if not m.is_file():
        return {}
    cfg = read_json(m).get("config", {})
    out = dict(cfg.get("data", cfg)) if isinstance(cfg.get("data", cfg), dict) else {}
    if cfg.get("mixture"):
        out["mixture"] = [t["task"] for t in cfg["mixture"].get("tasks", [])]
    return out


def _dataset(data: dict) -> dict:
    """The training data as a card names it: a Hub id when there is one."""
    name = data.get("dataset") or "unknown"
    hub = HUB_DATASETS.get(name) if not data.get("path") or Path(data["path"]).name == name else None
    hub = hub or (name if is_hub_id(name) else None)
    return {"name": Path(name).name, "hub": hub, "task": data.get("task")}


def _split(compare: dict | None, data: dict) -> str | None:
    """The evaluated examples as datasets spells a slice ("test", "test[:4]"): compare.json's data
    (the evaluation's own limit), within the prepared test split's (data.test_limit, first N in file order)."""
    if not compare or not compare.get("data"):
        return None
    split = str(compare["data"]).rsplit(":", 1)[-1]
    name, _, rest = split.partition("[:")
    limits = [int(n) for n in (rest.rstrip("]") or None, data.get("test_limit") if name == "test" else None) if n]
    return f"{name}[:{min(limits)}]" if limits else name


def _bench_kinds(root: Path) -> dict[str, str]:
    p = RecipeRun(root).tuned_bench / RESULTS_FILE
    return {t["name"]: t["kind"] for t in read_json(p)["tasks"]} if p.is_file() else {}


def _as_run(argv: list[str]) -> str | None:
    """The recorded command line, when it was tunebench's (not a test runner's or a script's)."""
    first = Path(argv[0]) if argv else None
    if first is None or not (first.name == "tunebench" or (first.name == "cli.py" and first.parent.name == "tunebench")):
        return None
    return shlex.join(["tunebench", *argv[1:]])


def train_command(cfg: dict, out: str) -> str:
    """`tunebench train` with the flags that reproduce a recorded training stage: every setting
    that differs from its default (the defaults are the card's tunebench version's)."""
    argv = ["tunebench", "train", "--data", cfg["data"], "--out", out]
    for model, values in ((ModelConfig, cfg["model"]), (TrainConfig, cfg["train"])):
        for name, value in values.items():
            field = model.model_fields.get(name)
            if field is None or value == field.get_default(call_default_factory=True) or value is None:
                continue
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + name.replace("_", "-"))
            elif isinstance(value, list):
                for v in value:
                    argv += [flag, str(v)]
            else:
                argv += [flag, str(value)]
    return shlex.join(argv)


def card_data(f: dict):
    """The card's metadata as huggingface_hub models it."""
    from huggingface_hub import ModelCardData

    results = eval_results(f)
    tags = ["tunebench", f["method"], *(["summarization"] if f["dataset"]["task"] in SUMMARIZATION else []),
            *(["forgetting-suite"] if f["forgetting"] else [])]
    datasets = [f["dataset"]["hub"]] if f["dataset"]["hub"] else None
    return ModelCardData(base_model=f["base_hub"], library_name="peft" if f["files"] == "adapter" else "transformers",
                         datasets=datasets, tags=tags, pipeline_tag="text-generation",
                         model_name=f["name"] if results else None, eval_results=results or None)


def eval_results(f: dict) -> list:
    """model-index entries: this model's value of each metric, then the base model's."""
    from huggingface_hub import EvalResult

    out = []
    if f["compare"]:
        ds = f["dataset"]
        task_type = "summarization" if ds["task"] in SUMMARIZATION else "text-generation"
        task_name = ds["task"] if ds["task"] and ds["task"] != ds["name"] else f"{ds['name']} {task_type}"
        common = dict(task_type=task_type, task_name=task_name, dataset_type=ds["hub"] or ds["name"],
                      dataset_name=ds["name"], dataset_split=f["split"])
        for model, suffix in (("tuned", ""), ("base", BASE_SUFFIX)):
            out += [EvalResult(**common, metric_type=r["metric"], metric_name=r["metric"] + suffix, metric_value=r[model])
                    for r in f["compare"]["metrics"]]
    seen = set()
    for t in (f["forgetting"] or {}).get("tasks", []):
        family, _, rest = t["task"].partition("/")
        family = family.removesuffix("_cloze")
        config = rest or t["task"]
        kind = f["kinds"].get(t["task"]) or ("generate" if t["metric"] == "exact_str_match" else "multiple_choice")
        task_type = "multiple-choice" if kind == "multiple_choice" else "text-generation"
        dataset = HUB_BENCHMARKS.get(family, t["task"])
        if (task_type, dataset, config) in seen:  # the same data under two prompt formats (mmlu, mmlu_cloze)
            config = t["task"]
        seen.add((task_type, dataset, config))
        common = dict(task_type=task_type, task_name=t["task"], dataset_type=dataset, dataset_name=t["task"],
                      dataset_config=config)
        out += [EvalResult(**common, metric_type=t["metric"], metric_name=t["metric"], metric_value=t["tuned"]),
                EvalResult(**common, metric_type=t["metric"], metric_name=t["metric"] + BASE_SUFFIX, metric_value=t["base"])]
    return out
