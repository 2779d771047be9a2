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


def add_device_arg(ap) -> None:
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where every tool runs (cuda: the same workload on a GPU, figures reported beside the CPU ones)")


def pin_device(device: str) -> None:
    """On 'cpu', hide any GPU from this process and its children, so that every tool (tunebench's
    accelerate included, which would otherwise pick the GPU) runs where the figures say."""
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def gpu_peak_mb() -> float | None:
    """This process's peak GPU memory (PyTorch's allocator), or None without a GPU."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
