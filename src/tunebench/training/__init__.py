"""Fine-tuning: full or LoRA, decoder-only or encoder-decoder, loss on completion tokens only.

The loop (loop.py) reads top to bottom: set up, then per optimizer step gather the micro-batches,
count their target tokens, forward/backward, clip, step, log; validation every epoch; checkpoints
(checkpoint.py) that hold everything resume needs; log rows and trackers (trackers.py); the model,
its loss and the validation loss (model.py). accelerate supplies device placement and data parallelism.
"""
from __future__ import annotations

from .loop import train
from .model import CompletionLoss

__all__ = ["CompletionLoss", "train"]
