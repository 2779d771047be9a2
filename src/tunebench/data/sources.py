"""A task's declared `source` read into records: the training pool, the validation slice, a sample record.

A record here is a dict of template variables plus `_id` and `_source` (file:line). Records whose
input fields are empty are skipped and counted (SAMSum has one empty dialogue); a column the task
file names but the data lacks, or a label missing from the label map, is the task file's mistake
and stops with the file, line and field.

The training pool never holds what a benchmark scores: for each `reserve` entry the first N
examples of that benchmark are skipped when they come from the same file, and any other row
sharing a 13-gram (or a whole short text) with them is left out too (BoolQ asks several questions
about one passage; RTE repeats hypotheses between its train and validation files). Those scored
rows are computed above this layer (`tunebench.pipeline.reserved_rows`) and passed in: data
preparation never imports the benchmark registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..config import CONTAMINATION_MIN_WORDS, CONTAMINATION_N
from ..errors import UserError
from ..io.files import (
    Record,
    declared_columns,
    read_csv_records,
    read_jsonl_records,
    read_table,
)
from ..io.locations import data_root, describe
from .contamination import ScoredRows, index_of
from .templates import PromptTask, Source


@dataclass
class Pool:
    task: str
    train: list[dict]
    validation: list[dict]
    skipped: dict = field(default_factory=dict)    # reason -> rows left out
    files: dict = field(default_factory=dict)      # split -> file read


def resolve(source: Source, path: str) -> Path:
    """'./x' and '../x' are relative to the user's task file; other relative paths to the data root."""
    p = Path(path)
    if p.is_absolute():
        return p
    if source.base and path.startswith(("./", "../")):
        return Path(source.base) / p
    return data_root() / p


