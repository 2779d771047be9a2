"""Batched generation: left-padded prompts for decoder-only models, longest batches first."""
from __future__ import annotations

import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from .batching import Formatter, sorted_batches


def generate(model, fmt: Formatter, prompts: list[str], batch_size: int = 16, max_new_tokens: int = 96,
             num_beams: int = 1, desc: str = "generate", progress: bool = True,
             on_batch: Callable[[list[int], list[str]], None] | None = None) -> tuple[list[str], dict]:
    """Completions in input order, and efficiency figures (tokens in/out, seconds).

    `on_batch(indices, completions)` is called as each batch finishes, so that a caller can
    journal results and a killed run loses at most one batch.
    """
    tok = fmt.tokenizer
    device = next(model.parameters()).device
    encoded = [fmt.prompt_ids(p) for p in prompts]
    outputs: list[str] = [""] * len(prompts)
    prompt_tokens = sum(len(e) for e in encoded)
    new_tokens = 0
    sum_sq = 0  # sum over examples of (prompt + output length)^2: the attention term of a FLOPs estimate
    eos = _stop_ids(model, tok)
    t0 = time.time()
    model.eval()
    # Sorting by length keeps padding (wasted compute) small within each batch.
    with tqdm(total=len(prompts), desc=desc, unit="ex", dynamic_ncols=True, disable=not progress) as bar:
        for idx in sorted_batches([len(e) for e in encoded], batch_size):
            batch = _pad([encoded[i] for i in idx], tok.pad_token_id, left=not fmt.seq2seq).to(device)
            with torch.inference_mode():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                     eos_token_id=eos, pad_token_id=tok.pad_token_id)
            gen = out if fmt.seq2seq else out[:, batch["input_ids"].shape[1]:]
            for i, row in zip(idx, gen):
                ids = _until_eos(row.tolist(), eos, tok.pad_token_id, fmt.seq2seq)
                new_tokens += len(ids)
                sum_sq += (len(encoded[i]) + len(ids)) ** 2
                outputs[i] = tok.decode(ids, skip_special_tokens=True).strip()
            if on_batch:
                on_batch(idx, [outputs[i] for i in idx])
            bar.update(len(idx))
    seconds = time.time() - t0
    stats = {"examples": len(prompts), "prompt_tokens": prompt_tokens, "generated_tokens": new_tokens,
             "seconds": round(seconds, 2), "examples_per_s": round(len(prompts) / max(seconds, 1e-9), 3),
             "generated_tokens_per_s": round(new_tokens / max(seconds, 1e-9), 1), "sum_sq_lengths": sum_sq}
    return outputs, stats


def _stop_ids(model, tok) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids


def _until_eos(ids: list[int], eos: list[int], pad: int, seq2seq: bool) -> list[int]:
    if seq2seq and ids and ids[0] == pad:  # decoder start token
        ids = ids[1:]
    for k, t in enumerate(ids):
        if t in eos:
            return ids[:k]
    return ids


def _pad(seqs: list[list[int]], pad_id: int, left: bool):
    from transformers import BatchEncoding

    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if left:
            ids[i, n - len(s):] = torch.tensor(s)
            mask[i, n - len(s):] = 1
        else:
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
    return BatchEncoding({"input_ids": ids, "attention_mask": mask})
