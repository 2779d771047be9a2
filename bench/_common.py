"""What the bench scripts share: offline settings and running each tool in a process of its own."""
from __future__ import annotations

import os
import subprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_child(cmd: list[str]) -> float:
    """Run one tool's worker process; its own peak RSS in MB (not the parent's, not another tool's)."""
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"worker failed ({code}): {' '.join(cmd)}")
    return usage.ru_maxrss / 1024
