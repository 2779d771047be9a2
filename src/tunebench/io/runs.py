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

from ..errors import UserError
from .layout import MANIFEST, Manifest


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write via a temporary file in the same directory, then rename: a reader never sees half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def inside(root: Path | str, name: str) -> Path:
    """root/name, refusing any name (a task name, an id) that would land outside root, through
    '..', an absolute path or a symlink."""
    root = Path(root)
    path = root / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{path}: resolves outside the run directory {root}; refusing to write there")
    return path


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

    from .. import __version__
    from .memory import allocator

    env = {
        "tunebench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "allocator": allocator(),
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


def is_main_process() -> bool:
    """False in the second and later processes of a torchrun / accelerate launch."""
    return int(os.environ.get("RANK", "0")) == 0


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
        self.created = [p for p in (self.out, *self.out.parents) if not p.exists()]
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{self.out}: cannot create output directory ({e.strerror})") from None
        if not os.access(self.out, os.W_OK):
            raise UserError(f"{self.out}: output directory is not writable")
        self.t0 = time.time()
        from .memory import PeakMemory

        self.peak = PeakMemory(f"{self.stage} stage")  # this stage's own peak, not the process's so far
        return self

    def __exit__(self, exc_type, exc, tb):
        self.peak.close()
        if exc_type is None and is_main_process():
            manifest: Manifest = {
                "stage": self.stage,
                "status": "complete",
                "config": self.config,
                "seed": _find_seed(self.config),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.t0)),
                "wall_time_s": round(time.time() - self.t0, 2),
                "command": sys.argv,
                "environment": environment(),
                "memory": self.peak.figures(),
                **self.extra,
            }
            write_json(self.out / MANIFEST, manifest)
        elif exc_type is not None:
            # a stage refused at the start leaves nothing behind: no empty directories it made
            for p in self.created:
                try:
                    p.rmdir()
                except OSError:
                    break
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


class Journal:
    """Per-example results appended as they are computed, so a killed run loses at most a batch.

    Line 1 is a header saying what the rows were computed with; every further line is one
    finished result with a unique "key". Reopening with the same header hands back what is done.
    A journal written with another header is set aside under a new name, never mixed in. A last
    line cut off by a kill (no newline, or half a JSON object) is dropped and the file truncated
    to its last whole line; a bad line anywhere else is not a kill's doing and is an error.
    """

    def __init__(self, path: Path | str, header: dict):
        self.path = Path(path)
        self.header = json.loads(json.dumps(header, default=str))
        self.done: dict[str, dict] = {}
        self.repaired = False
        self.set_aside: Path | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            self._load()
        if not self.path.is_file():
            self._append_line({"journal": self.header})

    def _load(self) -> None:
        raw = self.path.read_bytes()
        keep = raw[: raw.rfind(b"\n") + 1]  # bytes after the last newline: a write cut short
        lines = keep.decode("utf-8", errors="replace").split("\n")[:-1]  # not splitlines: U+2028 may be in text
        rows = []
        for i, line in enumerate(lines, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines):
                    raise UserError(f"{self.path}:{i}: corrupt result line (not the torn end of an interrupted "
                                    f"write); move the file away to compute this part again") from None
                keep = keep[: len(keep) - len(line.encode("utf-8")) - 1]
        if len(keep) != len(raw):
            self.repaired = True
            with self.path.open("r+b") as f:
                f.truncate(len(keep))
        if not rows or rows[0].get("journal") != self.header:
            self.set_aside = self.path.with_name(self.path.name + f".stale-{int(time.time())}")
            os.replace(self.path, self.set_aside)
            return
        for i, row in enumerate(rows[1:], 2):
            if not isinstance(row, dict) or "key" not in row or row["key"] in self.done:
                raise UserError(f"{self.path}:{i}: result line without a unique 'key'; move the file away to "
                                f"compute this part again")
            self.done[row["key"]] = row

    def _append_line(self, row: dict) -> None:
        self.append([row], record=False)

    def append(self, rows: list[dict], record: bool = True) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if record:
            self.done.update((r["key"], r) for r in rows)

    def note(self) -> str | None:
        """What reopening found, for the user; None for a fresh start."""
        parts = []
        if self.set_aside:
            parts.append(f"results of a run with other settings set aside as {self.set_aside.name}")
        if self.done:
            parts.append(f"{len(self.done)} results kept from an interrupted run")
        if self.repaired:
            parts.append("a last line cut off mid-write was dropped")
        return f"{self.path}: " + "; ".join(parts) if parts else None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
