"""Independent references for the pinned tests: what plain transformers, peft, rouge-score and
sacrebleu compute, written here from their public APIs and without any of tunebench's code.

A test runs tunebench, recomputes the same figure through these functions and asserts equality
(to float tolerance), so that a wrong number fails instead of passing a range check.

The definitions tunebench documents and these functions restate:
- a decoder sees its chat template's user turn with the generation prompt, then the completion
  and EOS; without a chat template, "prompt\\n\\n" (with the tokenizer's own special tokens)
  then the completion and EOS. An encoder-decoder reads the prompt and is taught the completion,
  both with the tokenizer's special tokens;
- the loss is token cross-entropy over completion tokens only, averaged over all completion
  tokens of the optimizer step's batch (transformers' own `labels=` loss over one padded batch);
- examples longer than `max_length` tokens (prompt + completion) are left out and counted;
- generation is greedy `model.generate`, one prompt at a time, cut at the first stop token and
  decoded without special tokens, surrounding whitespace stripped.
"""
from __future__ import annotations

import math
import re

import torch

IGNORE = -100


def prompt_ids(tok, prompt: str, seq2seq: bool) -> list[int]:
    if seq2seq:
        return tok(prompt).input_ids
    if getattr(tok, "chat_template", None):
        return list(tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False))
    return tok(prompt + "\n\n").input_ids


def completion_ids(tok, completion: str, seq2seq: bool) -> list[int]:
    if seq2seq:
        return tok(text_target=completion).input_ids
    return tok(completion, add_special_tokens=False).input_ids + [tok.eos_token_id]


def encode(tok, rows: list[dict], seq2seq: bool, max_length: int | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) per row, over-long rows left out."""
    pairs = [(prompt_ids(tok, r["prompt"], seq2seq), completion_ids(tok, r["completion"], seq2seq)) for r in rows]
    if max_length is None:
        return pairs
    if seq2seq:
        return [(p, c) for p, c in pairs if len(p) <= max_length and len(c) <= max_length]
    return [(p, c) for p, c in pairs if len(p) + len(c) <= max_length]


def batch(pairs: list[tuple[list[int], list[int]]], pad_id: int, seq2seq: bool) -> dict[str, torch.Tensor]:
    """One right-padded batch with an attention mask and -100 wherever no loss is taken."""
    if seq2seq:
        n, m = max(len(p) for p, _ in pairs), max(len(c) for _, c in pairs)
        ids = [p + [pad_id] * (n - len(p)) for p, _ in pairs]
        mask = [[1] * len(p) + [0] * (n - len(p)) for p, _ in pairs]
        labels = [c + [IGNORE] * (m - len(c)) for _, c in pairs]
    else:
        n = max(len(p) + len(c) for p, c in pairs)
        ids = [p + c + [pad_id] * (n - len(p) - len(c)) for p, c in pairs]
        mask = [[1] * (len(p) + len(c)) + [0] * (n - len(p) - len(c)) for p, c in pairs]
        labels = [[IGNORE] * len(p) + c + [IGNORE] * (n - len(p) - len(c)) for p, c in pairs]
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


def mean_loss(model, pairs, pad_id: int, seq2seq: bool) -> float:
    """transformers' own loss (mean cross-entropy over label tokens) of one batch, in eval mode."""
    was = model.training
    model.eval()
    with torch.no_grad():
        loss = float(model(**batch(pairs, pad_id, seq2seq)).loss)
    model.train(was)
    return loss


def cosine_lr(lr: float, step: int, total: int) -> float:
    """The learning rate of (0-based) optimizer step `step` under cosine decay without warmup."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / total))


def train_steps(model, train_batch: dict, val_batch: dict | None, lr: float, weight_decay: float, steps: int,
                max_grad_norm: float = 1.0) -> list[dict]:
    """A plain training loop: full-batch steps with torch's AdamW (default betas and eps), weight
    decay on every trainable tensor of two or more dimensions, gradient-norm clipping, cosine
    decay; the validation loss after each step. Returns per step the loss, the gradient norm
    before clipping and the validation loss.

    Weight decay by dimension is tunebench's rule. HF Trainer exempts by name ("bias", "norm")
    instead; the two agree on Llama-style models and differ on T5, whose 2-d
    relative_attention_bias table tunebench decays and HF Trainer does not."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
    out = []
    for k in range(steps):
        model.train()
        loss = model(**train_batch).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(lr, k, steps)
        opt.step()
        opt.zero_grad()
        row = {"loss": float(loss.detach()), "grad_norm": float(norm)}
        if val_batch is not None:
            model.eval()
            with torch.no_grad():
                row["val_loss"] = float(model(**val_batch).loss)
        out.append(row)
    return out


def greedy(model, tok, ids: list[int], max_new_tokens: int) -> list[int]:
    """`model.generate` for one prompt, greedy, cut before the first stop token."""
    stop = model.generation_config.eos_token_id
    stop = [stop] if isinstance(stop, int) else list(stop or [])
    stop = stop + ([tok.eos_token_id] if tok.eos_token_id not in stop else [])
    with torch.no_grad():
        device = next(model.parameters()).device
        out = model.generate(torch.tensor([ids], device=device),
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                             pad_token_id=tok.pad_token_id)[0].tolist()
    new = out[1:] if model.config.is_encoder_decoder else out[len(ids):]  # the decoder start token
    return new[:next((k for k, t in enumerate(new) if t in stop), len(new))]


def rouge_and_bleu(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """rouge-score F-measures with stemming against the best reference per ROUGE type (rougeLsum on
    one sentence per line, sentences ending at . ! or ? before whitespace), averaged over examples;
    sacrebleu corpus BLEU with one reference stream per reference slot."""
    import sacrebleu
    from rouge_score import rouge_scorer

    kinds = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    lines = lambda text: re.sub(r"([.!?])\s+", "\\1\n", text.strip())  # noqa: E731
    totals = dict.fromkeys(kinds, 0.0)
    for pred, refs in zip(predictions, references):
        scores = [scorer.score(lines(r), lines(pred)) for r in refs]
        for k in kinds:
            totals[k] += max(s[k].fmeasure for s in scores)
    out = {k: v / len(predictions) for k, v in totals.items()}
    width = max(len(r) for r in references)
    streams = [[r[k] if k < len(r) else None for r in references] for k in range(width)]
    out["bleu"] = sacrebleu.corpus_bleu(predictions, streams).score
    return out
