import json

import pytest
from conftest import DIALOGSUM

from tunebench.config import DataConfig
from tunebench.data.examples import prepare
from tunebench.errors import UserError
from tunebench.io.files import read_records

# The summarizing templates of template_library/dialogue_summary.yaml, in file order, written out
# here so that a changed phrasing or order fails
DIALOGSUM_PROMPTS = {
    "summarize_conversation": "Summarize the following conversation.\n\n{dialogue}",
    "briefly_summarize": "{dialogue}\n\nBriefly summarize that dialogue.",
    "write_short_summary": "Here is a dialogue:\n{dialogue}\n\nWrite a short summary!",
    "what_is_summary": "Dialogue:\n{dialogue}\n\nWhat is a summary of this dialogue?",
    "two_sentences": "{dialogue}\n\nWhat was that dialogue about, in two sentences or less?",
    "what_was_going_on": "Dialogue:\n{dialogue}\n\nWhat was going on?",
    "main_points": "Dialogue:\n{dialogue}\n\nWhat were the main points in that conversation?",
}


def _raw(split):
    with open(DIALOGSUM / f"dialogsum.{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_dialogsum_official_splits_and_references():
    """Every example against the raw DialogSum files: the documented seeded subset (train), seeded
    order (validation) and file order (test), the template each names rendered by hand, the
    summaries as completions and all three test summaries as references."""
    import random
    from collections import Counter

    ex, summary = prepare(DataConfig(path=str(DIALOGSUM), train_limit=20, validation_limit=5, test_limit=3))
    assert summary["counts"] == {"train": 20, "validation": 5, "test": 3}
    train, dev, test = _raw("train"), _raw("dev"), _raw("test")
    # train: random.Random(seed + 1).sample of the official split; a random.Random(seed) template each
    picked = random.Random(1).sample(train, 20)
    rng = random.Random(0)
    names = [rng.choice(list(DIALOGSUM_PROMPTS)) for _ in picked]
    assert [(e["id"], e["template"], e["prompt"], e["completion"], e["references"]) for e in ex["train"]] == [
        (r["fname"], n, DIALOGSUM_PROMPTS[n].format(dialogue=r["dialogue"]), r["summary"], [r["summary"]])
        for r, n in zip(picked, names)]
    assert summary["templates"]["train"] == dict(Counter(names)) and len(set(names)) > 1
    # validation: the official dev split shuffled with random.Random(seed), first 5, the fixed eval template
    random.Random(0).shuffle(dev)
    evaluation = DIALOGSUM_PROMPTS["summarize_conversation"]
    assert [(e["id"], e["template"], e["prompt"], e["completion"]) for e in ex["validation"]] == [
        (r["fname"], "summarize_conversation", evaluation.format(dialogue=r["dialogue"]), r["summary"]) for r in dev[:5]]
    # test: file order; trained-on reference first, all three scored against
    assert [(e["id"], e["prompt"], e["completion"], e["references"]) for e in ex["test"]] == [
        (r["fname"], evaluation.format(dialogue=r["dialogue"]), r["summary1"], [r["summary1"], r["summary2"], r["summary3"]])
        for r in test[:3]]


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
