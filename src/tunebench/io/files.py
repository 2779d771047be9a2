"""Data files read into records: JSONL/JSON, CSV, TSV and Parquet, with file:line in every error.

A *record* is a row of a data file (a dict of values) plus where it came from. Text files are
UTF-8 (a BOM is dropped); CSV is read with quoting, TSV (GLUE's files) without.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import yaml

from ..errors import UserError
from .locations import find


@dataclass
class Record:
    fields: dict
    source: str  # "file:line" for error messages and provenance


def read_records(path: Path | str) -> list[Record]:
    """The records of a file, its format told by the suffix (.jsonl/.json, .csv, .tsv, .parquet)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_jsonl_records(path)
    if suffix in (".csv", ".tsv"):
        return read_csv_records(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return read_parquet_records(path)
    raise UserError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .csv, .tsv or .parquet)")


def open_text(path: Path, allow_empty: bool = False, universal_newlines: bool = False) -> str:
    """A file's text: UTF-8 (BOM dropped); not UTF-8 or (unless `allow_empty`) empty is the user's error.

    `universal_newlines`: \r\n and \r read as \n, as Python's text mode reads them (line breaks
    inside quoted CSV fields included); otherwise the text is kept as it is.
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#x})") from None
    if not allow_empty and not text.strip():
        raise UserError(f"{path}: file is empty")
    return text.replace("\r\n", "\n").replace("\r", "\n") if universal_newlines else text


def read_jsonl_records(path: Path) -> list[Record]:
    """One JSON object per line (a .json file may instead hold one array of objects)."""
    text = open_text(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        return [_as_record(r, f"{path}:[{i}]") for i, r in enumerate(rows)]
    out = []
    # line ends are \n, \r\n or \r (never raw inside a JSON string); not splitlines(), which also breaks
    # at U+2028, U+2029 and NEL, characters JSON allows raw inside strings
    for i, line in enumerate(re.split(r"\r\n?|\n", text), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        out.append(_as_record(row, f"{path}:{i}"))
    return out


def _as_record(row, source: str) -> Record:
    if not isinstance(row, dict):
        raise UserError(f"{source}: a record must be a JSON object, got {type(row).__name__}")
    return Record(row, source)


def read_csv_records(path: Path, delimiter: str) -> list[Record]:
    """A delimited file with a header row, CSV quoting (fields may span lines); source: the line a row ends on."""
    text = open_text(path)
    # StringIO, not splitlines(): quoted fields may hold \r or U+2028, which are not row breaks
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    out = []
    try:
        for row in reader:
            # the line where this row ends; rows can span lines inside quotes
            out.append(Record({k: v for k, v in row.items() if k is not None}, f"{path}:{reader.line_num}"))
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return out


def read_parquet_records(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises many types for a broken file
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    return [Record(r, f"{path}:row {i}") for i, r in enumerate(rows, 1)]


def read_table(path: Path, fmt: str, columns: Sequence[str] | None = None, header: bool = True,
               allow_empty: bool = False, universal_newlines: bool = False) -> list[Record]:
    """The rows of a "csv" or "tsv" file as records, blank rows skipped; source: "file:N", N the row's
    number in the file. The header row names the columns, or (`header` false) `columns` does.
    `allow_empty`, `universal_newlines`: as `open_text`.

    TSV is read without quoting, as GLUE's own readers do: GLUE sentences hold bare quote characters.
    """
    text = open_text(path, allow_empty, universal_newlines)
    # StringIO, not splitlines(): fields may hold \r or U+2028, which are not row breaks
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",",
                        quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
    lines = list(reader)
    names, body, first = (lines[0], lines[1:], 2) if header else (columns, lines, 1)
    return [Record(dict(zip(names, r)), f"{path}:{i}") for i, r in enumerate(body, first) if r]


@lru_cache(maxsize=1)
def _layouts() -> dict:
    return yaml.safe_load((Path(__file__).parent / "file_layouts.yaml").read_text(encoding="utf-8")) or {}


def declared_columns(path: Path) -> tuple[str, ...] | None:
    """The columns of a header-less file under the data root, declared once (file_layouts.yaml)
    for the template library and the benchmark registry alike; None for any other file."""
    root, _ = find()
    if root is None:
        return None
    try:
        rel = Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
    columns = _layouts().get(rel, {}).get("columns")
    return tuple(columns) if columns else None
