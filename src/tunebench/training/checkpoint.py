"""Checkpoints that hold everything resume needs, resume itself, and the final save."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from torch import nn

from .. import models
from ..config import ModelConfig, TrainConfig
from ..errors import UserError
from ..io import processes
from ..io.layout import checkpoint_dir, checkpoints
from ..io.runs import atomic_write_text, write_json
from . import sharding
from .model import quiet_peft_deprecation, unwrap, unwrap_trainable
from .trackers import read_log

SHARDED = "sharded"  # a checkpoint's torch.distributed.checkpoint folder under FSDP


def _rng_file(rank: int) -> str:
    # each process draws its own dropout masks: each keeps its own generator state
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def save_checkpoint(out: Path, step: int, model: nn.Module, optimizer, scheduler, state: dict, keep: int) -> Path:
    """Everything resume needs, written under a temporary name and renamed when complete. Every
    process calls it: each writes its random state, and under FSDP its shards
    (torch.distributed.checkpoint); the first process writes the rest and renames."""
    from safetensors.torch import save_file

    procs = processes.current()
    rank = procs.rank
    final = checkpoint_dir(out, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    procs.barrier()
    if sharding.is_sharded(model):
        sharding.save(tmp / SHARDED, model, optimizer)
    elif rank == 0:
        trainable = {n: p.detach().contiguous().cpu() for n, p in unwrap_trainable(model)}
        save_file(trainable, tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / _rng_file(rank))
    procs.barrier()
    if rank == 0:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2))  # written last: marks the checkpoint whole
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_state(step: int, steps_per_epoch: int, best_val: float | None, cfg: TrainConfig,
                     global_batch: int, examples: int) -> dict:
    """state.json: where the run stands. Data position: the batch order is a pure function of
    (seed, epoch), so the next batch is fixed by the step; both are written down to make that checkable."""
    e, b = divmod(step, steps_per_epoch)
    return {"step": step, "epoch": step / steps_per_epoch, "best_val_loss": best_val,
            "data_position": {"epoch": e, "next_batch": b * cfg.grad_accum, "seed": cfg.seed,
                              "global_batch": global_batch, "examples": examples}}


def check_free_space(out: Path, need: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if free < need * 1.1 + 2**20:
        last = checkpoints(out)
        raise UserError(f"{out}: {free / 2**20:.0f} MB free on disk, a checkpoint needs about {need / 2**20:.0f} MB"
                        + (f"; last good checkpoint: {last[-1]}" if last else ""))


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> dict:
    from safetensors.torch import load_file

    written_sharded, sharded = (path / SHARDED).is_dir(), sharding.is_sharded(model)
    if written_sharded != sharded:
        raise UserError(f"{path}: written {'with' if written_sharded else 'without'} FSDP; resume it "
                        f"{'with' if written_sharded else 'without'} FSDP (the launcher of the interrupted run)")
    if sharded:
        sharding.load(path / SHARDED, model, optimizer)
    else:
        params = dict(unwrap_trainable(model))
        saved = load_file(path / "trainable.safetensors")
        if set(saved) != set(params):
            raise UserError(f"{path}: checkpoint does not match this model/method (different trainable parameters)")
        with torch.no_grad():
            for n, t in saved.items():
                params[n].copy_(t)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    own = path / _rng_file(processes.current().rank)
    rng = torch.load(own if own.is_file() else path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    random.setstate(_as_tuple(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / "state.json").read_text())


def _as_tuple(x):
    return tuple(_as_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def resume_run(out: Path, resume: bool, loss_fn, optimizer, scheduler, position: dict,
               main: bool) -> tuple[int, float | None, list[dict]]:
    """(step, best validation loss, log rows) to continue from: the last checkpoint's with --resume,
    a fresh start otherwise. `position` holds this run's global_batch, examples and seed: a
    checkpoint written with others is refused, as is starting over a directory that holds one."""
    step, best_val, log = 0, None, []
    if resume:
        ckpts = checkpoints(out)
        if ckpts:
            state = load_checkpoint(ckpts[-1], loss_fn, optimizer, scheduler)
            step, best_val = state["step"], state.get("best_val_loss")
            pos = state.get("data_position", {})
            for key, now in position.items():
                if key in pos and pos[key] != now:
                    raise UserError(f"{ckpts[-1]}/state.json: data_position.{key} is {pos[key]}, this run has {now}; "
                                    f"resume with the settings and data of the interrupted run")
            log = read_log(out, step)
            if main:
                print(f"resumed from {ckpts[-1]} (step {step})")
    elif checkpoints(out):
        raise UserError(f"{out}: holds checkpoints of an earlier run; pass --resume to continue it, or choose another --out")
    return step, best_val, log


def _diverged(out: Path, what: str, value: float, step: int):
    last = checkpoints(out)
    raise UserError(f"training diverged: {what} is {value} at step {step}; "
                    + (f"last good checkpoint: {last[-1]}" if last else "no checkpoint yet") + " (lower train.lr?)")


def save_final(out: Path, model: nn.Module, resolved: models.ResolvedModel, tok, cfg: TrainConfig, model_cfg: ModelConfig) -> None:
    """The adapter (LoRA), a merged or full model that plain transformers loads, and how to find them."""
    base_name = resolved.base_name or resolved.path
    info = {"base_model": base_name, "method": cfg.method, "adapter": None, "merged": None, "model": None}
    if cfg.method == "lora":
        adapter = out / "adapter"
        model.save_pretrained(adapter, safe_serialization=True)
        acfg = json.loads((adapter / "adapter_config.json").read_text())
        acfg["base_model_name_or_path"] = base_name
        atomic_write_text(adapter / "adapter_config.json", json.dumps(acfg, indent=2))
        info["adapter"] = "adapter"
        if cfg.merge:
            # Merge into a fresh fp32 copy: merging into bf16 training weights would round them.
            with quiet_peft_deprecation():
                base = models.load_model(models.ResolvedModel(resolved.path, adapter=str(adapter)), torch.float32,
                                         model_cfg.trust_remote_code, merge_adapter=True)
            _save_model(base, tok, out / "merged")
            info["merged"] = "merged"
    else:
        m = unwrap(model).to(torch.float32)
        _save_model(m, tok, out / "model")
        info["model"] = "model"
    write_json(out / models.RUN_MODEL_FILE, info)


def _save_model(model, tok, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
