"""Fine-tuning: full or LoRA, decoder-only or encoder-decoder, loss on completion tokens only.

The loop (loop.py) reads top to bottom: set up, then per optimizer step gather the micro-batches,
count their target tokens, forward/backward, clip, step, log; validation every epoch; checkpoints
(checkpoint.py) that hold everything resume needs; log rows and trackers (trackers.py); the model,
its loss and the validation loss (model.py). accelerate supplies device placement and data parallelism.
"""
from __future__ import annotations

from .checkpoint import (
    _checkpoints,
    check_free_space,
    load_checkpoint,
    save_checkpoint,
    save_final,
)
from .loop import train
from .model import (
    CompletionLoss,
    build_model,
    evaluate_loss,
    unwrap,
    unwrap_model,
    unwrap_trainable,
)
from .trackers import Trackers

__all__ = [
    "CompletionLoss", "Trackers", "_checkpoints", "build_model", "check_free_space", "evaluate_loss",
    "load_checkpoint", "save_checkpoint", "save_final", "train", "unwrap", "unwrap_model", "unwrap_trainable",
]
