"""What a run reports as it goes: log.jsonl's rows, and TensorBoard / MLflow / W&B."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..errors import UserError
from ..io.runs import atomic_write_text


class Trackers:
    """TensorBoard by default; MLflow and Weights & Biases when asked for and installed."""

    def __init__(self, names: list[str], out: Path, config: dict, enabled: bool):
        self.tb = self.mlflow = self.wandb = None
        if not enabled:
            return
        names = [n for n in names if n != "none"]
        for n in names:
            try:
                if n == "tensorboard":
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(log_dir=str(out / "tensorboard"))
                elif n == "mlflow":
                    import mlflow

                    self.mlflow = mlflow
                    mlflow.start_run(run_name=out.name)
                    mlflow.log_params({k: str(v) for k, v in config.items()})
                elif n == "wandb":
                    import wandb

                    self.wandb = wandb.init(project="tunebench", name=out.name, config=config, dir=str(out))
            except ImportError:
                raise UserError(f"train.report_to: '{n}' is not installed (pip install {n})") from None

    def log(self, row: dict) -> None:
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and v is not None}
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}" if k != "val_loss" else "validation/loss", v, row["step"])
        if self.mlflow:
            self.mlflow.log_metrics(scalars, step=row["step"])
        if self.wandb:
            self.wandb.log(scalars, step=row["step"])

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.mlflow:
            self.mlflow.end_run()
        if self.wandb:
            self.wandb.finish()


def log_row(step: int, steps_per_epoch: int, step_loss: float, grad_norm, lr: float, step_tokens: int,
            tokens_seen: int, world: int, t_start: float, device: torch.device) -> dict:
    """One optimizer step's row of log.jsonl (validation adds val_loss to it)."""
    elapsed = time.time() - t_start
    row = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": round(step_loss, 6),
           "lr": lr, "grad_norm": round(float(grad_norm), 4),
           "tokens_per_s": round(tokens_seen * world / max(elapsed, 1e-9), 1),
           # per-step figures let a benchmark leave out warm-up steps
           "tokens": step_tokens * world, "time_s": round(elapsed, 4)}
    if device.type == "cuda":
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def write_log(out: Path, log: list[dict]) -> None:
    atomic_write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log))


def read_log(out: Path, upto: int) -> list[dict]:
    """The rows of log.jsonl up to step `upto` (a resumed run drops those after its checkpoint)."""
    log_path = out / "log.jsonl"
    if log_path.is_file():
        return [r for r in map(json.loads, log_path.read_text().splitlines()) if r["step"] <= upto]
    return []
