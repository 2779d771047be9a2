"""The loop, top to bottom: set up, resume, then per optimizer step gather the micro-batches,
count their target tokens, forward/backward, clip, step, log; validate; checkpoint; finish."""
from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import models
from ..config import ModelConfig, TrainConfig
from ..data.examples import load_prepared
from ..errors import UserError
from ..io import processes
from ..io.memory import release_free_memory, rss_mb
from ..models import kernels
from ..models.batching import (
    PADDING_FREE_SEQ2SEQ,
    Formatter,
    collate,
    encode_all,
    pack,
    target_tokens,
    train_batches,
)
from . import sharding
from .checkpoint import (
    _diverged,
    check_free_space,
    checkpoint_state,
    resume_run,
    save_checkpoint,
    save_final,
)
from .model import (
    CompletionLoss,
    _autocast,
    build_model,
    evaluate_loss,
    unwrap,
    unwrap_model,
)
from .trackers import Trackers, log_row, write_log


@dataclass
class Setup:
    """What the loop runs with, fixed before the first step."""
    accelerator: object
    device: torch.device
    main: bool  # accelerate's main process: the one that prints, logs and writes checkpoints
    world: int
    resolved: models.ResolvedModel
    tok: object
    seq2seq: bool
    dtype: torch.dtype
    train_enc: list[dict]
    val_enc: list[dict]
    skipped: int
    val_skipped: int
    lengths: list[int]
    sharded: bool = False  # FSDP2: parameters, gradients and optimizer state split over the processes
    loss_fn: object = None
    params: list = None
    optimizer: object = None
    scheduler: object = None
    attn_before: object = None
    n_trainable: int = 0
    n_total: int = 0
    global_batch: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    plan: tuple = (None, [])  # (epoch, its batches of example indices): drawn once per epoch


class HeapWatch:
    """When a CPU run hands its free memory back: before the biggest steps, which set the peak, and
    when the pages kept from steps of other shapes have grown past what the biggest one needed."""

    def __init__(self):
        self.high_water, self.ceiling, self.new_high = 0, None, False

    def before_step(self, device: torch.device, collated: list) -> None:
        self.new_high = False
        if device.type == "cpu":
            padded = sum(b["input_ids"].numel() for b, _ in collated)
            if padded > 0.9 * self.high_water:
                # the biggest steps set the peak: start them from a trimmed heap (trimming every
                # step would cost each step its page faults, a sixth of the step time)
                self.new_high = padded > self.high_water
                self.high_water = max(self.high_water, padded)
                release_free_memory()
            elif self.ceiling and (rss_mb() or 0) > 1.1 * self.ceiling:
                # free pages kept from steps of other shapes have grown past what the biggest
                # step needed: hand them back (this step pays the page faults)
                release_free_memory()

    def after_backward(self) -> None:
        if self.new_high:  # what the biggest step left resident: the allocator keeps its pages for the next ones
            self.ceiling = rss_mb()


