"""Records in, prompt/completion examples out: loading, validation, splits, templating.

A *record* is a row of the user's data (a dict of strings) plus where it came from (`io.files`
reads the files).
An *example* is what every later stage reads: id, prompt (the rendered instruction, before any
chat template), completion, references (one or more human targets) and the template used.
"""
from __future__ import annotations

import random
from pathlib import Path

from ..config import DataConfig
from ..errors import UserError
from ..io.files import Record, read_records
from ..io.layout import Example
from ..io.locations import data_root, find, hub_offline, is_hub_id
from . import chat
from .templates import PromptTask, get_task, template_variables

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "dev": "validation", "val": "validation", "valid": "validation",
                  "validation": "validation", "test": "test"}
_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
NAMED_DATASETS = ("dialogsum",)   # folders of the data root a recipe may name
# without data.id_field, a record's id is the first of these columns it has (else its file:line):
# the usual names, and the id column of the named datasets (DialogSum's is "fname")
DEFAULT_ID_COLUMNS = ("id", "fname", "idx")


# ---------------------------------------------------------------------------- datasets

def find_split_files(directory: Path) -> dict[str, Path]:
    """Map official split names to files in a directory laid out like ../shared/data/dialogsum."""
    found: dict[str, Path] = {}
    for f in sorted(directory.iterdir()):
        if f.suffix.lower() not in _SUFFIXES:
            continue
        for part in reversed(f.stem.replace("-", ".").replace("_", ".").split(".")):
            split = _SPLIT_ALIASES.get(part.lower())
            if split:
                if split in found:
                    raise UserError(f"{directory}: two files for split '{split}': {found[split].name}, {f.name}")
                found[split] = f
                break
    if "train" not in found and "test" not in found:
        raise UserError(f"{directory}: no train/dev/test files found (expected names like train.jsonl or x.dev.jsonl)")
    return found


def load_splits(cfg: DataConfig) -> tuple[dict[str, list[Record]], str]:
    """Records per official split (missing splits are absent; "all" when there are none to keep)
    and a description of the source."""
    where = dataset_location(cfg)
    if where is None:
        return _hub_dataset(cfg), f"hub:{cfg.dataset}"
    if where.is_dir() and is_saved_dataset(where):
        return _saved_dataset(where, cfg.dataset_split), str(where)
    if cfg.dataset_split:
        raise UserError(f"{where}: data.dataset_split names a split of a Hub or save_to_disk dataset; "
                        "this is a file or a folder of split files")
    if where.is_dir():
        files = find_split_files(where)
        return {s: read_records(p) for s, p in files.items()}, str(where)
    return {"all": read_records(where)}, str(where)


def is_saved_dataset(directory: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (directory / "dataset_dict.json").is_file() or (directory / "state.json").is_file()


def dataset_location(cfg: DataConfig) -> Path | None:
    """The file or directory a data section names (None: a Hub id), checked to exist."""
    if cfg.path:
        where = Path(cfg.path)
    elif cfg.dataset in NAMED_DATASETS:
        root = data_root()
        where = root / cfg.dataset
        if not where.is_dir():
            raise UserError(f"{where}: no '{cfg.dataset}' folder in the data root {root} (from {find()[1]}); "
                            "set data.path to its folder")
    else:
        where = Path(cfg.dataset)
    if where.exists():
        return where
    if not cfg.path and is_hub_id(cfg.dataset):
        return None
    raise UserError(f"{where}: no such file or directory")


def _saved_dataset(directory: Path, split: str | None) -> dict[str, list[Record]]:
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(directory))
    except Exception as e:  # datasets raises several types for a folder it cannot read
        raise UserError(f"{directory}: not a readable save_to_disk dataset ({_first_line(e)})") from None
    return _hf_splits(ds, str(directory), split)


def _hub_dataset(cfg: DataConfig) -> dict[str, list[Record]]:
    """A dataset the user named by its Hub id (and configuration): downloaded by `datasets`."""
    name = cfg.dataset
    if hub_offline():
        raise UserError(f"{name}: a Hub dataset id, but HF_HUB_OFFLINE is set (download it first, or give a local path)")
    try:
        from datasets import load_dataset

        ds = load_dataset(name, cfg.dataset_config)
    except Exception as e:  # datasets raises many types for a missing or unreachable repository
        raise UserError(f"{name}: the Hub dataset could not be loaded ({_first_line(e)})") from None
    return _hf_splits(ds, f"hub:{name}", cfg.dataset_split)


def _hf_splits(ds, label: str, split: str | None) -> dict[str, list[Record]]:
    """A `datasets` Dataset or DatasetDict as records: official splits kept under tunebench's names,
    or the one split asked for (or a lone Dataset) as all the data."""
    if not hasattr(ds, "keys"):
        return {"all": _hf_records(ds, label)}
    if split:
        if split not in ds:
            raise UserError(f"{label}: no split '{split}' (data.dataset_split; it has {', '.join(ds)})")
        return {"all": _hf_records(ds[split], f"{label}[{split}]")}
    out = {}
    for name in ds:
        ours = _SPLIT_ALIASES.get(name.lower())
        if ours:
            out[ours] = _hf_records(ds[name], f"{label}[{name}]")
    if not out:
        raise UserError(f"{label}: the dataset has no train/validation/test split (it has {', '.join(ds)}; "
                        "name one with data.dataset_split)")
    return out


