"""DialogSum as a chat dataset: OpenAI `messages` JSONL, one user turn and one assistant turn each.

    python examples/dialogsum_to_messages.py OUT_DIR [--limit 200]

Writes OUT_DIR/{train,dev,test}.jsonl from the data root's dialogsum folder. The user turn is the
dialogue under the `dialogsum` task's `summarize_conversation` phrasing, the assistant turn the
(first) human summary; test records keep all three human summaries as `references`, so a chat
copy is scored exactly as the task is. `tunebench prepare --dataset OUT_DIR` then reads it as
a messages dataset (README: Chat datasets).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunebench.data.templates import get_task
from tunebench.io.locations import data_root


def convert(out: Path, limit: int | None) -> dict[str, int]:
    template = get_task("dialogsum").template("summarize_conversation")
    counts = {}
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        rows = []
        with open(data_root() / "dialogsum" / f"dialogsum.{split}.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                summaries = [r[k] for k in ("summary", "summary1", "summary2", "summary3") if r.get(k)]
                row = {"id": r["fname"], "messages": [
                    {"role": "user", "content": template.render({"dialogue": r["dialogue"].strip()})},
                    {"role": "assistant", "content": summaries[0].strip()}]}
                if len(summaries) > 1:
                    row["references"] = [s.strip() for s in summaries]
                rows.append(row)
                if limit and len(rows) == limit:
                    break
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        counts[split] = len(rows)
    return counts


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--limit", type=int, help="first N dialogues of each split")
    a = p.parse_args()
    print(f"{a.out}: {convert(a.out, a.limit)}")
