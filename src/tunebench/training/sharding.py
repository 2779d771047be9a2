"""FSDP2: parameters, gradients and optimizer state sharded over the processes, and the state dicts
that checkpoints and the final save need from a sharded model.

The launcher asks for it: `accelerate launch --config_file examples/accelerate/fsdp.yaml` sets
ACCELERATE_USE_FSDP, FSDP_VERSION and the wrap settings in the environment (torchrun users set
them by hand). tunebench applies `torch.distributed.fsdp.fully_shard` itself instead of passing
the model to `accelerator.prepare`, because accelerate only shards on GPUs: on CPU (gloo) it
falls back to DDP without a word. One code path on both, and the one the CPU tests run.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError


def requested() -> bool:
    """Whether the launcher asked for FSDP. FSDP1 and DeepSpeed are refused rather than run as
    something else: tunebench's checkpoints and final save know FSDP2's shards, not theirs."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise UserError("DeepSpeed: not supported by tunebench (never run here, and its checkpoints would not "
                        "gather ZeRO-3's partitions); use examples/accelerate/fsdp.yaml (FSDP2) or multi_gpu.yaml (DDP)")
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise UserError(f"FSDP_VERSION={version}: tunebench shards with FSDP2 only; "
                        f"set fsdp_version: 2 in the accelerate config (examples/accelerate/fsdp.yaml)")
    return True


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def _wrap_classes(model: nn.Module) -> set[str]:
    """The layer classes that become their own FSDP unit: the launcher's list, else the model's
    `_no_split_modules` (its decoder layers), which is what accelerate's transformer policy uses."""
    named = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    classes = {c.strip() for c in named.split(",") if c.strip()}
    if not classes:
        for m in model.modules():
            classes.update(getattr(m, "_no_split_modules", None) or ())
    present = {type(m).__name__ for m in model.modules()}
    missing = classes - present
    if missing or not classes:
        raise UserError(f"fsdp_transformer_layer_cls_to_wrap: {', '.join(sorted(missing)) or '(none)'} is not a layer "
                        f"of this model; its layer classes include {', '.join(sorted(c for c in present if 'Layer' in c)[:5])}")
    return classes


def shard(loss_fn: nn.Module, device: torch.device, world: int) -> int:
    """Shard each decoder layer, then the rest (embeddings, final norm, head) at the root, in place.
    The number of layer units."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    kw = {"mesh": mesh,
          "reshard_after_forward": os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true"}
    if os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
        kw["offload_policy"] = CPUOffloadPolicy()
    classes = _wrap_classes(loss_fn)
    # no loss_fn.to(device) first: fully_shard moves each unit's weights to the mesh's device and
    # keeps only its shard there, so a GPU never holds more of the whole model than one layer
    units = [m for m in loss_fn.modules() if type(m).__name__ in classes]
    for m in units:
        fully_shard(m, **kw)
    fully_shard(loss_fn, **kw)
    return len(units)


def _options(full: bool, strict: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # frozen weights are the base model's, on disk already: a checkpoint holds what training changes
    return StateDictOptions(full_state_dict=full, cpu_offload=full, ignore_frozen_params=True, strict=strict)


def save(path: Path, loss_fn: nn.Module, optimizer) -> None:
    """Model and optimizer shards, each process writing its own, through torch.distributed.checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(loss_fn, optimizer, options=_options(False))
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)


def load(path: Path, loss_fn: nn.Module, optimizer) -> None:
    """The shards written by `save`, resharded onto this run's processes by torch.distributed.checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(loss_fn, optimizer, options=_options(False))
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    # not strict: the frozen weights are left out on purpose (dcp.load has already refused a
    # checkpoint that lacks any trainable one)
    set_state_dict(loss_fn, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_options(False, strict=False))


def full_trainable(loss_fn: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters gathered whole onto the first process (empty on the others),
    named as in the unsharded loss module. Every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(loss_fn, options=_options(True))