def train(model_cfg: ModelConfig, cfg: TrainConfig, data_dir: Path | str, out: Path | str, resume: bool = False) -> dict:
    from accelerate import Accelerator

    out = Path(out)
    shard = sharding.requested()  # before accelerate reads the same settings its own way
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    s = prepare_data(accelerator, model_cfg, cfg, data_dir)
    s.sharded = shard and s.world > 1
    build_trainable(s, model_cfg, cfg)
    position = {"global_batch": s.global_batch, "examples": len(s.train_enc), "seed": cfg.seed}
    step, best_val, log = resume_run(out, resume, s.loss_fn, s.optimizer, s.scheduler, position, s.main)

    # weights + two AdamW moments, in fp32: refuse now rather than fail at the first save
    ckpt_bytes = 3 * 4 * s.n_trainable
    # rank 0 looks, and a refusal ends every process (the others would wait at the first barrier)
    processes.current().first(lambda: check_free_space(out, ckpt_bytes))
    trackers = Trackers(cfg.report_to, out, cfg.model_dump(), enabled=s.main)
    t_start, tokens_seen, heap = time.time(), 0, HeapWatch()
    bar = tqdm(total=s.total_steps, initial=step, desc="train", unit="step", disable=not s.main, dynamic_ncols=True)
    s.loss_fn.train()
    while step < s.total_steps:
        step_loss, grad_norm, step_tokens = optimizer_step(s, cfg, out, step, heap)
        tokens_seen += step_tokens
        step += 1
        row = log_row(step, s.steps_per_epoch, step_loss, grad_norm, s.scheduler.get_last_lr()[0], step_tokens,
                      tokens_seen, s.world, t_start, s.device)
        end_of_epoch = step % s.steps_per_epoch == 0 or step == s.total_steps
        if end_of_epoch or (cfg.eval_every and step % cfg.eval_every == 0):
            row["val_loss"], best_val = validate(s, cfg, best_val)
        log.append(row)
        trackers.log(row)
        bar.set_postfix(loss=f"{step_loss:.3f}", **({"val": f"{row['val_loss']:.3f}"} if row.get("val_loss") else {}),
                        tok_s=f"{row['tokens_per_s']:.0f}")
        bar.update(1)
        if s.main:
            write_log(out, log)
        if step % cfg.save_every == 0 or step == s.total_steps:
            processes.current().first(lambda: check_free_space(out, ckpt_bytes))
            # every process takes part: each writes its random state, and under FSDP its shards
            save_checkpoint(out, step, s.loss_fn, s.optimizer, s.scheduler,
                            checkpoint_state(step, s.steps_per_epoch, best_val, cfg, s.global_batch,
                                             len(s.train_enc)), cfg.keep_checkpoints)
        s.accelerator.wait_for_everyone()
    bar.close()
    trackers.close()
    return finish(s, model_cfg, cfg, out, step, best_val, log, t_start)


def prepare_data(accelerator, model_cfg: ModelConfig, cfg: TrainConfig, data_dir: Path | str) -> Setup:
    """The examples, read and encoded for the model; the cheap checks of the user's input first:
    a typo in a path should not wait for a model to load."""
    device = accelerator.device
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
    if seq2seq and cfg.padding_free:
        raise UserError(PADDING_FREE_SEQ2SEQ)  # before the model loads, not at the first batch
    train_enc, skipped = encode_all(fmt, train_ex, cfg.max_length, cfg.overlong, f"{data_dir}/train.jsonl")
    val_enc, val_skipped = encode_all(fmt, val_ex, cfg.max_length, "skip", f"{data_dir}/validation.jsonl") if val_ex else ([], 0)
    lengths = [len(e["input_ids"]) for e in train_enc]
    return Setup(accelerator, device, accelerator.is_main_process, accelerator.num_processes, resolved, tok, seq2seq,
                 dtype, train_enc, val_enc, skipped, val_skipped, lengths)


