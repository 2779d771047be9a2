"""Fine-tuning: full or LoRA, decoder-only or encoder-decoder, loss on completion tokens only.

The loop reads top to bottom: set up, then per optimizer step gather the micro-batches, count
their target tokens, forward/backward, clip, step, log; validation every epoch; checkpoints
that hold everything resume needs. accelerate supplies device placement and data parallelism.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import models
from ..config import ModelConfig, TrainConfig
from ..data.examples import load_prepared
from ..errors import UserError
from ..io.memory import release_free_memory, rss_mb
from ..io.runs import atomic_write_text, write_json
from ..models import kernels
from ..models.batching import (
    IGNORE,
    Formatter,
    collate,
    encode_all,
    sorted_batches,
    target_tokens,
    train_batches,
)

# peft still asks transformers for the deprecated name; the message is noise for our users.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)



def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under any DDP / peft wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class CompletionLoss(nn.Module):
    """Summed token cross-entropy over completion tokens (normalised by the caller)."""

    def __init__(self, model: nn.Module, seq2seq: bool):
        super().__init__()
        self.model = model
        self.seq2seq = seq2seq
        lm = unwrap(model)
        # Project only completion positions onto the vocabulary: 49k x 576 per token for SmolLM2 is
        # about a fifth of the model's matmuls, and no batch x length x vocab logits tensor.
        self.fast = (not seq2seq) and lm.config.model_type in models.HEAD_OF_HIDDEN

    def forward(self, input_ids, attention_mask, labels):
        lm = unwrap(self.model)
        if self.seq2seq:
            dec = lm.prepare_decoder_input_ids_from_labels(labels=labels)
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=dec).logits
            return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
        # No attention mask for a decoder: batches are right-padded, so causal attention alone keeps
        # every real token from seeing padding, and padded positions carry no loss. Without a mask
        # the attention kernels take their causal fast path.
        targets = labels[:, 1:]
        keep = targets != IGNORE
        if self.fast:
            body = getattr(lm, lm.base_model_prefix)
            hidden = body(input_ids=input_ids).last_hidden_state
            logits = lm.get_output_embeddings()(hidden[:, :-1][keep])
            return F.cross_entropy(logits.float(), targets[keep], reduction="sum")
        logits = self.model(input_ids=input_ids).logits[:, :-1]
        return F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")


def build_model(resolved: models.ResolvedModel, cfg: TrainConfig, dtype: torch.dtype, trust_remote_code: bool):
    """A fresh copy of the base model, made trainable (never the one a caller holds)."""
    if cfg.method == "full":
        model = models.load_model(resolved, torch.float32, trust_remote_code)
        return model
    from peft import LoraConfig, get_peft_model

    # Frozen base weights stay in the compute dtype: no cast of the whole model on every step.
    model = models.load_model(resolved, dtype, trust_remote_code)
    targets = "all-linear" if cfg.lora_targets == "all-linear" else [t.strip() for t in cfg.lora_targets.split(",")]
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                      task_type="SEQ_2_SEQ_LM" if model.config.is_encoder_decoder else "CAUSAL_LM")
    try:
        model = get_peft_model(model, lcfg)
    except ValueError as e:
        raise UserError(f"train.lora_targets: {e}") from None
    kernels.fuse_lora(model)
    return model


def evaluate_loss(loss_fn: CompletionLoss, encoded: list[dict], pad_id: int, batch_size: int, device, dtype,
                  rank: int = 0, world: int = 1) -> tuple[float, int]:
    """Summed cross-entropy and target-token count over this rank's share of the batches."""
    total, count = 0.0, 0
    was_training = loss_fn.training
    loss_fn.eval()
    with torch.no_grad():
        for idx in sorted_batches([len(e["input_ids"]) for e in encoded], batch_size)[rank::world]:
            batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad_id, loss_fn.seq2seq).items()}
            with _autocast(device, dtype):
                total += float(loss_fn(**batch))
            count += target_tokens(batch, loss_fn.seq2seq)
    loss_fn.train(was_training)
    return total, count


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


