"""Batched generation, longest batches first.

Greedy decoding of the decoder families in models.CACHE_API_FAMILIES runs through `greedy_decode` (grouped
prefill, an in-place KV buffer, a bf16-screened exact argmax, finished rows leaving the batch);
everything else (beams, encoder-decoders, other families, logits processors) through
transformers' `generate` with left padding. `chat`: talk to a base or tuned model in the training
prompt format. Imports models and data.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicLayer

from ..models import CACHE_API_FAMILIES, stop_ids
from ..models.batching import Formatter, budget_batches
from ..models.profile import DeviceProfile, profile_for, profile_for_model


def generate(model, fmt: Formatter, prompts: list[str | list[dict]], batch_size: int = 16, max_new_tokens: int = 96,
             num_beams: int = 1, desc: str = "generate", progress: bool = True,
             on_batch: Callable[[list[int], list[str]], None] | None = None, strip: bool = True,
             settled: Callable[[str], bool] | None = None) -> tuple[list[str], dict]:
    """Completions in input order, and efficiency figures (tokens in/out, seconds).

    `on_batch(indices, completions)` is called as each batch finishes, so that a caller can
    journal results and a killed run loses at most one batch. `settled(text)` says that a
    completion can stop early because more text would not change what the caller makes of it
    (BIG-bench's post-processing); it must be true of every longer text too. `strip` trims the
    completions' outer whitespace (BIG-bench keeps it).
    """
    tok = fmt.tokenizer
    device = next(model.parameters()).device
    encoded = [fmt.prompt_ids(p) for p in prompts]
    outputs: list[str] = [""] * len(prompts)
    prompt_tokens = sum(len(e) for e in encoded)
    new_tokens = 0
    sum_sq = 0  # sum over examples of (prompt + output length)^2: the attention term of a FLOPs estimate
    eos = stop_ids(model, tok)
    done = (lambda ids: settled(tok.decode(ids, skip_special_tokens=True))) if settled else None
    greedy_slots = num_beams == 1 and not fmt.seq2seq and supports_greedy_decode(model)
    t0 = time.time()
    model.eval()
    # Sorting by length keeps padding (wasted compute) small within each batch.
    with tqdm(total=len(prompts), desc=desc, unit="ex", dynamic_ncols=True, disable=not progress) as bar:
        # greedy_decode's cache holds at most batch_size rows of decode_row_tokens: fewer rows when prompts are long
        budget = batch_size * profile_for(device).decode_row_tokens if greedy_slots else float("inf")
        head = GreedyHead.for_model(model) if greedy_slots else None
        for idx in budget_batches([len(e) for e in encoded], batch_size, budget, max_new_tokens,
                                  _step_cost(model) if greedy_slots else None):
            if greedy_slots:
                gen = greedy_decode(model, [encoded[i] for i in idx], max_new_tokens, eos, head, done)
            else:
                batch = _pad([encoded[i] for i in idx], tok.pad_token_id, left=not fmt.seq2seq).to(device)
                with torch.inference_mode():
                    out = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                         eos_token_id=eos, pad_token_id=tok.pad_token_id,
                                         stopping_criteria=_settled_criteria(done, 1 if fmt.seq2seq else batch["input_ids"].shape[1]))
                gen = (out if fmt.seq2seq else out[:, batch["input_ids"].shape[1]:]).tolist()
            for i, row in zip(idx, gen):
                ids = _until_eos(row, eos, tok.pad_token_id, fmt.seq2seq)
                new_tokens += len(ids)
                sum_sq += (len(encoded[i]) + len(ids)) ** 2
                text = tok.decode(ids, skip_special_tokens=True)
                outputs[i] = text.strip() if strip else text
            if on_batch:
                on_batch(idx, [outputs[i] for i in idx])
            bar.update(len(idx))
    return outputs, _efficiency(len(prompts), prompt_tokens, new_tokens, time.time() - t0, sum_sq)


def merge_stats(parts: list[dict]) -> dict:
    """`generate`'s efficiency figures for one piece of work split over processes (one part
    each): counts summed, the slowest process's seconds (the wall time of the whole), rates over
    the whole."""
    if len(parts) == 1:
        return parts[0]
    total = {k: sum(p[k] for p in parts) for k in ("examples", "prompt_tokens", "generated_tokens", "sum_sq_lengths")}
    return _efficiency(**total, seconds=max(p["seconds"] for p in parts))


def _efficiency(examples: int, prompt_tokens: int, generated_tokens: int, seconds: float, sum_sq_lengths: int) -> dict:
    return {"examples": examples, "prompt_tokens": prompt_tokens, "generated_tokens": generated_tokens,
            "seconds": round(seconds, 2), "examples_per_s": round(examples / max(seconds, 1e-9), 3),
            "generated_tokens_per_s": round(generated_tokens / max(seconds, 1e-9), 1), "sum_sq_lengths": sum_sq_lengths}


# ---------------------------------------------------------------------------- greedy decoding

# generation_config fields that make greedy decoding more than an argmax (generate() applies them)
_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0,
               "min_new_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
               "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None,
               "exponential_decay_length_penalty": None, "encoder_repetition_penalty": 1.0}


def supports_greedy_decode(model) -> bool:
    cfg, gc = model.config, model.generation_config
    if cfg.model_type not in CACHE_API_FAMILIES or getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
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


def greedy_decode(model, prompts: list[list[int]], max_new_tokens: int, eos: list[int],
                  head: Callable[[torch.Tensor], list[int]] | None = None,
                  done: Callable[[list[int]], bool] | None = None, graphs: bool | None = None) -> list[list[int]]:
    """Greedy continuations of a batch: the tokens one `generate` per prompt gives.

    Prompts are prefilled in groups of near-equal length, each into its row of one preallocated
    KV buffer, right-aligned. A prefix that every prompt shares (chat system turn, instruction) is
    prefilled once and copied into each row, so each prompt pays only for its own tokens. The
    rows are then decoded in lock step (a padding mask hides the left gaps, each row has its own
    positions), each step's tokens picked by `head` (default: `GreedyHead.for_model`). A row
    finishes at EOS, at max_new_tokens or when `done(its tokens)`. Finished rows leave the batch
    once a quarter of it is done, so late steps do not pay for them.

    `graphs`: run each decode step as a replayed CUDA graph (`DecodeGraph`); None: where
    `use_decode_graphs` says so (on a GPU, with SDPA). The tokens are the same either way.
    """
    from transformers.cache_utils import Cache

    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), head or GreedyHead.for_model(model)
    kw = _cache_keyword(decoder)
    b, longest = len(prompts), max(len(p) for p in prompts)
    width = longest + max_new_tokens
    out: list[list[int]] = [[] for _ in prompts]
    stop = set(eos)
    with torch.inference_mode():
        layers, first = _prefill(model, prompts, longest, width, head)
        cache = Cache(layers=layers)
        mask = torch.zeros((b, width), dtype=torch.long, device=device)
        for r, p in enumerate(prompts):
            mask[r, longest - len(p):] = 1
        rows = list(range(b))  # batch row -> prompt index
        finished = [False] * b
        pos = torch.tensor([len(p) for p in prompts], device=device)
        nxt = first
        graph = DecodeGraph(decoder, kw) if (use_decode_graphs(model) if graphs is None else graphs) else None
        while True:
            for r, t in zip(rows, nxt):
                if not finished[r]:
                    out[r].append(t)
                    finished[r] = t in stop or len(out[r]) == max_new_tokens or (done is not None and done(out[r]))
            n_done = sum(finished[r] for r in rows)
            if n_done == len(rows):
                return out
            if n_done * 4 >= len(rows):
                kept = [j for j, r in enumerate(rows) if not finished[r]]
                keep = torch.tensor(kept, device=device)
                for layer in layers:
                    layer.keep(keep)
                rows, nxt = [rows[j] for j in kept], [nxt[j] for j in kept]
                mask, pos = mask[keep], pos[keep]
            end = layers[0].end
            if graph is not None:
                hidden = graph(layers, nxt, mask, pos)
            else:
                hidden = decoder(input_ids=torch.tensor(nxt, device=device)[:, None], attention_mask=mask[:, :end + 1],
                                 position_ids=pos[:, None], **{kw: cache}, use_cache=True).last_hidden_state
            nxt = head(hidden[:, -1])
            pos = pos + 1


def use_decode_graphs(model) -> bool:
    """Whether greedy decoding replays its decode step as a CUDA graph: on a GPU, for a model on SDPA
    (the step passes a ready 4D boolean mask, which SDPA reads as it is), unless
    TUNEBENCH_CUDA_GRAPHS=off. A 135M model's decode step on a Hopper GPU is a few hundred small
    kernels whose launches take longer than their work; a graph launches them all at once."""
    import os

    device = next(model.parameters()).device
    return (device.type == "cuda" and os.environ.get("TUNEBENCH_CUDA_GRAPHS", "on").lower() not in ("off", "0", "false")
            and getattr(model.config, "_attn_implementation", None) == "sdpa")


class IndexedSlotLayer(DynamicLayer):
    """A SlotLayer for a captured step: each step writes at a position held in a device tensor and
    attention reads the whole preallocated buffer (a graph replays fixed shapes and addresses; the
    mask hides the slots not yet written)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor):
        super().__init__()
        self.keys, self.values, self.index = keys, values, index
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys.index_copy_(2, self.index, key_states)
        self.values.index_copy_(2, self.index, value_states)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]

    def get_max_length(self) -> int:
        return self.keys.shape[-2]


