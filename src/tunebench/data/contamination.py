"""Has the model seen the evaluation data? Word n-gram overlap between training examples and evaluation sets.

Training side: each training example as the model saw it, the rendered prompt and completion
(few-shot exemplars included, since they are trained on too). Evaluation side: each evaluation
example's raw input texts (a benchmark row's fields, a DialogSum dialogue and its reference
summaries) without the benchmark's prompt words, which would otherwise match any training
prompt built from a similar template.

Texts are lowercased and every run of punctuation becomes a word break. An evaluation text of
n words or more (13 by default, GPT-3's choice) is represented by its n-grams; a shorter one
(SST-2 sentences often are) is one gram, found where it occurs word for word inside a training
text. Evaluation texts under `min_words` words are ignored: a label or a two-word phrase shared
with a training text is no evidence that the example was seen.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from ..config import CONTAMINATION_MIN_WORDS, CONTAMINATION_N
from ..errors import UserError

_PUNCT = re.compile(r"[\W_]+")

HOW = ("word n-grams, lowercased, punctuation as word breaks; training side: rendered prompt + completion "
       "(few-shot exemplars included); evaluation side: the raw input texts of each example (no prompt words); "
       "an evaluation text shorter than n words is one gram, matched where it occurs word for word")


@dataclass
class ScoredRows:
    """The examples a benchmark run scores, as plain data: what the data layer knows of a benchmark.

    Built above this layer (`tunebench.benchmarks.tasks.scored_rows`) and passed down: an evaluation
    set of the contamination check, or the rows a training pool reserves (`source.reserve`).
    """

    name: str                                   # the benchmark task's registry name
    source: str                                 # the file it reads
    select: str                                 # how `limit` picks: "first" (file order) or "seeded"
    limit: Optional[int]                        # examples scored (None: all of them)
    items: list[tuple[str, list[str]]]          # (id, raw input texts) of each scored example

    @property
    def where(self) -> str:
        return self.source + (f", {self.select} {self.limit}" if self.limit else "")


def words(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


class EvalIndex:
    """The evaluation sets, indexed once; training texts are then looked up position by position."""

    def __init__(self, n: int = CONTAMINATION_N, min_words: int = CONTAMINATION_MIN_WORDS):
        if n < 2 or not 2 <= min_words <= n:
            raise UserError(f"contamination: need n >= 2 and 2 <= min_words <= n (got n={n}, min_words={min_words})")
        self.n, self.min_words = n, min_words
        self.long: dict[tuple, list] = defaultdict(list)   # n-gram -> [(set, id)]
        self.short: dict[tuple, list] = defaultdict(list)  # first two words -> [(whole short text, set, id)]
        self.sizes: dict[str, int] = {}
        self.ignored: dict[str, int] = {}                  # per set, examples with no text long enough to check

    def add(self, set_name: str, item_id: str, texts: Iterable[str]) -> None:
        self.sizes[set_name] = self.sizes.get(set_name, 0) + 1
        ref, checked = (set_name, item_id), False
        for text in texts:
            w = words(text)
            if len(w) >= self.n:
                for g in {tuple(w[i:i + self.n]) for i in range(len(w) - self.n + 1)}:
                    self.long[g].append(ref)
                checked = True
            elif len(w) >= self.min_words:
                self.short[(w[0], w[1])].append((tuple(w), set_name, item_id))
                checked = True
        if not checked:
            self.ignored[set_name] = self.ignored.get(set_name, 0) + 1

    def find(self, text: str) -> dict[tuple, str]:
        """(eval set, eval id) -> the first shared gram, for one training text."""
        w = words(text)
        hits: dict[tuple, str] = {}
        n = self.n
        for i in range(len(w)):
            if i + n <= len(w):
                refs = self.long.get(tuple(w[i:i + n]))
                if refs:
                    for ref in refs:
                        hits.setdefault(ref, " ".join(w[i:i + n]))
            cands = self.short.get(tuple(w[i:i + 2])) if i + 1 < len(w) else None
            if cands:
                for gram, set_name, item_id in cands:
                    if tuple(w[i:i + len(gram)]) == gram:
                        hits.setdefault((set_name, item_id), " ".join(gram))
        return hits

    def __len__(self) -> int:
        return sum(self.sizes.values())


def training_texts(row: dict) -> list[str]:
    if "messages" in row:  # a chat example: every turn, not only the last exchange
        return [t["content"] for t in row["messages"]]
    return [row["prompt"], row["completion"]]


def check(train: list[dict], index: EvalIndex, eval_sets: dict | None = None) -> dict:
    """Every training example that shares a gram with an evaluation example, and what it shares."""
    overlaps = []
    for row in train:
        hits: dict[tuple, str] = {}
        for text in training_texts(row):
            for ref, gram in index.find(text).items():
                hits.setdefault(ref, gram)
        for (set_name, item_id), gram in sorted(hits.items()):
            overlaps.append({"train_id": row["id"], "train_task": row.get("task"), "eval_set": set_name,
                             "eval_id": item_id, "gram": gram})
    per_set = {name: {"examples": size, "overlapping": len({o["eval_id"] for o in overlaps if o["eval_set"] == name}),
                      "not_checked": index.ignored.get(name, 0)}
               for name, size in index.sizes.items()}
    contaminated = sorted({o["train_id"] for o in overlaps})
    return {"n": index.n, "min_words": index.min_words, "method": HOW, "train_examples": len(train),
            "eval_sets": per_set, "eval_sources": eval_sets or {}, "contaminated_train": len(contaminated),
            "contaminated_train_ids": contaminated, "overlaps": overlaps, "dropped": []}


def drop(train: list[dict], report: dict) -> list[dict]:
    """The training examples without those that overlap; the report records what was dropped."""
    bad = set(report["contaminated_train_ids"])
    report["dropped"] = [r["id"] for r in train if r["id"] in bad]
    return [r for r in train if r["id"] not in bad]


def index_of(eval_sets: dict[str, list[tuple[str, list[str]]]], n: int, min_words: int) -> EvalIndex:
    index = EvalIndex(n, min_words)
    for name, items in eval_sets.items():
        for item_id, texts in items:
            index.add(name, item_id, texts)
    return index


def summary_line(report: dict) -> str:
    k, total = report["contaminated_train"], report["train_examples"]
    sets = [f"{name} ({s['overlapping']}/{s['examples']})" for name, s in report["eval_sets"].items() if s["overlapping"]]
    if not k:
        return (f"contamination: 0 of {total} training examples share a {report['n']}-gram with "
                f"{len(report['eval_sets'])} evaluation sets ({sum(s['examples'] for s in report['eval_sets'].values())} examples)")
    return (f"contamination: {k} of {total} training examples share a {report['n']}-gram (or a whole short text) with "
            f"evaluation examples: {', '.join(sets)}" + (f"; {len(report['dropped'])} dropped" if report["dropped"]
                                                           else "; not dropped (contamination.drop: true removes them)"))


def print_report(report: dict, show: int = 10, file=None) -> None:
    file = file or sys.stdout
    warn = report["contaminated_train"] > 0
    print(("WARNING: " if warn else "") + summary_line(report), file=file, flush=True)
    for o in report["overlaps"][:show]:
        print(f"  {o['train_id']} <-> {o['eval_set']} #{o['eval_id']}: \"{o['gram']}\"", file=file)
    if len(report["overlaps"]) > show:
        print(f"  ... {len(report['overlaps']) - show} more in contamination.json", file=file)


def evaluation_sets(examples: dict, data_cfg, evaluation: dict,
                    benchmarks: Optional[Sequence[ScoredRows]] = None) -> tuple[dict, dict]:
    """The run's evaluation sets as (id, raw texts), and where each came from.

    `evaluation`: {"split", "limit"} for the summarization evaluation and optionally
    {"benchmarks": {"suite", "task", "limit", "shots", "seed", "select", "scoring"}} for the forgetting suite,
    whose scored rows the caller computes and passes as `benchmarks` (`tunebench.pipeline.evaluation_benchmarks`).
    """
    from .examples import evaluation_texts

    if evaluation.get("benchmarks") and benchmarks is None:
        raise TypeError("evaluation_sets: evaluation names benchmarks, but their scored rows were not passed "
                        "(tunebench.pipeline.evaluation_benchmarks computes them)")
    sets, where = {}, {}
    split, limit = evaluation.get("split"), evaluation.get("limit")
    if split:
        rows = examples.get(split) or []
        name = f"{data_cfg.task}/{split}"
        if rows and "task" in rows[0]:  # a mixture's own validation slice: no raw record to go back to
            sets[name] = [(r["id"], [r["prompt"]] + r["references"]) for r in rows[:limit]]
        else:
            sets[name] = evaluation_texts(data_cfg, split, limit)
        where[name] = f"{data_cfg.path or data_cfg.dataset}: {split} split" + (f", first {limit}" if limit else "")
    for b in benchmarks or ():
        sets[b.name] = b.items
        where[b.name] = b.where
    return sets, where


def check_run(examples: dict, data_cfg, cfg, evaluation: dict, benchmarks: Optional[Sequence[ScoredRows]] = None) -> dict:
    """The check a recipe runs after `prepare`: the training split against every evaluation set
    (`benchmarks`: the scored rows of the benchmarks `evaluation` names, see `evaluation_sets`)."""
    sets, where = evaluation_sets(examples, data_cfg, evaluation, benchmarks)
    return check(examples["train"], index_of(sets, cfg.n, cfg.min_words), where)
