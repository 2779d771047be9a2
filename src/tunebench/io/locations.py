"""Where the data is, found the same way by every command from any directory; and when a name means the Hub.

The data root (DialogSum, the benchmark registry, the template library's sources) is the first of:
`--data-root`, `$TUNEBENCH_DATA`, a recipe's `data_root` (relative to the recipe file), a
`shared/data` folder found walking up from the working directory, then from the recipe file. A
setting that names a missing folder is an error, not a reason to look further: the user meant it.

A dataset or model is fetched from the Hugging Face Hub only when its name is a Hub id (`org/name`)
that is not a local path: a missing local file is reported as missing, never tried on the Hub.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from ..errors import UserError

_FLAG: Optional[Path] = None
_RECIPE: Optional[tuple[Path, Optional[str], str]] = None   # (recipe file, its data_root value, where that is)

# suffixes of files a user names, never of a Hub repository ("Qwen/Qwen2.5-0.5B" has the suffix ".5B")
_FILE_SUFFIXES = {".jsonl", ".json", ".csv", ".tsv", ".parquet", ".yaml", ".yml", ".txt", ".gguf", ".safetensors",
                  ".bin", ".pt", ".pth"}


def configure(flag: Optional[str] = None) -> None:
    """The command line's `--data-root` (None: not given)."""
    global _FLAG
    _FLAG = Path(flag).expanduser() if flag else None


def use_recipe(recipe_file: Path | str, data_root: Optional[str], where: str = "") -> None:
    """A recipe's own `data_root` key, and the recipe file to search upward from."""
    global _RECIPE
    _RECIPE = (Path(recipe_file), data_root, where or f"{recipe_file}: data_root")


def reset() -> None:
    global _FLAG, _RECIPE
    _FLAG = _RECIPE = None


def find() -> tuple[Optional[Path], str]:
    """(data root or None, how it was found, or where it was looked for)."""
    if _FLAG is not None:
        return _explicit(_FLAG, "--data-root")
    env = os.environ.get("TUNEBENCH_DATA")
    if env:
        return _explicit(Path(env).expanduser(), "TUNEBENCH_DATA")
    if _RECIPE is not None and _RECIPE[1]:
        recipe_file, value, where = _RECIPE
        p = Path(value).expanduser()
        return _explicit(p if p.is_absolute() else recipe_file.parent / p, where)
    starts = [Path.cwd()]
    if _RECIPE is not None and _RECIPE[0].resolve().parent not in starts:
        starts.append(_RECIPE[0].resolve().parent)
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / "shared" / "data").is_dir():
                return folder / "shared" / "data", f"shared/data above {start}"
    return None, " and ".join(f"shared/data in {s} and every folder above it" for s in starts)


def _explicit(path: Path, setting: str) -> tuple[Path, str]:
    if not path.is_dir():
        raise UserError(f"{setting}: data root {path} is not a directory")
    return path, setting


def data_root() -> Path:
    root, how = find()
    if root is None:
        raise UserError(f"no data root: looked for {how}; point at the data with --data-root DIR, "
                        "TUNEBENCH_DATA=DIR or a recipe's data_root")
    return root


def describe() -> str:
    """One line for a plan: where the data root is and how it was found."""
    try:
        root, how = find()
    except UserError as e:
        return str(e)
    return f"{root} (from {how})" if root is not None else f"not found (looked for {how})"


def is_hub_id(name: str) -> bool:
    """`org/name` that is not a local path and does not name a file."""
    return (re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None
            and Path(name).suffix.lower() not in _FILE_SUFFIXES and not Path(name).exists())


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