def _hf_records(ds, label: str) -> list[Record]:
    return [Record(dict(r), f"{label}:{i}") for i, r in enumerate(ds, 1)]


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# ---------------------------------------------------------------------------- validation

def normalise(rec: Record, task: PromptTask, cfg: DataConfig, need_target: bool) -> dict:
    """Rename user columns, collect references, and check every field the templates use."""
    f = dict(rec.fields)
    for var, column in cfg.fields.items():
        if column not in f:
            raise UserError(f"{rec.source}: field '{column}' is missing (mapped to '{var}')")
        f[var] = f[column]
    target_var = next(iter(_target_vars(task)), None)
    # Several references (DialogSum test: summary1..3): score against all, train on the first.
    refs = f.get("references")
    if refs is None and target_var:
        numbered = [f[k] for k in sorted(f, key=_num_suffix) if k.startswith(target_var) and k[len(target_var):].isdigit()]
        if numbered and target_var not in f:
            f[target_var] = numbered[0]
        refs = numbered or ([f[target_var]] if target_var in f else None)
    for var in task.inputs:
        _check_field(rec, f, var)
    if need_target and target_var:
        _check_field(rec, f, target_var)
    if refs is not None:
        if not isinstance(refs, list) or not all(isinstance(r, str) and r.strip() for r in refs):
            raise UserError(f"{rec.source}: field 'references' must be a list of non-empty strings")
    f["__references"] = refs
    return f


def _num_suffix(k: str):
    digits = "".join(c for c in k if c.isdigit())
    return (len(k), int(digits) if digits else 0)


def _target_vars(task: PromptTask) -> list[str]:
    return sorted(template_variables(task.target))


def _check_field(rec: Record, f: dict, name: str) -> None:
    if name not in f or f[name] is None:
        raise UserError(f"{rec.source}: field '{name}' is missing")
    if not isinstance(f[name], str):
        raise UserError(f"{rec.source}: field '{name}' must be a string, got {type(f[name]).__name__}")
    if not f[name].strip():
        raise UserError(f"{rec.source}: field '{name}' is empty")


# ---------------------------------------------------------------------------- prepare

def split_records(splits: dict[str, list[Record]], cfg: DataConfig) -> dict[str, list[Record]]:
    """Deterministic, disjoint splits: official ones kept, the rest carved out with the seed."""
    rng = random.Random(cfg.seed)
    if "all" in splits:
        rows = list(splits["all"])
        rng.shuffle(rows)
        n_test = round(len(rows) * cfg.test_fraction)
        n_val = round(len(rows) * cfg.validation_fraction)
        out = {"test": rows[:n_test], "validation": rows[n_test:n_test + n_val], "train": rows[n_test + n_val:]}
    else:
        out = {s: list(v) for s, v in splits.items()}
        if "validation" not in out and "train" in out:
            rows = list(out["train"])
            rng.shuffle(rows)
            n_val = round(len(rows) * cfg.validation_fraction)
            out["validation"], out["train"] = rows[:n_val], rows[n_val:]
        if "validation" in out:
            rng.shuffle(out["validation"])
    if cfg.train_limit and "train" in out and cfg.train_limit < len(out["train"]):
        out["train"] = random.Random(cfg.seed + 1).sample(out["train"], cfg.train_limit)
    if cfg.validation_limit and "validation" in out:
        out["validation"] = out["validation"][: cfg.validation_limit]
    if cfg.test_limit and "test" in out:
        out["test"] = out["test"][: cfg.test_limit]
    return out


def prepare(cfg: DataConfig, only: tuple[str, ...] = SPLITS) -> tuple[dict[str, list[dict]], dict]:
    """Examples per split, and a summary (counts, templates, source) for the run manifest.

    `only` renders just those splits (a mixture takes its training set elsewhere); the others are empty.
    """
    raw, source = load_splits(cfg)
    splits = split_records(raw, cfg)
    fmt = chat_format(cfg, raw)
    examples: dict[str, list[dict]] = {s: [] for s in SPLITS}
    ids = _Ids(cfg)
    if fmt:
        for split in only:
            examples[split] = [chat.example(r, fmt, ids.of(r.fields, r)) for r in renamed(splits.get(split, []), cfg)]
    else:
        task = get_task(cfg.task)
        for split in only:
            examples[split] = _templated(task, cfg, split, splits.get(split, []), ids)
    summary = {
        "source": source,
        "task": fmt or get_task(cfg.task).name,
        "counts": {s: len(v) for s, v in examples.items()},
        "templates": {s: _count(r["template"] for r in v) for s, v in examples.items()},
    }
    return examples, summary