# ---------------------------------------------------------------------------- checkpoints

def _checkpoints(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return sorted((p for p in d.glob("step-*") if (p / "state.json").is_file()), key=lambda p: p.name) if d.is_dir() else []


def save_checkpoint(out: Path, step: int, model: nn.Module, optimizer, scheduler, state: dict, keep: int) -> Path:
    """Everything resume needs, written under a temporary name and renamed when complete."""
    from safetensors.torch import save_file

    final = out / "checkpoints" / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().contiguous().cpu() for n, p in unwrap_trainable(model)}
    save_file(trainable, tmp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))  # written last: marks the checkpoint whole
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in _checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def check_free_space(out: Path, need: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if free < need * 1.1 + 2**20:
        last = _checkpoints(out)
        raise UserError(f"{out}: {free / 2**20:.0f} MB free on disk, a checkpoint needs about {need / 2**20:.0f} MB"
                        + (f"; last good checkpoint: {last[-1]}" if last else ""))


def unwrap_trainable(model: nn.Module):
    return [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> dict:
    from safetensors.torch import load_file

    params = dict(unwrap_trainable(model))
    saved = load_file(path / "trainable.safetensors")
    if set(saved) != set(params):
        raise UserError(f"{path}: checkpoint does not match this model/method (different trainable parameters)")
    with torch.no_grad():
        for n, t in saved.items():
            params[n].copy_(t)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    random.setstate(_as_tuple(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / "state.json").read_text())


def _as_tuple(x):
    return tuple(_as_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


# ---------------------------------------------------------------------------- trackers

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


# ---------------------------------------------------------------------------- the loop

def train(model_cfg: ModelConfig, cfg: TrainConfig, data_dir: Path | str, out: Path | str, resume: bool = False) -> dict:
    from accelerate import Accelerator
    from transformers import get_scheduler

    out = Path(out)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device, main = accelerator.device, accelerator.is_main_process
    world = accelerator.num_processes
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    # cheap checks of the user's input first: a typo in a path should not wait for a model to load
    train_ex = load_prepared(data_dir, "train")
    val_path = Path(data_dir) / "validation.jsonl"
    val_ex = load_prepared(data_dir, "validation") if val_path.is_file() else []

    resolved = models.resolve(model_cfg.model)
    tok = models.load_tokenizer(resolved.path, model_cfg.trust_remote_code)
    seq2seq = models.is_encoder_decoder(resolved.path, model_cfg.trust_remote_code)
    fmt = Formatter.for_model(tok, seq2seq, model_cfg.chat_template)
    dtype = models.pick_dtype(cfg.precision, device)
    if seq2seq and dtype == torch.float16:
        raise UserError("T5/BART train in fp32 or bf16 only (fp16 overflows to NaN)")
    train_enc, skipped = encode_all(fmt, train_ex, cfg.max_length, cfg.overlong, f"{data_dir}/train.jsonl")
    val_enc, val_skipped = encode_all(fmt, val_ex, cfg.max_length, "skip", f"{data_dir}/validation.jsonl") if val_ex else ([], 0)
    lengths = [len(e["input_ids"]) for e in train_enc]

    model = build_model(resolved, cfg, dtype, model_cfg.trust_remote_code)
    attn_before = kernels.use_causal_attention(model) if device.type == "cpu" and not seq2seq else None
    if device.type == "cpu" and not seq2seq:
        kernels.fuse_swiglu(model)
        kernels.fuse_rmsnorm(model)
    loss_fn = CompletionLoss(model, seq2seq)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable, n_total = sum(p.numel() for p in params), sum(p.numel() for p in model.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, foreach=True)
    global_batch = cfg.batch_size * world
    micro_per_epoch = math.ceil(len(train_enc) / global_batch)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    scheduler = get_scheduler(cfg.schedule, optimizer, num_warmup_steps=round(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    loss_fn, optimizer = accelerator.prepare(loss_fn, optimizer)

    step, best_val, log = 0, None, []
    log_path = out / "log.jsonl"
    if resume:
        ckpts = _checkpoints(out)
        if ckpts:
            state = load_checkpoint(ckpts[-1], loss_fn, optimizer, scheduler)
            step, best_val = state["step"], state.get("best_val_loss")
            pos = state.get("data_position", {})
            for key, now in (("global_batch", global_batch), ("examples", len(train_enc)), ("seed", cfg.seed)):
                if key in pos and pos[key] != now:
                    raise UserError(f"{ckpts[-1]}/state.json: data_position.{key} is {pos[key]}, this run has {now}; "
                                    f"resume with the settings and data of the interrupted run")
            if log_path.is_file():
                log = [r for r in map(json.loads, log_path.read_text().splitlines()) if r["step"] <= step]
            if main:
                print(f"resumed from {ckpts[-1]} (step {step})")
    elif _checkpoints(out):
        raise UserError(f"{out}: holds checkpoints of an earlier run; pass --resume to continue it, or choose another --out")

    def run_validation() -> float | None:
        nonlocal best_val
        if not val_enc:
            return None
        release_free_memory()  # the training step's free pages, before a pass at twice its batch size
        # the plain module, not DDP's wrapper: no gradient sync to take part in, each rank its share
        total, count = evaluate_loss(getattr(loss_fn, "module", loss_fn), val_enc, tok.pad_token_id, cfg.batch_size * 2,
                                     device, dtype, accelerator.process_index, world)
        if world > 1:
            total, count = accelerator.reduce(torch.tensor([total, float(count)], dtype=torch.float64, device=device),
                                         "sum").tolist()
        v = total / max(count, 1)
        best_val = v if best_val is None else min(best_val, v)
        return v

    # weights + two AdamW moments, in fp32: refuse now rather than fail at the first save
    ckpt_bytes = 3 * 4 * n_trainable
    if main:
        check_free_space(out, ckpt_bytes)
    trackers = Trackers(cfg.report_to, out, cfg.model_dump(), enabled=main)
    t_start, tokens_seen, high_water, ceiling = time.time(), 0, 0, None
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not main, dynamic_ncols=True)
    loss_fn.train()
    while step < total_steps:
        epoch, pos = divmod(step, steps_per_epoch)
        batches = train_batches(lengths, global_batch, cfg.seed, epoch, cfg.group_by_length)
        micro = batches[pos * cfg.grad_accum:(pos + 1) * cfg.grad_accum]
        # This rank's slice of each global micro-batch. A last batch smaller than the number of
        # processes leaves a rank empty-handed: it still runs one example with weight 0, because
        # DDP needs every rank in every backward.
        rank_micro = [(b[accelerator.process_index::world] or b[:1], bool(b[accelerator.process_index::world]))
                      for b in micro]
        collated = [(collate([train_enc[i] for i in b], tok.pad_token_id, seq2seq), real) for b, real in rank_micro]
        n_local = sum(target_tokens(b, seq2seq) for b, real in collated if real)
        new_high = False
        if device.type == "cpu":
            padded = sum(b["input_ids"].numel() for b, _ in collated)
            if padded > 0.9 * high_water:
                # the biggest steps set the peak: start them from a trimmed heap (trimming every
                # step would cost each step its page faults, a sixth of the step time)
                new_high = padded > high_water
                high_water = max(high_water, padded)
                release_free_memory()
            elif ceiling and (rss_mb() or 0) > 1.1 * ceiling:
                # free pages kept from steps of other shapes have grown past what the biggest
                # step needed: hand them back (this step pays the page faults)
                release_free_memory()
        n_global = int(accelerator.reduce(torch.tensor(n_local, device=device), "sum")) if world > 1 else n_local
        step_loss, step_tokens = 0.0, 0
        for k, (batch, real) in enumerate(collated):
            batch = {key: v.to(device) for key, v in batch.items()}
            sync = k == len(collated) - 1
            with (accelerator.no_sync(loss_fn) if not sync and world > 1 else nullcontext()):
                with _autocast(device, dtype):
                    loss_sum = loss_fn(**batch) * (1.0 if real else 0.0)
                # Normalise by target tokens of the whole accumulated, all-process batch, so
                # that 4 x 2 equals 8 x 1; DDP averages gradients, hence the x world.
                accelerator.backward(loss_sum * world / n_global)
            step_loss += float(loss_sum.detach())
            step_tokens += int(batch["attention_mask"].sum()) if real else 0
        tokens_seen += step_tokens
        if new_high:  # what the biggest step left resident: the allocator keeps its pages for the next ones
            ceiling = rss_mb()
        if world > 1:
            step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=device), "sum"))
        step_loss /= n_global
        if not math.isfinite(step_loss):
            _diverged(out, "loss", step_loss, step + 1)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        # A finite loss can still give non-finite gradients (weights so large that a norm layer's
        # square overflows): stepping on them would turn the weights into NaN, and the checkpoint
        # written after this step with them. Stop before the step: the last checkpoint stays good.
        if not math.isfinite(float(grad_norm)):
            _diverged(out, "gradient norm", float(grad_norm), step + 1)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        elapsed = time.time() - t_start
        row = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": round(step_loss, 6),
               "lr": scheduler.get_last_lr()[0], "grad_norm": round(float(grad_norm), 4),
               "tokens_per_s": round(tokens_seen * world / max(elapsed, 1e-9), 1),
               # per-step figures let a benchmark leave out warm-up steps
               "tokens": step_tokens * world, "time_s": round(elapsed, 4)}
        if device.type == "cuda":
            row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
        if end_of_epoch or (cfg.eval_every and step % cfg.eval_every == 0):
            row["val_loss"] = run_validation()
        log.append(row)
        trackers.log(row)
        bar.set_postfix(loss=f"{step_loss:.3f}", **({"val": f"{row['val_loss']:.3f}"} if row.get("val_loss") else {}),
                        tok_s=f"{row['tokens_per_s']:.0f}")
        bar.update(1)
        if main:
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in log))
            if step % cfg.save_every == 0 or step == total_steps:
                check_free_space(out, ckpt_bytes)
                # data position: the batch order is a pure function of (seed, epoch), so the next
                # batch is fixed by the step; both are written down to make that checkable
                e, b = divmod(step, steps_per_epoch)
                save_checkpoint(out, step, loss_fn, optimizer, scheduler,
                                {"step": step, "epoch": step / steps_per_epoch, "best_val_loss": best_val,
                                 "data_position": {"epoch": e, "next_batch": b * cfg.grad_accum, "seed": cfg.seed,
                                                   "global_batch": global_batch, "examples": len(train_enc)}},
                                cfg.keep_checkpoints)
        accelerator.wait_for_everyone()
    bar.close()
    trackers.close()

    summary = {
        "steps": step, "train_examples": len(train_enc), "skipped_overlong": skipped,
        "validation_examples": len(val_enc), "validation_skipped_overlong": val_skipped,
        "trainable_parameters": n_trainable, "total_parameters": n_total, "precision": str(dtype).replace("torch.", ""),
        "final_loss": log[-1]["loss"] if log else None, "final_val_loss": next((r["val_loss"] for r in reversed(log) if r.get("val_loss") is not None), None),
        "best_val_loss": best_val, "train_wall_s": round(time.time() - t_start, 1),
        "tokens_per_s": log[-1]["tokens_per_s"] if log else None, "processes": world,
    }
    if attn_before:
        unwrap(unwrap_model(loss_fn)).set_attn_implementation(attn_before)
    optimizer.state.clear()
    release_free_memory()  # the merge below loads a second, fp32 copy of the base model
    if main:
        save_final(out, unwrap_model(loss_fn), resolved, tok, cfg, model_cfg)
    accelerator.wait_for_everyone()
    return summary


def _diverged(out: Path, what: str, value: float, step: int):
    last = _checkpoints(out)
    raise UserError(f"training diverged: {what} is {value} at step {step}; "
                    + (f"last good checkpoint: {last[-1]}" if last else "no checkpoint yet") + " (lower train.lr?)")


def unwrap_model(loss_fn) -> nn.Module:
    return getattr(loss_fn, "module", loss_fn).model


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
