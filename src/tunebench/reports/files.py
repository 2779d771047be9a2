"""The files a report writes: STEM.json (the report's data) and STEM.md (its markdown), side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..io.runs import atomic_write_text, write_json


def write_md_json(c: dict, out_dir: Path | str, stem: str, markdown: Callable[[dict], str]) -> tuple[Path, Path]:
    """STEM.json (`c`) and STEM.md (`markdown(c)`) in OUT_DIR, each written atomically, JSON first;
    returns (md path, json path). compare.json/md, comparison.json/md and forgetting.json/md."""
    out_dir = Path(out_dir)
    write_json(out_dir / f"{stem}.json", c)
    atomic_write_text(out_dir / f"{stem}.md", markdown(c))
    return out_dir / f"{stem}.md", out_dir / f"{stem}.json"
