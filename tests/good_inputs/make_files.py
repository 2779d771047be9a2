"""Writes the good-input corpus byte for byte (BOMs, CRLF line ends, raw U+2028): run it from
anywhere to rebuild the files; cases.yaml says what each must give. .gitattributes keeps git from
touching line ends here."""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOM = "\ufeff"

# Text that must reach the prepared prompt unchanged, code point for code point (cases.yaml repeats it).
NON_ASCII = [
    ("accents", "Résumé : l'été à Noël, le garçon naïf lit une œuvre de Dvořák à Łódź; Straße, İstanbul, ı.",
     "Un résumé en français."),
    ("combining", "Cafe\u0301 decomposed (e + U+0301) next to Café precomposed: neither is normalised.",
     "Two spellings, kept apart."),
    ("cjk", "会議の要約をお願いします。中文：请总结这段对话。한국어: 대화를 요약해 주세요.", "要約：三人が会議した。"),
    ("emoji", "Great 👍🏽 party 🎉, family 👨\u200d👩\u200d👧, flag 🇫🇷, math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢.", "🎉 went well."),
    ("rtl", "\u200fلخّص المحادثة التالية: مرحبا 123\u200f | סכם את השיחה: שלום 456", "ملخص قصير"),
    ("spaces", "non-breaking\u00a0space, zero\u200bwidth space, narrow\u202fno-break, tab\tinside.", "odd spaces"),
]
SEPARATORS = [  # JSON allows these raw inside strings; str.splitlines() breaks lines at them
    ("u2028", "first\u2028second (LINE SEPARATOR)", "ok"),
    ("u2029", "para one\u2029para two (PARAGRAPH SEPARATOR)", "ok"),
    ("nel", "before\u0085after (NEL, C1 control)", "ok"),
]


def jsonl(rows, newline="\n", bom=False, tail=None) -> str:
    lines = [json.dumps({"id": i, "prompt": p, "completion": c}, ensure_ascii=False) for i, p, c in rows]
    text = newline.join(lines) + (newline if tail is None else tail)
    return (BOM if bom else "") + text


def write(name: str, text: str) -> None:
    p = HERE / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text.encode("utf-8"))


def _bom_crlf_json(obj) -> str:
    return BOM + json.dumps(obj, ensure_ascii=False, indent=2).replace("\n", "\r\n") + "\r\n"


def simple(n: int, tag: str):
    return [(f"{tag}{i}", f"Prompt {i} of {tag}.", f"Completion {i} of {tag}.") for i in range(1, n + 1)]


