"""Run directories: atomic writes and the manifest that says how a result was made."""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError

MANIFEST = "run.json"


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write via a temporary file in the same directory, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path | str, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: Path | str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def read_jsonl(path: Path | str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return rows


def environment() -> dict:
    """Versions and hardware, so that a number can be traced to what produced it."""
    import torch
    import transformers

    from . import __version__

    env = {
        "tunebench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import peft

        env["peft"] = peft.__version__
    except ImportError:
        pass
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class Stage:
    """Context manager for one stage writing into a run directory.

    On entry it checks the directory is writable; on success it writes `run.json` with the
    stage's config, environment and wall time, marked complete. A stage that fails leaves any
    earlier complete manifest untouched.
    """

    def __init__(self, out: Path | str, stage: str, config: dict):
        self.out = Path(out)
        self.stage = stage
        self.config = config
        self.extra: dict = {}

    def __enter__(self) -> "Stage":
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{self.out}: cannot create output directory ({e.strerror})") from None
        if not os.access(self.out, os.W_OK):
            raise UserError(f"{self.out}: output directory is not writable")
        self.t0 = time.time()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            write_json(
                self.out / MANIFEST,
                {
                    "stage": self.stage,
                    "status": "complete",
                    "config": self.config,
                    "seed": _find_seed(self.config),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.t0)),
                    "wall_time_s": round(time.time() - self.t0, 2),
                    "command": sys.argv,
                    "environment": environment(),
                    **self.extra,
                },
            )
        return False


def _find_seed(config: dict):
    """The seed a stage ran with, wherever its config keeps it."""
    if "seed" in config:
        return config["seed"]
    for v in config.values():
        if isinstance(v, dict) and "seed" in v:
            return v["seed"]
    return None


def completed(out: Path | str, config: dict) -> bool:
    """True when `out` holds a finished stage made with exactly this config (lets `run` resume)."""
    p = Path(out) / MANIFEST
    if not p.is_file():
        return False
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError:
        return False
    return m.get("status") == "complete" and m.get("config") == json.loads(json.dumps(config, default=str))
