"""`tunebench chat`: try a model by hand, with the same prompt formatting as training.

Each line typed is one user turn (optionally rendered through a task template first, so a pasted
dialogue is asked exactly as in training). `--compare` answers with the base model and the tuned
model side by side.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from .. import models
from ..errors import UserError
from ..io.layout import RUN_MODEL_FILE
from ..models.batching import Formatter
from . import generate

PROMPT = "you> "


def _load(name: str, trust_remote_code: bool, chat_template: str):
    device = models.default_device()
    model, tok, _ = models.load(name, models.pick_dtype("auto", device), trust_remote_code)
    model.to(device)
    return model, Formatter.for_model(tok, model.config.is_encoder_decoder, chat_template)


def base_of(run: str) -> str:
    info = Path(run) / RUN_MODEL_FILE
    if not info.is_file():
        raise UserError(f"{run}: --compare needs a training run directory (with {RUN_MODEL_FILE})")
    return json.loads(info.read_text())["base_model"]


def chat(model_name: str, compare: bool = False, template: str | None = None, max_new_tokens: int = 128,
         trust_remote_code: bool = False, chat_template: str = "auto", stdin=None, stdout=None) -> None:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    pairs = [("tuned" if compare else "model", model_name)]
    if compare:
        pairs.insert(0, ("base", base_of(model_name)))
    loaded = [(label, *_load(name, trust_remote_code, chat_template)) for label, name in pairs]
    tmpl = None
    if template:
        from ..data.templates import find_template, get_task

        tmpl = find_template(template)
        # the typed line fills the variable the prompt reads (the summary, for an inverted template)
        names = tmpl.inputs
        var = names[0] if len(names) == 1 else get_task(tmpl.task).inputs[0]
    width = max(len(label) for label, *_ in loaded)
    print(f"tunebench chat: {', '.join(f'{l}={n}' for l, n in pairs)}"
          + (f", template {tmpl.task}/{tmpl.name}" if tmpl else "") + ". Empty line or /quit to leave;"
          " write \\n for a line break.", file=stdout, flush=True)
    while True:
        print(PROMPT, end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line or line.strip() in ("", "/quit", "/exit"):
            break
        text = line.rstrip("\n").replace("\\n", "\n")
        prompt = tmpl.render({var: text}) if tmpl else text
        for label, model, fmt in loaded:
            with torch.inference_mode():
                out, _ = generate(model, fmt, [prompt], batch_size=1, max_new_tokens=max_new_tokens, desc=label, progress=False)
            print(f"{label:>{width}}> {out[0]}", file=stdout, flush=True)
