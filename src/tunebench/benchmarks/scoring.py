"""Log-likelihood of answer choices and greedy generation, batched, for both model kinds.

Two tokenizations, one per scoring convention. lm-eval (lm-evaluation-harness's): trailing
spaces of the context move to the continuation, the context is tokenized alone, and the
continuation's tokens are those of tokenize(context + continuation) after the context's length.
bigbench (BIG-bench's HF model wrapper): context and choice tokenized separately and the two id
lists concatenated, nothing moved; the tokenizer's special tokens (a BOS) go on the context only
(BIG-bench's wrapper ran GPT-2, whose tokenizer adds none, so it never had to choose).

For decoder-only models whose logits are lm_head(hidden) all choices of a question are scored
in ONE sequence: [context, choice 1, choice 2, ...] with an attention mask that lets each choice
see the context and itself only, and positions that restart after the context for every choice.
The context is computed once instead of once per choice, and only the positions that predict a
choice token go through the 49k-word output projection. Other models (encoder-decoder, or
decoders with logit scaling) get one row per choice. Either way nothing bigger than the needed
log-probabilities is kept.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import models
from ..io import processes
from ..models.batching import Formatter
from .tasks import Example


@dataclass
class ChoiceScore:
    logprob: float   # sum over the choice's tokens
    tokens: int
    chars: int       # for length normalisation by characters, as lm-eval's acc_norm


class Scorer:
    def __init__(self, model, fmt: Formatter, batch_size: int = 8, packed: bool | None = None):
        self.model, self.fmt, self.tok = model, fmt, fmt.tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.seq2seq = fmt.seq2seq
        can_pack = (not self.seq2seq) and model.config.model_type in models.HEAD_OF_HIDDEN
        self.packed = can_pack if packed is None else (packed and can_pack)
        self.max_len = getattr(model.config, "max_position_embeddings", 4096) or 4096
        # what the model actually ran, for the efficiency figures
        self.tokens = 0
        self.sum_sq_lengths = 0

    # ------------------------------------------------------------------ encoding
    def encode(self, context: str, choices: list[str], convention: str = "lm-eval") -> tuple[list[int], list[list[int]]]:
        if convention == "bigbench":
            if self.seq2seq:
                return self.tok(context).input_ids, [self.tok(text_target=c, add_special_tokens=False).input_ids for c in choices]
            ctx = (self.tok(self.fmt.prompt_text(context), add_special_tokens=False) if self.fmt.use_chat
                   else self.tok(context)).input_ids
            return ctx, [self.tok(c, add_special_tokens=False).input_ids for c in choices]
        if self.fmt.use_chat:
            # the answer is the assistant's turn; its leading delimiter has no place there
            ctx_text, conts = self.fmt.prompt_text(context), [c.lstrip() for c in choices]
        else:
            ctx_text, conts = context, list(choices)
            n = len(ctx_text) - len(ctx_text.rstrip())
            if n:
                ctx_text, conts = ctx_text[:-n], [ctx_text[-n:] + c for c in conts]
        if self.seq2seq:
            ctx = self.tok(ctx_text).input_ids
            return ctx, [self.tok(text_target=c, add_special_tokens=False).input_ids or [self.tok.eos_token_id] for c in conts]
        # the tokenizer's own special tokens (a Llama BOS, say), as lm-eval; none inside a chat template
        special = not self.fmt.use_chat
        ctx = self.tok(ctx_text, add_special_tokens=special).input_ids
        out = []
        for c in conts:
            whole = self.tok(ctx_text + c, add_special_tokens=special).input_ids
            out.append(whole[len(ctx):])
        return ctx, out

    # ------------------------------------------------------------------ scoring
    def score(self, examples: list[Example], desc: str = "score", journal=None, tag: str = "score",
              convention: str = "lm-eval", choices=None) -> list[list[ChoiceScore]]:
        """Each example's choice scores (or of `choices(example)`, e.g. its targets). With a
        `runs.Journal`, scores already in it under `tag:index` are reused and new ones appended
        batch by batch (a killed run resumes)."""
        choices = choices or (lambda e: e.choices)
        results: list[list[ChoiceScore] | None] = [None] * len(examples)
        if journal is not None:
            for i in range(len(examples)):
                row = journal.done.get(f"{tag}:{i}")
                if row:
                    results[i] = [ChoiceScore(*c) for c in row["choices"]]
        todo = [i for i in range(len(examples)) if results[i] is None]
        procs = processes.current()
        mine = procs.share(todo, lambda i: len(examples[i].context) + sum(len(c) for c in choices(examples[i])))
        tokens0, sq0 = self.tokens, self.sum_sq_lengths
        enc = {i: self.encode(examples[i].context, choices(examples[i]), convention) for i in mine}
        lengths = {i: len(c) + sum(len(x) for x in cs) for i, (c, cs) in enc.items()}
        order = sorted(mine, key=lambda i: -lengths[i])  # longest first: memory errors show early
        self.model.eval()
        with torch.inference_mode(), tqdm(total=len(examples) - len(todo) + len(mine), initial=len(examples) - len(todo),
                                          desc=desc, unit="ex", dynamic_ncols=True, leave=False,
                                          disable=not procs.main) as bar:
            for k in range(0, len(order), self.batch_size):
                idx = order[k:k + self.batch_size]
                batch = [enc[i] for i in idx]
                lps = self._packed(batch) if self.packed else self._rows(batch)
                for i, lp in zip(idx, lps):
                    results[i] = [ChoiceScore(v, len(t), len(c)) for v, t, c in zip(lp, enc[i][1], choices(examples[i]))]
                if journal is not None:
                    journal.append([{"key": f"{tag}:{i}", "choices": [[c.logprob, c.tokens, c.chars] for c in results[i]]}
                                    for i in idx])
                bar.update(len(idx))
        if procs.world > 1:
            # every process needs every score: each computes the task's metrics (rank 0 writes them)
            parts = procs.all_gather(({i: [[c.logprob, c.tokens, c.chars] for c in results[i]] for i in mine},  # type: ignore[union-attr]
                                      self.tokens - tokens0, self.sum_sq_lengths - sq0))
            for part, _, _ in parts:
                for i, cs in part.items():
                    results[i] = [ChoiceScore(*c) for c in cs]
            self.tokens = tokens0 + sum(p[1] for p in parts)
            self.sum_sq_lengths = sq0 + sum(p[2] for p in parts)
        return results  # type: ignore[return-value]

    def _packed(self, batch) -> list[list[float]]:
        lm = self.model
        body = getattr(lm, lm.base_model_prefix)
        seqs, segs, poss, gathers = [], [], [], []
        for ctx, conts in batch:
            budget = self.max_len - max(len(c) for c in conts)
            ctx = ctx[-budget:]  # left-truncate an over-long context, as lm-eval does
            ids, seg, pos = list(ctx), [0] * len(ctx), list(range(len(ctx)))
            gather = []
            for k, c in enumerate(conts, 1):
                start = len(ids)
                ids += c
                seg += [k] * len(c)
                pos += list(range(len(ctx), len(ctx) + len(c)))
                # token j of a choice is predicted at the last context position (j = 0) or at token j-1
                where = [len(ctx) - 1] + list(range(start, start + len(c) - 1))
                gather.append((where[: len(c)], c))
            seqs.append(ids), segs.append(seg), poss.append(pos), gathers.append(gather)
        T = max(len(s) for s in seqs)
        B = len(seqs)
        self.tokens += sum(len(s) for s in seqs)
        self.sum_sq_lengths += sum(len(s) ** 2 for s in seqs)
        ids = torch.full((B, T), self.tok.pad_token_id, dtype=torch.long)
        seg = torch.full((B, T), -1, dtype=torch.long)
        pos = torch.zeros((B, T), dtype=torch.long)
        for b in range(B):
            n = len(seqs[b])
            ids[b, :n], seg[b, :n], pos[b, :n] = torch.tensor(seqs[b]), torch.tensor(segs[b]), torch.tensor(poss[b])
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        same = seg[:, :, None] == seg[:, None, :]
        allowed = causal & (same | (seg[:, None, :] == 0))
        dtype = next(lm.parameters()).dtype
        mask = torch.zeros((B, 1, T, T), dtype=dtype).masked_fill(~allowed[:, None], torch.finfo(dtype).min)
        hidden = body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                      position_ids=pos.to(self.device)).last_hidden_state
        rows, cols, targets, owners = [], [], [], []
        for b, gather in enumerate(gathers):
            for k, (where, toks) in enumerate(gather):
                rows += [b] * len(where)
                cols += where
                targets += toks
                owners += [(b, k)] * len(where)
        h = hidden[torch.tensor(rows), torch.tensor(cols)]
        logp = F.log_softmax(lm.get_output_embeddings()(h).float(), dim=-1)
        tok_lp = logp[torch.arange(len(targets)), torch.tensor(targets, device=logp.device)].tolist()
        out = [[0.0] * len(g) for g in gathers]
        for (b, k), v in zip(owners, tok_lp):
            out[b][k] += v
        return out

    def _rows(self, batch) -> list[list[float]]:
        """One row per (question, choice): the general path."""
        pairs = [(b, k, ctx, c) for b, (ctx, conts) in enumerate(batch) for k, c in enumerate(conts)]
        out = [[0.0] * len(conts) for _, conts in batch]
        pad = self.tok.pad_token_id
        if self.seq2seq:
            n, m = max(len(p[2]) for p in pairs), max(1, max(len(p[3]) for p in pairs))
            self.tokens += sum(len(p[2]) + len(p[3]) for p in pairs)
            self.sum_sq_lengths += sum(len(p[2]) ** 2 + len(p[3]) ** 2 for p in pairs)
            ids = torch.full((len(pairs), n), pad, dtype=torch.long)
            att = torch.zeros((len(pairs), n), dtype=torch.long)
            labels = torch.full((len(pairs), m), -100, dtype=torch.long)
            for r, (_, _, ctx, c) in enumerate(pairs):
                ids[r, : len(ctx)], att[r, : len(ctx)] = torch.tensor(ctx), 1
                labels[r, : len(c)] = torch.tensor(c)
            dec = self.model.prepare_decoder_input_ids_from_labels(labels=labels)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device),
                                decoder_input_ids=dec.to(self.device)).logits
            for r, (b, k, _, c) in enumerate(pairs):
                if c:  # an empty choice has log-probability 0, as in BIG-bench's wrapper
                    lp = F.log_softmax(logits[r, : len(c)].float(), dim=-1)
                    out[b][k] = float(lp[torch.arange(len(c)), torch.tensor(c, device=lp.device)].sum())
            return out
        seqs = [(ctx + c)[-(self.max_len + 1):][:-1] for _, _, ctx, c in pairs]
        self.tokens += sum(len(s) for s in seqs)
        self.sum_sq_lengths += sum(len(s) ** 2 for s in seqs)
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), pad, dtype=torch.long)
        att = torch.zeros((len(seqs), n), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)], att[r, : len(s)] = torch.tensor(s), 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device)).logits
        for r, (b, k, _, c) in enumerate(pairs):
            end = len(seqs[r])
            if c:
                lp = F.log_softmax(logits[r, end - len(c): end].float(), dim=-1)
                out[b][k] = float(lp[torch.arange(len(c)), torch.tensor(c, device=lp.device)].sum())
        return out


def postprocess(text: str, stop_string: str | None, output_regex: str | None) -> str:
    """BIG-bench's post-processing: cut at the stop string, then take the first regex match.

    Without a stop string generation is cut at the first newline: a one-line target can never
    match a continuation that runs on into the next invented question.
    """
    if stop_string:
        text = text.split(stop_string)[0]
    else:
        text = text.lstrip().split("\n")[0]
    if output_regex:
        found = re.findall(output_regex, text)
        text = (found[0] if isinstance(found[0], str) else found[0][0]) if found else ""
    return text.strip()
