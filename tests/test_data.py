import json

import pytest

from conftest import DIALOGSUM
from tunebench.config import DataConfig
from tunebench.data import prepare, read_records
from tunebench.errors import UserError


def test_dialogsum_official_splits_and_references():
    ex, summary = prepare(DataConfig(path=str(DIALOGSUM), train_limit=20, validation_limit=5, test_limit=3))
    assert summary["counts"] == {"train": 20, "validation": 5, "test": 3}
    t0 = ex["test"][0]
    assert t0["id"] == "test_0" and len(t0["references"]) == 3  # summary1..3
    assert t0["completion"] == t0["references"][0]
    assert all(e["id"].startswith("train_") for e in ex["train"])
    assert all(e["id"].startswith("dev_") for e in ex["validation"])
    assert t0["template"] == "summarize_conversation" and t0["prompt"].startswith("Summarize the following conversation.")
    assert len({e["template"] for e in ex["train"]}) > 1  # random template per example


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_splits_are_deterministic_and_disjoint(tmp_path):
    rows = [{"id": f"r{i}", "dialogue": f"A: hello {i}", "summary": f"greeting {i}"} for i in range(100)]
    _write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(dataset=str(tmp_path / "d.jsonl"), validation_fraction=0.1, test_fraction=0.2, seed=3)
    a, _ = prepare(cfg)
    b, _ = prepare(cfg)
    assert a == b
    ids = {s: {e["id"] for e in a[s]} for s in a}
    assert [len(ids[s]) for s in ("train", "validation", "test")] == [70, 10, 20]
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"]) and not (ids["validation"] & ids["test"])
    c, _ = prepare(cfg.model_copy(update={"seed": 4}))
    assert {e["id"] for e in c["test"]} != ids["test"]


def test_csv_and_parquet_and_field_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.csv").write_text('text,abstract\n"A: hi, there\nB: yo",they greet\n"A: bye",farewell\n')
    recs = read_records(tmp_path / "d.csv")
    assert recs[0].fields["text"] == "A: hi, there\nB: yo" and recs[0].source.endswith("d.csv:3")
    pq.write_table(pa.table({"text": ["A: x"] * 10, "abstract": ["s"] * 10}), tmp_path / "d.parquet")
    ex, _ = prepare(DataConfig(dataset=str(tmp_path / "d.parquet"), fields={"dialogue": "text", "summary": "abstract"},
                               test_fraction=0.2, validation_fraction=0.0))
    assert len(ex["test"]) == 2 and ex["test"][0]["completion"] == "s"


@pytest.mark.parametrize("content,expected", [
    ('{"dialogue": "A: hi", "summary": "x"}\n{"dialogue": "A: hi"\n', r"d\.jsonl:2: not valid JSON"),
    ('{"dialogue": "A: hi", "summary": "x"}\n{"dialogue": "A: hi"}\n', r"d\.jsonl:2: field 'summary' is missing"),
    ('{"dialogue": "  ", "summary": "x"}\n', r"d\.jsonl:1: field 'dialogue' is empty"),
    ('{"dialogue": 3, "summary": "x"}\n', r"d\.jsonl:1: field 'dialogue' must be a string, got int"),
    ('["not", "an", "object"]\n', r"d\.jsonl:1: a record must be a JSON object"),
    ('', r"d\.jsonl: file is empty"),
    ('{"id": "a", "dialogue": "A", "summary": "x"}\n' * 2, r"d\.jsonl:2: duplicate id 'a' \(first at .*d\.jsonl:1\)"),
])
def test_bad_records_name_file_line_and_field(tmp_path, content, expected):
    (tmp_path / "d.jsonl").write_text(content)
    with pytest.raises(UserError, match=expected):
        prepare(DataConfig(dataset=str(tmp_path / "d.jsonl"), test_fraction=0.0, validation_fraction=0.0))


def test_non_utf8_is_refused_with_line(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b'{"dialogue": "ok", "summary": "x"}\n{"dialogue": "caf\xe9", "summary": "x"}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:2: not UTF-8"):
        read_records(tmp_path / "d.jsonl")
