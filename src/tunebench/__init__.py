"""tunebench: instruction fine-tuning with numbers that show what it did.

From Python: `tunebench.prepare`, `train`, `generate`, `evaluate`, `bench`, `compare` and `run`
(see tunebench.api). They are imported on first use, so that `import tunebench` and the CLI's
start stay cheap.
"""

__version__ = "0.1.0"

_API = ("prepare", "train", "generate", "evaluate", "bench", "compare", "run", "UserError", "PreparedData",
        "TrainResult", "Predictions", "Evaluation", "BenchResult", "BenchTasks", "Comparison", "RunResult", "Plan")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'tunebench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