class DecodeGraph:
    """greedy_decode's decode step over static buffers, captured once per batch size as a CUDA graph
    and replayed: token ids, positions and the write index are copied into fixed tensors, the mask is
    recomputed inside the graph from the index, and each layer's KV buffer (already preallocated,
    written in place) is the graph's own. When rows leave the batch the buffers shrink and the step
    is captured again. The first step of each capture runs eagerly on a side stream (the warm-up
    CUDA graphs need), and it is a real step: its states are kept and returned.

    Off a GPU the same static step runs eagerly, uncaptured: that is how a CPU test pins the static
    path (full-width attention under a mask, indexed writes) to the ordinary one, token for token."""

    def __init__(self, decoder, kw: str):
        self.decoder, self.kw, self.rows, self.graph = decoder, kw, None, None

    def __call__(self, layers: list[SlotLayer], nxt: list[int], mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        end = layers[0].end
        if self.rows != len(nxt):
            hidden = self._build(layers, nxt, mask, pos, end)
        else:
            self.ids.copy_(torch.tensor(nxt)[:, None], non_blocking=True)
            self.pos.copy_(pos[:, None])
            self.index.fill_(end)
            if self.graph is not None:
                self.graph.replay()
                hidden = self.hidden
            else:
                hidden = self._step()
        for layer in layers:  # the ordinary path's bookkeeping, should rows leave and the step be rebuilt
            layer.end += 1
        return hidden

    def _step(self) -> torch.Tensor:
        from transformers.cache_utils import Cache

        visible = self.rows_mask & (self.columns <= self.index)  # the prompt's slots and every token so far
        return self.decoder(input_ids=self.ids, attention_mask=visible, position_ids=self.pos,
                            **{self.kw: Cache(layers=self.layers)}, use_cache=True).last_hidden_state

    def _build(self, layers, nxt, mask, pos, end) -> torch.Tensor:
        device = mask.device
        self.rows, self.graph = len(nxt), None
        self.ids = torch.tensor(nxt, device=device)[:, None]
        self.pos, self.index = pos[:, None].clone(), torch.tensor([end], device=device)
        self.rows_mask = mask.bool()[:, None, None, :].clone()  # (rows, 1, 1, width): SDPA's boolean mask, as is
        self.columns = torch.arange(mask.shape[1], device=device)
        self.layers = [IndexedSlotLayer(layer.keys, layer.values, self.index) for layer in layers]
        if device.type != "cuda":
            return self._step()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            hidden = self._step().clone()  # the warm-up is this step; the capture below runs nothing
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.hidden = self._step()
            self.graph = graph
        except RuntimeError as e:
            # never captured on a GPU by this project yet: a step that cannot be captured (a host
            # sync in some model's code) runs uncaptured, the same tokens, rather than failing the run
            warnings.warn(f"decode step not captured as a CUDA graph ({e}); running it uncaptured")
        return hidden


class GreedyHead:
    """The greedy token of each row: the argmax of the fp32 vocabulary projection, found through
    a bf16 one (a 49k-row head is a fifth of a decode step's matmuls, and bf16 runs it 4x faster
    on CPUs with bf16 dot products).

    The bf16 logit l' of token v is within B_v = 1.01 (2^-7 |h| |w_v| + 2^-8 |l'|) of the fp32
    logit l: rounding h and w_v to bf16 (unit roundoff 2^-8) moves each product by at most
    2^-7 |h_i w_vi| and their sum, by Cauchy-Schwarz, by at most 2^-7 |h| |w_v|; the fp32
    accumulation adds under 1% of that; rounding the output to bf16 adds 2^-8 |l'|. The argmax of
    l is then among the tokens whose upper bound l'_v + B_v reaches the best lower bound
    max_u (l'_u - B_u): a few per row. Their fp32 logits are computed exactly and the best taken
    (ties to the lowest id, as argmax breaks them). The result is the argmax of fp32 logits, not
    an approximation of it; only the order of the fp32 sums differs, as it does between batch
    shapes anyway.
    """

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.weight16 = weight.to(torch.bfloat16)
        self.norms = weight.norm(dim=1)
        self.max_norm = self.norms.max()

    @classmethod
    def for_model(cls, model) -> "Callable[[torch.Tensor], list[int]]":
        """The bf16-screened argmax where it pays (fp32 head on a CPU with bf16 dot products), the
        plain projection's argmax otherwise."""
        from ..models import bf16_supported

        head = model.get_output_embeddings()
        w = getattr(head, "weight", None)
        if (type(head) is torch.nn.Linear and head.bias is None and w.dtype == torch.float32
                and w.device.type == "cpu" and bf16_supported(w.device)):
            return cls(w.detach())
        return lambda hidden: head(hidden).argmax(-1).tolist()

    def __call__(self, hidden: torch.Tensor) -> list[int]:
        h = hidden.float()
        low = torch.nn.functional.linear(h.to(torch.bfloat16), self.weight16)
        a = h.norm(dim=-1, keepdim=True) * (2 ** -7 * 1.01)  # B_v = a |w_v| + c
        c = low.abs().amax(-1, keepdim=True).float() * (2 ** -8 * 1.01)
        lower = torch.addcmul(low.float(), a, self.norms, value=-1)  # l' - a |w_v|, c still to subtract
        best_lower = lower.amax(-1, keepdim=True) - c
        # l'_v + a|w_v| + c >= best_lower, screened first with the largest |w_v|, then exactly
        r, v = (lower >= best_lower - c - 2 * a * self.max_norm).nonzero(as_tuple=True)
        keep = lower[r, v] + 2 * a[r, 0] * self.norms[v] + c[r, 0] >= best_lower[r, 0]
        r, v = r[keep], v[keep]
        exact = (self.weight[v] * h[r]).sum(-1)
        best: dict[int, tuple[float, int]] = {}
        for row, tok, logit in zip(r.tolist(), v.tolist(), exact.tolist()):  # v ascends within a row
            if row not in best or logit > best[row][0]:
                best[row] = (logit, tok)
        return [best[row][1] for row in range(h.shape[0])]


def _prefill(model, prompts: list[list[int]], longest: int, width: int,
             head: Callable[[torch.Tensor], list[int]]) -> tuple[list[SlotLayer], list[int]]:
    """Each prompt's cache written right-aligned into its row of one preallocated buffer per layer,
    and each prompt's greedy first token. A shared prefix is computed once and copied. Prompts of
    near-equal length are prefilled together (right-padded, which a causal model needs no mask
    for), so each forward's matmuls are about the device profile's prefill_tokens rows tall."""
    from transformers.cache_utils import Cache, DynamicCache

    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    cfg = model.config
    kv_heads, head_dim = _kv_shape(cfg)
    shape = (len(prompts), kv_heads, width, head_dim)
    bufs = [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(cfg.num_hidden_layers)]
    prof = profile_for_model(model)  # on a GPU: the prefill group size measured on this model
    shared = _shared_prefix(prompts, prof)
    decoder, last = model.get_decoder(), {}
    kw = _cache_keyword(decoder)
    prefix = DynamicCache()
    if shared:
        decoder(input_ids=torch.tensor([prompts[0][:shared]], device=device), **{kw: prefix}, use_cache=True)
    for group in _prefill_groups([len(p) - shared for p in prompts], prof):
        n = len(prompts[group[0]]) - shared
        # a small buffer for the group (prefix + own tokens), copied into the rows afterwards
        temp = [(torch.empty((len(group), kv_heads, shared + n, head_dim), dtype=dtype, device=device),
                 torch.empty((len(group), kv_heads, shared + n, head_dim), dtype=dtype, device=device))
                for _ in bufs]
        for (k, v), layer in zip(temp, prefix.layers):
            k[:, :, :shared], v[:, :, :shared] = layer.keys, layer.values
        ids = torch.tensor([prompts[r][shared:] + [prompts[r][-1]] * (n + shared - len(prompts[r])) for r in group],
                           device=device)
        hidden = decoder(input_ids=ids, **{kw: Cache(layers=[SlotLayer(k, v, shared) for k, v in temp])},
                         use_cache=True).last_hidden_state
        for j, r in enumerate(group):
            m, start = len(prompts[r]), longest - len(prompts[r])
            for (k, v), (tk, tv) in zip(bufs, temp):
                k[r, :, start:longest], v[r, :, start:longest] = tk[j, :, :m], tv[j, :, :m]
            last[r] = hidden[j, m - shared - 1].clone()  # a view would keep the group's states
    # one vocabulary projection for the batch: per prompt, each would read the whole 49k x d head
    first = head(torch.stack([last[r] for r in range(len(prompts))]))
    return [SlotLayer(k, v, longest) for k, v in bufs], first


def _prefill_groups(lengths: list[int], prof: DeviceProfile) -> list[list[int]]:
    """Prompts prefilled together: neighbours in length order, up to prof.prefill_tokens padded
    tokens per group and at most prof.prefill_padding of them padding."""
    groups: list[list[int]] = []
    real = 0  # the last group's unpadded tokens
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        g = groups[-1] if groups else None
        padded = (len(g) + 1) * lengths[g[0]] if g else 0
        if g and padded <= prof.prefill_tokens and padded - real - lengths[i] <= prof.prefill_padding * padded:
            g.append(i)
            real += lengths[i]
        else:
            groups.append([i])
            real = lengths[i]
    return groups


def _shared_prefix(prompts: list[list[int]], prof: DeviceProfile) -> int:
    """Length of the prefix every prompt shares, when it is worth prefilling once (each prompt
    keeps at least one token of its own: its last position gives the first logits)."""
    if len(prompts) < 2:
        return 0
    n = 0
    for column in zip(*prompts):
        if any(t != column[0] for t in column):
            break
        n += 1
    n = min(n, min(len(p) for p in prompts) - 1)
    return n if n >= prof.shared_prefix_min else 0


def _step_cost(model) -> float:
    """A decode step's fixed cost in cache tokens: both are memory reads, the weights once per
    step and each cache token once, so the ratio of their bytes is the exchange rate."""
    kv_heads, head_dim = _kv_shape(model.config)
    return sum(p.numel() for p in model.parameters()) / (2 * model.config.num_hidden_layers * kv_heads * head_dim)


def _kv_shape(cfg) -> tuple[int, int]:
    heads = cfg.num_attention_heads
    return getattr(cfg, "num_key_value_heads", None) or heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // heads


def _cache_keyword(module) -> str:
    """transformers 5.24 renamed forward's `past_key_values` to `cache` (the old name warns)."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _settled_criteria(done: Callable[[list[int]], bool] | None, start: int):
    """`done` as a stopping criterion of `generate`, row by row."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    if done is None:
        return None

    class Settled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor([done(row[start:].tolist()) for row in input_ids], device=input_ids.device)

    return StoppingCriteriaList([Settled()])


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
