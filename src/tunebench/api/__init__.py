"""tunebench from Python (notebooks): the CLI's commands as functions with the same names and
defaults, returning typed results (`.to_pandas()` where the result is a table).

    import tunebench as tb
    data = tb.prepare("runs/nb/data", train_limit=32, test_limit=8)
    base = tb.evaluate(data.path, "runs/nb/base", limit=8, max_new_tokens=32)
    tuned_run = tb.train(data.path, "runs/nb/train", max_steps=4)
    tuned = tb.evaluate(data.path, "runs/nb/tuned", model=tuned_run.model, limit=8, max_new_tokens=32)
    tb.compare(base.path, tuned.path).to_pandas()

A user's mistake raises `tunebench.UserError` (one line) instead of exiting.
"""
from ..errors import UserError
from .results import (
    BenchResult,
    BenchTasks,
    Comparison,
    Evaluation,
    Plan,
    Predictions,
    PreparedData,
    RunResult,
    TrainResult,
)
from .stages import bench, compare, evaluate, generate, prepare, run, train

__all__ = ["prepare", "train", "generate", "evaluate", "bench", "compare", "run", "UserError", "PreparedData",
           "TrainResult", "Predictions", "Evaluation", "BenchResult", "BenchTasks", "Comparison", "RunResult", "Plan"]
