"""The model side of training: the trainable copy, the completion-only loss, the validation loss."""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..config import TrainConfig
from ..errors import UserError
from ..models import kernels
from ..models.batching import IGNORE, collate, sorted_batches, target_tokens

# peft still asks transformers for the deprecated name; the message is noise for our users.
PEFT_DEPRECATION = ".*is_gradient_checkpointing.*"


@contextmanager
def quiet_peft_deprecation():
    """transformers' FutureWarning that peft's wrapping triggers, silenced inside this block only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PEFT_DEPRECATION, category=FutureWarning)
        yield


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under any DDP / peft wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unwrap_model(loss_fn) -> nn.Module:
    return getattr(loss_fn, "module", loss_fn).model


def unwrap_trainable(model: nn.Module):
    return [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]


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

    def forward(self, input_ids, attention_mask, labels, position_ids=None, cu_seq_lens=None):
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
        packed = _packed_inputs(position_ids, cu_seq_lens)
        if self.fast:
            body = getattr(lm, lm.base_model_prefix)
            hidden = body(input_ids=input_ids, **packed).last_hidden_state
            logits = lm.get_output_embeddings()(hidden[:, :-1][keep])
            return F.cross_entropy(logits.float(), targets[keep], reduction="sum")
        logits = self.model(input_ids=input_ids, **packed).logits[:, :-1]
        return F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")


def _packed_inputs(position_ids, cu_seq_lens) -> dict:
    """What a padding-free batch (`batching.pack`) adds to the forward: nothing for a padded one.

    No cache: transformers reads packed sequences from position_ids only when there is none, and a
    decoder called with use_cache on makes one even in training. The cu_seq_lens keywords reach the
    attention function; flash attention's varlen path reads them, SDPA and eager ignore them (the
    block-diagonal mask built from position_ids does their work)."""
    if position_ids is None:
        return {}
    longest = int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
    return {"position_ids": position_ids, "use_cache": False, "cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": longest, "max_length_k": longest}


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
        with quiet_peft_deprecation():
            model = get_peft_model(model, lcfg)
    except ValueError as e:
        raise UserError(f"train.lora_targets: {e}") from None
    kernels.fuse_lora(model)
    return model


def evaluate_loss(loss_fn: CompletionLoss, encoded: list[dict], pad_id: int, batch_size: int, device, dtype,
                  rank: int = 0, world: int = 1, same_count: bool = False) -> tuple[float, int]:
    """Summed cross-entropy and target-token count over this rank's share of the batches.
    `same_count`: every rank runs as many forwards as the busiest one (a sharded model's forward
    gathers weights from all of them), the extra ones on a batch it then leaves out."""
    total, count = 0.0, 0
    was_training = loss_fn.training
    loss_fn.eval()
    batches = sorted_batches([len(e["input_ids"]) for e in encoded], batch_size)
    mine = batches[rank::world]
    rounds = math.ceil(len(batches) / world) if same_count else len(mine)
    with torch.no_grad():
        for k in range(rounds):
            idx = mine[k] if k < len(mine) else batches[0]
            batch = {key: v.to(device) for key, v in collate([encoded[i] for i in idx], pad_id, loss_fn.seq2seq).items()}
            with _autocast(device, dtype):
                loss = float(loss_fn(**batch))
            if k < len(mine):
                total += loss
                count += target_tokens(batch, loss_fn.seq2seq)
    loss_fn.train(was_training)
    return total, count


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