def chat_format(cfg: DataConfig, raw: dict[str, list[Record]]) -> str | None:
    """The chat format of the data (data.format, or told by the first record's fields), or None:
    the records are rendered through the task's templates."""
    if cfg.format == "task":
        return None
    if cfg.format != "auto":
        return cfg.format
    first = next((recs[0] for recs in raw.values() if recs), None)
    if first is None:
        return None
    # a mapped column the data lacks is reported where the mapping is used, not here
    mapped = {var: first.fields[col] for var, col in cfg.fields.items() if col in first.fields}
    return chat.detect(Record({**first.fields, **mapped}, first.source))


def renamed(recs: list[Record], cfg: DataConfig) -> list[Record]:
    """data.fields on chat records: a column of the user's data read as `messages`, `conversations`..."""
    if not cfg.fields:
        return recs
    out = []
    for rec in recs:
        f = dict(rec.fields)
        for var, column in cfg.fields.items():
            if column not in f:
                raise UserError(f"{rec.source}: field '{column}' is missing (mapped to '{var}')")
            f[var] = f[column]
        out.append(Record(f, rec.source))
    return out


class _Ids:
    """Each example's id (data.id_field, the usual id columns, else file:line), unique across splits."""

    def __init__(self, cfg: DataConfig):
        self.field, self.seen = cfg.id_field, {}

    def of(self, f: dict, rec: Record) -> str:
        if self.field and self.field not in f:
            raise UserError(f"{rec.source}: field '{self.field}' is missing (data.id_field)")
        rid = str(f[self.field]) if self.field else _default_id(f, rec)
        if rid in self.seen:
            raise UserError(f"{rec.source}: duplicate id '{rid}' (first at {self.seen[rid]})")
        self.seen[rid] = rec.source
        return rid


def _templated(task: PromptTask, cfg: DataConfig, split: str, recs: list[Record], ids: _Ids) -> list[dict]:
    """A split's records rendered through the task's templates (a seeded choice per training example)."""
    pool = task.forward if cfg.templates == "all" else [task.template(n) for n in cfg.templates]
    if not pool:
        raise UserError(f"task '{task.name}': no templates selected")
    if split == "train":
        chosen = task.choose(cfg.templates, cfg.template_choice, cfg.seed, len(recs))
    else:
        chosen = [task.template(cfg.eval_template) if cfg.eval_template else pool[0]] * len(recs)
    rows = []
    for rec, tmpl in zip(recs, chosen):
        f = normalise(rec, task, cfg, need_target=True)
        rid = ids.of(f, rec)
        refs = f.pop("__references")
        completion = tmpl.render_target(f)
        if tmpl.target != task.target:  # a template with its own target (e.g. inverted) has its own reference
            refs = None
        rows.append({
            "id": rid,
            "prompt": tmpl.render(f),
            "completion": completion,
            "references": refs or [completion],
            "template": tmpl.name,
            "source": rec.source,
        })
    return rows


def evaluation_texts(cfg: DataConfig, split: str, limit: int | None) -> list[tuple[str, list[str]]]:
    """(id, raw texts) of the examples an evaluation of `split` scores: the inputs and every reference.

    The contamination check looks for these in the training data; prompt words are left out so
    that a training prompt built from the same template does not match on them.
    """
    raw, _ = load_splits(cfg)
    recs = split_records(raw, cfg).get(split, [])
    recs = recs[:limit] if limit else recs
    fmt = chat_format(cfg, raw)
    if fmt:  # a chat record has no template words: every turn is the example's own text
        ids = _Ids(cfg)
        rows = [chat.example(r, fmt, ids.of(r.fields, r)) for r in renamed(recs, cfg)]
        return [(r["id"], [t["content"] for t in r["messages"]]) for r in rows]
    task = get_task(cfg.task)
    out = []
    for rec in recs:
        f = normalise(rec, task, cfg, need_target=True)
        refs = f.pop("__references") or []
        rid = str(f.get(cfg.id_field)) if cfg.id_field else _default_id(f, rec)
        out.append((rid, [f[v] for v in task.inputs] + list(refs)))
    return out


def _default_id(f: dict, rec: Record) -> str:
    for key in DEFAULT_ID_COLUMNS:
        if key in f and f[key] not in (None, ""):
            return str(f[key])
    return rec.source


def _count(items) -> dict:
    out: dict = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def load_prepared(directory: Path | str, split: str) -> list[Example]:
    """Examples written by `prepare` (DIR/<split>.jsonl)."""
    from ..io.runs import read_jsonl

    path = Path(directory) / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: not found (run `tunebench prepare --out {directory}` first)")
    rows = read_jsonl(path)
    for i, r in enumerate(rows, 1):
        for key in ("id", "prompt", "completion"):
            if not isinstance(r.get(key), str):
                raise UserError(f"{path}:{i}: field '{key}' is missing")
    return rows
