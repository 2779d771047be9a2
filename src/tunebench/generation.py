"""Batched generation, longest batches first.

Greedy decoding of the decoder families in _SLOT_FAMILIES runs through `greedy_decode` (per-prompt
prefill, an in-place KV buffer, finished rows leaving the batch); everything else (beams,
encoder-decoders, other families, logits processors) through transformers' `generate` with left
padding.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicLayer

from .batching import Formatter, budget_batches


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
    greedy_slots = num_beams == 1 and not fmt.seq2seq and supports_greedy_decode(model)
    t0 = time.time()
    model.eval()
    # Sorting by length keeps padding (wasted compute) small within each batch.
    with tqdm(total=len(prompts), desc=desc, unit="ex", dynamic_ncols=True, disable=not progress) as bar:
        # greedy_decode's cache holds at most batch_size rows of 512 tokens: fewer rows when prompts are long
        budget = batch_size * DECODE_ROW_TOKENS if greedy_slots else float("inf")
        for idx in budget_batches([len(e) for e in encoded], batch_size, budget, max_new_tokens):
            if greedy_slots:
                gen = greedy_decode(model, [encoded[i] for i in idx], max_new_tokens, eos)
            else:
                batch = _pad([encoded[i] for i in idx], tok.pad_token_id, left=not fmt.seq2seq).to(device)
                with torch.inference_mode():
                    out = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                         eos_token_id=eos, pad_token_id=tok.pad_token_id)
                gen = (out if fmt.seq2seq else out[:, batch["input_ids"].shape[1]:]).tolist()
            for i, row in zip(idx, gen):
                ids = _until_eos(row, eos, tok.pad_token_id, fmt.seq2seq)
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


# ---------------------------------------------------------------------------- greedy decoding

DECODE_ROW_TOKENS = 512
# Decoder families whose attention reads the cache through the standard Cache API (no sliding
# window, no recurrent state): the only ones greedy_decode is used for; others go to generate().
_SLOT_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "olmo", "olmo2"}
# generation_config fields that make greedy decoding more than an argmax (generate() applies them)
_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0,
               "min_new_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
               "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None,
               "exponential_decay_length_penalty": None, "encoder_repetition_penalty": 1.0}


def supports_greedy_decode(model) -> bool:
    cfg, gc = model.config, model.generation_config
    if cfg.model_type not in _SLOT_FAMILIES or getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return False
    return all(not getattr(gc, k, None) or getattr(gc, k) == v for k, v in _PROCESSORS.items())


class SlotLayer(DynamicLayer):
    """One layer's KV cache for a batch decoded in lock step: prompts right-aligned in a
    preallocated buffer, each step written in place (the dynamic cache re-copies the whole cache
    with torch.cat on every step, which costs as much as reading it)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, end: int):
        super().__init__()
        self.keys, self.values, self.end = keys, values, end
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        self.keys[:, :, self.end:self.end + n] = key_states
        self.values[:, :, self.end:self.end + n] = value_states
        self.end += n
        return self.keys[:, :, :self.end], self.values[:, :, :self.end]

    def get_seq_length(self) -> int:
        return self.end

    def get_max_length(self) -> int:
        return self.keys.shape[-2]

    def keep(self, rows: torch.Tensor) -> None:
        self.keys, self.values = self.keys[rows], self.values[rows]


def greedy_decode(model, prompts: list[list[int]], max_new_tokens: int, eos: list[int]) -> list[list[int]]:
    """Greedy continuations of a batch: the tokens one `generate` per prompt gives.

    Each prompt is prefilled on its own: no padding and the causal fast path, exactly the
    computation a one-at-a-time loop does, so the first token is bitwise the same. The prompts'
    caches are then laid right-aligned into one buffer and decoded in lock step (a padding mask
    hides the left gaps, each row has its own positions). Finished rows leave the batch once a
    quarter of it is done, so late steps do not pay for them.
    """
    from transformers.cache_utils import Cache, DynamicCache

    device = next(model.parameters()).device
    kw = _cache_keyword(model)
    b, longest = len(prompts), max(len(p) for p in prompts)
    width = longest + max_new_tokens
    out: list[list[int]] = [[] for _ in prompts]
    stop = set(eos)
    with torch.inference_mode():
        first, layers = [], []
        for r, p in enumerate(prompts):
            c = DynamicCache()
            logits = model(input_ids=torch.tensor([p], device=device), **{kw: c}, use_cache=True,
                           logits_to_keep=1).logits
            first.append(int(logits[0, -1].argmax()))
            # straight into the shared buffer: holding every prompt's own cache first would double
            # the peak memory of a batch of long prompts
            for li, layer in enumerate(c.layers):
                if r == 0:
                    buf = layer.keys.new_zeros((b, layer.keys.shape[1], width, layer.keys.shape[3]))
                    layers.append(SlotLayer(buf, buf.clone(), longest))
                layers[li].keys[r, :, longest - len(p):longest] = layer.keys[0]
                layers[li].values[r, :, longest - len(p):longest] = layer.values[0]
            del c
        cache = Cache(layers=layers)
        mask = torch.zeros((b, width), dtype=torch.long, device=device)
        for r, p in enumerate(prompts):
            mask[r, longest - len(p):] = 1
        rows = list(range(b))  # batch row -> prompt index
        finished = [False] * b
        pos = torch.tensor([len(p) for p in prompts], device=device)
        nxt = first
        while True:
            for r, t in zip(rows, nxt):
                if not finished[r]:
                    out[r].append(t)
                    finished[r] = t in stop or len(out[r]) == max_new_tokens
            n_done = sum(finished[r] for r in rows)
            if n_done == len(rows):
                return out
            if n_done * 4 >= len(rows):
                keep = torch.tensor([j for j, r in enumerate(rows) if not finished[r]], device=device)
                for layer in layers:
                    layer.keep(keep)
                rows = [rows[j] for j in keep.tolist()]
                mask, pos = mask[keep], pos[keep]
                nxt = [nxt[j] for j in keep.tolist()]
            end = layers[0].end
            logits = model(input_ids=torch.tensor(nxt, device=device)[:, None], attention_mask=mask[:, :end + 1],
                           position_ids=pos[:, None], **{kw: cache}, use_cache=True, logits_to_keep=1).logits
            nxt = logits[:, -1].argmax(-1).tolist()
            pos = pos + 1


def _cache_keyword(model) -> str:
    """transformers 5.24 renamed forward's `past_key_values` to `cache` (the old name warns)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


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