def main() -> None:
    write("bom.jsonl", jsonl(simple(10, "bom"), bom=True))
    write("crlf.jsonl", jsonl(simple(3, "crlf"), newline="\r\n", tail="\r\n"))
    write("mixed_line_ends.jsonl", jsonl(simple(2, "lf"), tail="\n") + jsonl(simple(2, "crlf"), "\r\n", tail="\r\n"))
    write("crlf.csv", "id,prompt,completion\r\n" + "".join(f"{i},{p},{c}\r\n" for i, p, c in simple(3, "csv")))
    # TSV: CRLF, a double quote inside a field (literal in TSV), no final line end
    write("crlf.tsv", "id\tprompt\tcompletion\r\n" + "\r\n".join(
        f"{i}\t{p}\t{c}" for i, p, c in simple(2, "tsv") + [("tsv3", 'He said "hi" twice.', "A 5\" screen.")]))
    write("trailing_blank_lines.jsonl", jsonl(simple(3, "blank"), tail="\n\n   \n\t\n\n"))
    write("trailing_blank_lines.csv", "id,prompt,completion\r\n"
          + "".join(f"{i},{p},{c}\r\n" for i, p, c in simple(2, "blankcsv")) + "\r\n\r\n")
    write("non_ascii.jsonl", jsonl(NON_ASCII))
    write("line_separators.jsonl", jsonl(SEPARATORS))
    # Excel's "CSV UTF-8": BOM, CRLF between rows, LF inside a quoted cell, quoted commas, "" for a quote
    write("excel_bom_crlf.csv", BOM + "id,prompt,completion\r\n"
          + 'x1,"Crème brûlée, s\'il vous plaît","Un dessert, « parfait »."\r\n'
          + 'x2,"Line one\nLine two in the same cell","She said ""oui""."\r\n'
          + "x3,会議,要約\r\n")
    # quoted fields holding newlines (LF and CRLF), an empty line inside quotes, a comma, a quote
    write("quoted_newlines.csv", "id,prompt,completion\n"
          + 'q1,"Alice: hi\nBob: hello\n\nAlice: bye","Alice and Bob, briefly."\n'
          + 'q2,"Windows cell\r\nsecond line","Quote: ""x"", comma, done"\n'
          + 'q3,plain,"ends with a newline\n"\n')
    # a JSON array file with BOM and CRLF (pretty-printed)
    array = [{"id": f"arr{i}", "prompt": f"Prompt {i} ✓", "completion": f"Completion {i}"} for i in range(1, 5)]
    write("array_bom_crlf.json", BOM + json.dumps(array, ensure_ascii=False, indent=2).replace("\n", "\r\n") + "\r\n")
    # a directory of official splits, three formats
    # (split files named records.<split>.*: no file here is named like one of the real datasets)
    write("splits/records.train.jsonl", jsonl(simple(5, "tr"), newline="\r\n", bom=True))
    write("splits/records.dev.csv", BOM + "id,prompt,completion\r\n" + "".join(f"{i},{p},{c}\r\n" for i, p, c in simple(2, "dv")))
    write("splits/records.test.tsv", "id\tprompt\tcompletion\r\n"
          + "".join(f"{i}\t{p}\t{c}\r\n" for i, p, c in simple(3, "te")) + "\r\n\r\n")
    # one record far longer than any max_length
    long = [("long1", "Summarize this very long dialogue. " + "Alice: yes, and then? Bob: and then more. " * 600,
             "Too long to train on.")]
    write("overlong.jsonl", jsonl(simple(3, "short") + long + simple(2, "after")))
    # a user task file: BOM, CRLF, a multi-line block-scalar prompt with non-ASCII text
    write("task_bom_crlf.yaml", BOM + "\r\n".join([
        "# a user task, saved by an editor that writes a BOM and CRLF",
        "task: notes_fr",
        "description: Résumés de notes (tâche utilisateur).",
        "inputs: [text]",
        'target: "{{ summary }}"',
        "templates:",
        "  - name: résumé",
        "    prompt: |",
        "      Résumez en une phrase — 一句话 🙂 :",
        "      {{ text }}",
        "  - name: plain",
        '    prompt: "Notes: {{ text }}"',
        ""]))
    write("task_records.jsonl", "\r\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "n1", "text": "Réunion à 9h — 会議", "summary": "Une réunion."},
        {"id": "n2", "text": "שלום, مرحبا 👋", "summary": "Salutations."}]) + "\r\n")
    # BIG-bench: a multiple-choice task file with BOM and CRLF, and a container whose files have them too
    mc = {"name": "couleurs", "description": "Choisir la couleur — 色", "keywords": ["test"],
          "metrics": ["multiple_choice_grade"], "task_prefix": "Réponds :\n", "examples": [
              {"input": "¿De qué color es el cielo?", "target_scores": {"azul": 1, "verde": 0}},
              {"input": "草は何色？", "target_scores": {"青": 0, "緑": 1}},
              {"input": "Snow is", "target_scores": {"white ❄": 1, "black": 0, "grey": 0.5}}]}
    write("bigbench_bom_crlf.json", _bom_crlf_json(mc))
    # A container's files must be named task.json, like BIG-bench's own: kept as one file mapping each
    # path to its exact text, which the tests write out into a temporary folder (conftest.materialise).
    suite = {"name": "suite_bom", "description": "a container", "keywords": ["test"], "metrics": ["multiple_choice_grade"]}
    files = {"task.json": _bom_crlf_json(suite)}
    for sub, n in (("a_colours", 2), ("b_snow", 3)):
        files[f"{sub}/task.json"] = _bom_crlf_json(dict(mc, name=sub, examples=mc["examples"][:n]))
    write("bigbench_suite_bom_crlf.json", json.dumps(files, indent=1) + "\n")
    # a recipe with BOM and CRLF (loaded by test_good_inputs.py, not run: a whole run is too slow)
    write("recipe_bom_crlf.yaml", BOM + "\r\n".join([
        "# résumé recipe — saved with a BOM and CRLF",
        "name: notes-fr",
        "out: runs/notes",
        "data:",
        "  dataset: notes.jsonl",
        "  task: prompt_completion",
        "  fields:",
        "    prompt: entrée_texte",
        "    completion: résumé",
        "train:",
        "  lr: 1.0e-4",
        "  max_length: 256",
        ""]))
    try:  # Parquet: non-ASCII and newlines in a binary columnar file
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    rows = [{"id": i, "prompt": p, "completion": c} for i, p, c in NON_ASCII[:4]] + [
        {"id": "pq_nl", "prompt": "line one\r\nline two\nline three", "completion": "three lines"}]
    pq.write_table(pa.Table.from_pylist(rows), HERE / "non_ascii.parquet")


if __name__ == "__main__":
    main()
