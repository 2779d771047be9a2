"""A small before/after through tunebench's Python API: the default model (SmolLM2-135M-Instruct)
before and after a few LoRA steps on DialogSum, compared on the same test dialogues.

    python examples/quickstart.py [OUT_DIR]        (default: runs/quickstart)

Sizes are for a quick look (about 1-3 minutes on 2 CPU cores), not for a meaningful result:
`tunebench run recipes/dialogsum-lora.yaml` is the full demo. The same lines run in a notebook,
where the progress bars are Jupyter widgets.
"""
import sys
from pathlib import Path

import tunebench as tb

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart")
data = tb.prepare(out / "data", train_limit=32, validation_limit=8, test_limit=8)
print(f"prepared: {data.counts}")

base = tb.evaluate(data.path, out / "base", max_new_tokens=32)   # the 8 test dialogues
# 32 examples seen once, at a learning rate high enough for 8 steps to show (3e-4, the default,
# needs more steps: the demo recipe takes 73)
run = tb.train(data.path, out / "train", max_steps=8, batch_size=4, lr=1e-3)
print(f"trained: {run.steps} steps, losses {[round(x, 3) for x in run.losses]}")
tuned = tb.evaluate(data.path, out / "tuned", model=run.model, max_new_tokens=32)

comparison = tb.compare(base.path, tuned.path, examples=1)
table = comparison.to_pandas()
print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
print(f"written: {', '.join(str(f) for f in comparison.files)}")