def read_rows(source: Source, path: Path) -> list[Record]:
    fmt = source.format or {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(path.suffix.lower())
    if not path.is_file():
        raise UserError(f"{path}: task data file not found (data root: {describe()})")
    if fmt == "jsonl":
        return read_jsonl_records(path)
    columns = source.columns or declared_columns(path)
    if fmt == "csv" and not columns:
        return read_csv_records(path, ",")
    if fmt not in ("csv", "tsv"):
        raise UserError(f"{path}: cannot tell the format from the suffix (set source.format)")
    return read_table(path, fmt, columns, header=not columns)


def to_record(task: PromptTask, rec: Record, index: int) -> dict | None:
    """Template variables of one row, or None when an input is empty (skipped and counted)."""
    src, row, out = task.data, rec.fields, {}
    for var, column in src.fields.items():
        if column not in row:
            raise UserError(f"{rec.source}: field '{column}' is missing (source.fields.{var} in {task.source})")
        value = row[column]
        value = value if isinstance(value, str) else ("" if value is None else str(value))
        # SAMSum separates turns with \r\n: one line-break convention for every task the model sees
        out[var] = value.replace("\r\n", "\n").strip()
    if src.label:
        column = src.label["column"]
        if column not in row:
            raise UserError(f"{rec.source}: field '{column}' is missing (source.label in {task.source})")
        value = row[column]
        value = str(value).lower() if isinstance(value, bool) else str(value)
        if value not in src.label["map"]:
            raise UserError(f"{rec.source}: label {value!r} is not in source.label.map of {task.source} "
                            f"({', '.join(src.label['map'])})")
        out[src.label["as"]] = src.label["map"][value]
    if any(not out[v].strip() for v in task.inputs):
        return None
    rid = row.get(src.id) if src.id else None
    out["_id"] = f"{task.name}/{rid if rid not in (None, '') else index}"
    out["_source"] = rec.source
    return out


def _records(task: PromptTask, rows: list[Record], first_index: int = 1, positions: list[int] | None = None) -> tuple[list[dict], int]:
    out, empty = [], 0
    for i, rec in zip(positions or range(first_index, first_index + len(rows)), rows):
        r = to_record(task, rec, i)
        if r is None:
            empty += 1
        else:
            out.append(r)
    return out, empty


def input_texts(task: PromptTask, record: dict) -> list[str]:
    return [record[v] for v in task.data.fields if isinstance(record.get(v), str)]


def pool(task: PromptTask, n: int = CONTAMINATION_N, min_words: int = CONTAMINATION_MIN_WORDS,
         reserved: Sequence[ScoredRows] = ()) -> Pool:
    """The task's training pool and validation records (the source files are read once per process).

    `reserved`: the scored rows of each benchmark the task's `source.reserve` names (computed by
    `tunebench.pipeline.reserved_rows`); a reserve entry without its rows is a programming error.
    """
    if task.data is None:
        raise UserError(f"task '{task.name}' ({task.source}) declares no source: it cannot be part of a mixture")
    key = (task.source, task.name, n, min_words, str(data_root()),
           tuple((r.name, r.source, r.select, r.limit, len(r.items)) for r in reserved))
    if key not in _POOLS:
        _POOLS[key] = _pool(task, n, min_words, reserved)
    return _POOLS[key]


_POOLS: dict[tuple, Pool] = {}


def _reserved_of(task: PromptTask, entry: dict, reserved: Sequence[ScoredRows]) -> ScoredRows:
    for r in reserved:
        if r.name == entry["benchmark"] and r.limit == entry["first"] and r.select == "first":
            return r
    raise TypeError(f"{task.source}: source.reserve names {entry['benchmark']} (first {entry['first']}), but its "
                    "scored rows were not passed (tunebench.pipeline.reserved_rows computes them)")


def _pool(task: PromptTask, n: int, min_words: int, reserved: Sequence[ScoredRows]) -> Pool:
    src = task.data
    train_path = resolve(src, src.train)
    rows = read_rows(src, train_path)
    skipped: dict = {}
    positions = list(range(1, len(rows) + 1))
    reserved_sets = {}
    for r in src.reserve:
        bench = _reserved_of(task, r, reserved)
        if Path(bench.source).resolve() == train_path.resolve():
            # the benchmark reads this very file in order: its first N rows are the scored ones
            keep = [(p, rec) for p, rec in zip(positions, rows) if p > r["first"]]
            skipped[f"first {r['first']} rows (scored by {r['benchmark']})"] = len(rows) - len(keep)
            positions, rows = [p for p, _ in keep], [rec for _, rec in keep]
        reserved_sets[bench.name] = bench.items
    records, empty = _records(task, rows, positions=positions)
    if empty:
        skipped["empty input field"] = empty
    if reserved_sets:
        index = index_of(reserved_sets, n, min_words)
        clean = [r for r in records if not any(index.find(t) for t in input_texts(task, r))]
        if len(clean) < len(records):
            skipped[f"overlap with the reserved rows of {', '.join(reserved_sets)}"] = len(records) - len(clean)
        records = clean
    files = {"train": str(train_path)}
    if src.validation:
        vpath = resolve(src, src.validation)
        validation, v_empty = _records(task, read_rows(src, vpath))
        if v_empty:
            skipped["empty input field (validation file)"] = v_empty
        files["validation"] = str(vpath)
    else:
        k = min(src.holdout, len(records) // 2)
        validation, records = (records[len(records) - k:], records[:len(records) - k]) if k else ([], records)
        if k:
            files["validation"] = f"{train_path} (last {k} usable rows)"
    if not records:
        raise UserError(f"task '{task.name}': no training records left in {train_path}")
    return Pool(task=task.name, train=records, validation=validation, skipped=skipped, files=files)


def sample_records(task: PromptTask, k: int) -> list[dict]:
    """The first k usable records of the task's training file, for `templates show` (no pool checks: fast)."""
    src = task.data
    if src is None:
        raise UserError(f"task '{task.name}' declares no source to take a record from")
    path = resolve(src, src.train)
    out = []
    for i, rec in enumerate(read_rows(src, path), 1):
        r = to_record(task, rec, i)
        if r is not None:
            out.append(r)
            if len(out) == k:
                break
    if not out:
        raise UserError(f"{path}: no usable record")
    return out
