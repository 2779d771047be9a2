"""MMLU, GLUE and SuperGLUE tasks declared in `registry/*.yaml`: file, prompt, choices, label.

Prompts and choices are Jinja templates rendered in the sandbox over one data row; `label`
renders to a value that `label_map` turns into the index of the correct choice. Context =
description + shots (each prompt + delimiter + its answer) joined by `fewshot_delimiter` + prompt;
a choice's continuation is `target_delimiter` + choice, as in lm-evaluation-harness.
"""
from __future__ import annotations

import random
from pathlib import Path

import yaml

from ..data.templates import compiled, template_variables
from ..errors import UserError
from ..io.files import declared_columns, read_table
from ..io.runs import read_jsonl
from .tasks import REGISTRY_DIR, BenchmarkTask, Example


def _rows(path: Path, fmt: str, columns: list[str] | None, header: bool) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: benchmark data file not found")
    if fmt == "jsonl":
        return read_jsonl(path)
    # line breaks read as text mode reads them: \r\n -> \n, also inside the quoted fields of a few MMLU CSVs
    columns = columns or declared_columns(path)  # a shared header-less file: io/file_layouts.yaml
    return [r.fields for r in read_table(path, fmt, columns, header, allow_empty=True, universal_newlines=True)]


def _render(template: str, row: dict, where: str) -> str:
    try:
        return compiled(template).render(**row, row=row)
    except Exception as e:
        raise UserError(f"{where}: cannot render template ({e})") from None


class _Spec:
    def __init__(self, name, family, path, spec, shots_path=None, description="", category=""):
        self.name, self.family, self.path, self.spec = name, family, path, spec
        self.shots_path, self.description, self.category = shots_path, description, category

    def docs(self, path: Path, perturb=None) -> list[tuple[str, list[str], int]]:
        """(prompt, choices, gold) per row; `perturb(text, index)` changes the prompt's text fields only."""
        s = self.spec
        out = []
        for i, row in enumerate(_rows(path, s.get("format", "csv"), s.get("columns"), s.get("header", False))):
            where = f"{path}: row {i + 1}"
            shown = {k: perturb(v, i) if isinstance(v, str) else v for k, v in row.items()} if perturb else row
            prompt = _render(s["prompt"], shown, where)
            choices = [_render(c, row, where) for c in s["choices"]]
            label = _render(s["label"], row, where).strip()
            if label not in {str(k) for k in s["label_map"]}:
                raise UserError(f"{where}: label {label!r} is not one of {sorted(map(str, s['label_map']))}")
            gold = {str(k): v for k, v in s["label_map"].items()}[label]
            out.append((prompt, choices, gold))
        return out

    def load(self, shots: int, seed: int, perturb=None) -> list[Example]:
        s = self.spec
        td, fd = s.get("target_delimiter", " "), s.get("fewshot_delimiter", "\n\n")
        docs = self.docs(self.path, perturb)
        # shots drawn from the same split stay unperturbed
        plain = self.docs(self.path) if perturb and shots and not self.shots_path else docs
        shot_docs = self.docs(self.shots_path) if shots and self.shots_path else None
        raw = self.inputs(self.path)
        rng = random.Random(seed)
        out = []
        for i, (prompt, choices, gold) in enumerate(docs):
            if shots:
                if shot_docs is not None:  # a separate shots split: its first n, as lm-eval's first_n sampler
                    picked = shot_docs[:shots]
                else:                      # else other examples of the same split, seeded
                    picked = [plain[j] for j in rng.sample([j for j in range(len(docs)) if j != i], shots)]
                shot_text = fd.join(p + td + c[g] for p, c, g in picked) + fd
            else:
                shot_text = ""
            out.append(Example(id=str(i), context=self.description + shot_text + prompt,
                               choices=[td + c for c in choices], gold=gold, targets=[choices[gold]], inputs=raw[i]))
        return out

    def inputs(self, path: Path) -> list[list[str]]:
        """Per row, the text of the fields the prompt reads (all text fields when it reads `row[...]`)."""
        s = self.spec
        used = template_variables(s["prompt"])
        out = []
        for row in _rows(path, s.get("format", "csv"), s.get("columns"), s.get("header", False)):
            keys = list(row) if "row" in used else [k for k in row if k in used]
            out.append([row[k] for k in keys if isinstance(row[k], str)])
        return out

    def task(self) -> BenchmarkTask:
        s = self.spec
        # a missing data file keeps its task registered: asking for it gives a clear error, not "unknown task"
        size = len(_rows(self.path, s.get("format", "csv"), s.get("columns"), s.get("header", False))) if self.path.is_file() else None
        return BenchmarkTask(name=self.name, family=self.family, kind="multiple_choice", metrics=["accuracy"],
                    source=str(self.path), load=self.load, category=self.category or self.family, size=size)


def declared_tasks(root: Path) -> list[BenchmarkTask]:
    tasks = []
    for f in sorted(REGISTRY_DIR.glob("*.yaml")):
        spec = yaml.safe_load(f.read_text())
        if f.name == "suites.yaml":
            continue
        if spec["family"] == "mmlu":
            tasks += _mmlu(root, spec)
            continue
        for t in spec["tasks"]:
            merged = {**spec.get("defaults", {}), **t}
            path = root / merged["path"]
            shots = root / merged["shots_path"] if merged.get("shots_path") else None
            tasks.append(_Spec(t["name"], spec["family"], path, merged, shots).task())
    return tasks


def _mmlu(root: Path, spec: dict) -> list[BenchmarkTask]:
    test_dir = root / Path(spec["path"]).parent
    if not test_dir.is_dir():
        return []
    category = {s: c for c, subjects in spec["categories"].items() for s in subjects}
    tasks = []
    for fmt_name, fmt in spec["formats"].items():
        for f in sorted(test_dir.glob("*_test.csv")):
            subject = f.name[: -len("_test.csv")]
            merged = {**spec, **fmt, "format": "csv", "header": False}
            shots = root / spec["shots_path"].format(subject=subject)
            desc = fmt["description"].format(subject_words=subject.replace("_", " "))
            tasks.append(_Spec(fmt["name"].format(subject=subject), "mmlu", f, merged, shots if shots.is_file() else None,
                               desc, category=f"mmlu_{category.get(subject, 'other')}").task())
    return tasks