def build_trainable(s: Setup, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """The model, its loss, AdamW and the learning-rate schedule, placed by accelerate."""
    from transformers import get_scheduler

    model = build_model(s.resolved, cfg, s.dtype, model_cfg.trust_remote_code)
    s.attn_before = kernels.use_causal_attention(model) if s.device.type == "cpu" and not s.seq2seq else None
    if s.device.type == "cpu" and not s.seq2seq:
        kernels.fuse_swiglu(model)
        kernels.fuse_rmsnorm(model)
    if cfg.padding_free and s.device.type == "cuda":
        s.attn_before = kernels.use_varlen_attention(model, s.dtype)
    loss_fn = CompletionLoss(model, s.seq2seq)
    if s.sharded:  # before the optimizer: it must hold the sharded parameters
        sharding.shard(loss_fn, s.device, s.world)
    s.params = [p for p in model.parameters() if p.requires_grad]
    s.n_trainable, s.n_total = sum(p.numel() for p in s.params), sum(p.numel() for p in model.parameters())
    decay = [p for p in s.params if p.ndim >= 2]
    no_decay = [p for p in s.params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, foreach=True)
    s.global_batch = cfg.batch_size * s.world
    micro_per_epoch = math.ceil(len(s.train_enc) / s.global_batch)
    s.steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    s.total_steps = cfg.max_steps or s.steps_per_epoch * cfg.epochs
    s.scheduler = get_scheduler(cfg.schedule, optimizer, num_warmup_steps=round(cfg.warmup_ratio * s.total_steps),
                                num_training_steps=s.total_steps)
    # accelerate would wrap a sharded module again (on GPU) or in DDP (on CPU): sharded, it stays as it is
    s.loss_fn, s.optimizer = (loss_fn, optimizer) if s.sharded else s.accelerator.prepare(loss_fn, optimizer)


def micro_batches(s: Setup, cfg: TrainConfig, step: int) -> list[tuple[dict, bool]]:
    """This rank's collated micro-batches for one optimizer step, each with whether it is real."""
    epoch, pos = divmod(step, s.steps_per_epoch)
    if s.plan[0] != epoch:
        s.plan = (epoch, train_batches(s.lengths, s.global_batch, cfg.seed, epoch, cfg.group_by_length))
    micro = s.plan[1][pos * cfg.grad_accum:(pos + 1) * cfg.grad_accum]
    # This rank's slice of each global micro-batch. A last batch smaller than the number of
    # processes leaves a rank empty-handed: it still runs one example with weight 0, because
    # DDP needs every rank in every backward.
    rank = s.accelerator.process_index
    rank_micro = [(b[rank::s.world] or b[:1], bool(b[rank::s.world])) for b in micro]
    batch = pack if cfg.padding_free else collate
    return [(batch([s.train_enc[i] for i in b], s.tok.pad_token_id, s.seq2seq), real) for b, real in rank_micro]


def forward_backward(s: Setup, collated: list[tuple[dict, bool]], n_global: int) -> tuple[float, int]:
    """Gradients of the step's loss accumulated over its micro-batches: (summed loss, tokens)."""
    step_loss, step_tokens = 0.0, 0
    for k, (batch, real) in enumerate(collated):
        batch = {key: v.to(s.device) for key, v in batch.items()}
        sync = k == len(collated) - 1
        if s.sharded:  # FSDP2 has no no_sync(): reduce-scatter the gradients after the last micro-batch only
            s.loss_fn.set_requires_gradient_sync(sync)
        with (s.accelerator.no_sync(s.loss_fn) if not sync and s.world > 1 and not s.sharded else nullcontext()):
            with _autocast(s.device, s.dtype):
                loss_sum = s.loss_fn(**batch) * (1.0 if real else 0.0)
            # Normalise by target tokens of the whole accumulated, all-process batch, so
            # that 4 x 2 equals 8 x 1; DDP averages gradients, hence the x world.
            s.accelerator.backward(loss_sum * s.world / n_global)
        step_loss += float(loss_sum.detach())
        step_tokens += int(batch["attention_mask"].sum()) if real else 0
    return step_loss, step_tokens


def optimizer_step(s: Setup, cfg: TrainConfig, out: Path, step: int, heap: HeapWatch):
    """One optimizer step (the `step`-th, counting from 0): (mean token loss, gradient norm, tokens).
    A non-finite loss or gradient norm stops the run before the weights are touched."""
    collated = micro_batches(s, cfg, step)
    n_local = sum(target_tokens(b, s.seq2seq) for b, real in collated if real)
    heap.before_step(s.device, collated)
    n_global = int(s.accelerator.reduce(torch.tensor(n_local, device=s.device), "sum")) if s.world > 1 else n_local
    step_loss, step_tokens = forward_backward(s, collated, n_global)
    heap.after_backward()
    if s.world > 1:
        step_loss = float(s.accelerator.reduce(torch.tensor(step_loss, device=s.device), "sum"))
    step_loss /= n_global
    if not math.isfinite(step_loss):
        _diverged(out, "loss", step_loss, step + 1)
    grad_norm = s.accelerator.clip_grad_norm_(s.params, cfg.max_grad_norm)
    if hasattr(grad_norm, "full_tensor"):  # sharded gradients give a DTensor norm
        grad_norm = grad_norm.full_tensor()
    # A finite loss can still give non-finite gradients (weights so large that a norm layer's
    # square overflows): stepping on them would turn the weights into NaN, and the checkpoint
    # written after this step with them. Stop before the step: the last checkpoint stays good.
    if not math.isfinite(float(grad_norm)):
        _diverged(out, "gradient norm", float(grad_norm), step + 1)
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return step_loss, grad_norm, step_tokens


def validate(s: Setup, cfg: TrainConfig, best_val: float | None) -> tuple[float | None, float | None]:
    """(validation loss, best validation loss so far); (None, best_val) without validation examples."""
    if not s.val_enc:
        return None, best_val
    release_free_memory()  # the training step's free pages, before a pass at twice its batch size
    # the plain module, not DDP's wrapper: no gradient sync to take part in, each rank its share
    total, count = evaluate_loss(getattr(s.loss_fn, "module", s.loss_fn), s.val_enc, s.tok.pad_token_id,
                                 cfg.batch_size * 2, s.device, s.dtype, s.accelerator.process_index, s.world,
                                 same_count=s.sharded)
    if s.world > 1:
        total, count = s.accelerator.reduce(torch.tensor([total, float(count)], dtype=torch.float64, device=s.device),
                                            "sum").tolist()
    v = total / max(count, 1)
    return v, (v if best_val is None else min(best_val, v))


def finish(s: Setup, model_cfg: ModelConfig, cfg: TrainConfig, out: Path, step: int, best_val: float | None,
           log: list[dict], t_start: float) -> dict:
    """The run's summary, after the final save (adapter, merged or full model)."""
    summary = {
        "steps": step, "train_examples": len(s.train_enc), "skipped_overlong": s.skipped,
        "validation_examples": len(s.val_enc), "validation_skipped_overlong": s.val_skipped,
        "trainable_parameters": s.n_trainable, "total_parameters": s.n_total,
        "precision": str(s.dtype).replace("torch.", ""),
        "final_loss": log[-1]["loss"] if log else None,
        "final_val_loss": next((r["val_loss"] for r in reversed(log) if r.get("val_loss") is not None), None),
        "best_val_loss": best_val, "train_wall_s": round(time.time() - t_start, 1),
        "tokens_per_s": log[-1]["tokens_per_s"] if log else None, "processes": s.world,
        "sharding": "fsdp2" if s.sharded else None,
    }
    if s.attn_before:
        unwrap(unwrap_model(s.loss_fn)).set_attn_implementation(s.attn_before)
    s.optimizer.state.clear()
    release_free_memory()  # the merge below loads a second, fp32 copy of the base model
    if s.sharded:
        trainable = sharding.full_trainable(s.loss_fn)  # every process sends its shards
        if s.main:
            save_final(out, unsharded_copy(s, model_cfg, cfg, trainable), s.resolved, s.tok, cfg, model_cfg)
    elif s.main:
        save_final(out, unwrap_model(s.loss_fn), s.resolved, s.tok, cfg, model_cfg)
    s.accelerator.wait_for_everyone()
    return summary


def unsharded_copy(s: Setup, model_cfg: ModelConfig, cfg: TrainConfig, trainable: dict) -> torch.nn.Module:
    """A plain copy of the trained model on the first process, from the gathered trainable weights:
    what save_final writes the adapter, the merged or the full model from."""
    model = build_model(s.resolved, cfg, s.dtype, model_cfg.trust_remote_code)
    loss_fn = CompletionLoss(model, s.seq2seq)
    missing = {n for n, p in loss_fn.named_parameters() if p.requires_grad} - set(trainable)
    if missing:
        raise RuntimeError(f"gathered FSDP state lacks {sorted(missing)[:3]}")
    loss_fn.load_state_dict(trainable, strict=False)
    return model
