"""Prompt formatting, tokenization with exact label masks, padding and length-grouped batches.

Training and generation format prompts through the same `Formatter`, so the model is asked at
test time exactly what it was taught. Labels are built from token boundaries: prompt tokens
and completion tokens are tokenized separately and concatenated, so the mask never depends on
finding a response string inside the text.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from ..errors import UserError

IGNORE = -100
# a chat template that marks the assistant's own tokens (for assistant-only loss), as TRL's do
GENERATION_MARK = re.compile(r"\{%-?\s*generation\s*-?%\}")
NEEDS_CHAT_TEMPLATE = ("a conversation with a system turn or more than one exchange needs the model's chat template "
                       "(this model has none, or chat_template is off)")
# Base (non-chat) decoder models see "prompt\n\ncompletion<eos>".
PLAIN_SEPARATOR = "\n\n"


@dataclass
class Formatter:
    tokenizer: object
    seq2seq: bool
    use_chat: bool
    # Benchmarks score raw prompts as lm-evaluation-harness does: no separator appended.
    raw: bool = False

    @classmethod
    def for_model(cls, tokenizer, seq2seq: bool, chat_template: str = "auto", raw: bool = False) -> "Formatter":
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if chat_template == "on" and not has_chat:
            raise UserError("chat_template: on, but this tokenizer has no chat template")
        use_chat = (not seq2seq) and has_chat and chat_template != "off"
        return cls(tokenizer, seq2seq, use_chat, raw)

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    def prompt_text(self, prompt: str | list[dict]) -> str:
        """The text a model is asked: a prompt, or a conversation (`prompt_of`) ready for its next
        assistant turn."""
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if self.use_chat:
            return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        if len(turns) != 1 or turns[0]["role"] != "user":
            raise UserError(NEEDS_CHAT_TEMPLATE)
        text = turns[0]["content"]
        return text if (self.seq2seq or self.raw) else text + PLAIN_SEPARATOR

    def prompt_ids(self, prompt: str | list[dict]) -> list[int]:
        text = self.prompt_text(prompt)
        # A rendered chat template already holds its special tokens (BOS among them): adding
        # them again gives a double BOS that the model never saw in pre-training.
        return self.tokenizer(text, add_special_tokens=not self.use_chat).input_ids

    def completion_ids(self, completion: str) -> list[int]:
        if self.seq2seq:
            ids = self.tokenizer(text_target=completion).input_ids
        else:
            ids = self.tokenizer(completion, add_special_tokens=False).input_ids
        # The completion must end in EOS, and EOS must stay in the labels even when pad == EOS,
        # or the tuned model never learns to stop.
        if not ids or ids[-1] != self.eos_id:
            ids = ids + [self.eos_id]
        return ids

    def sequence(self, example: dict) -> dict:
        """input_ids/labels for one example, whatever its length."""
        turns = example.get("messages")
        if turns is not None and self.use_chat:
            ids, labels = self.conversation_ids(turns)
            return {"input_ids": ids, "labels": labels}
        p = self.prompt_ids(prompt_of(example))
        c = self.completion_ids(example["completion"])
        if len(c) <= 1 and example["completion"].strip() == "":
            raise UserError(f"example '{example['id']}': no target tokens (empty completion)")
        if self.seq2seq:
            return {"input_ids": p, "labels": c}
        return {"input_ids": p + c, "labels": [IGNORE] * len(p) + c}

    def encode(self, example: dict, max_length: int) -> dict | None:
        """input_ids/labels for one example; None when it is over-long."""
        enc = self.sequence(example)
        return None if _length(enc, self.seq2seq) > max_length else enc

    def conversation_ids(self, turns: list[dict]) -> tuple[list[int], list[int]]:
        """A conversation through the chat template, with labels on every assistant turn only.

        A template that marks the assistant's tokens itself (`{% generation %}`, as TRL's training
        templates do) is followed, through transformers' assistant mask. Otherwise each assistant
        turn's text and the EOS that ends it carry the loss, and everything between them (system
        and user turns, the template's role headers) is context. The pieces are tokenized apart
        and joined, as a prompt and its completion are: for one user turn and one assistant turn
        this is exactly `prompt_ids` + `completion_ids`.
        """
        tok = self.tokenizer
        if GENERATION_MARK.search(tok.chat_template or ""):
            out = tok.apply_chat_template(turns, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
            ids = list(out["input_ids"])
            return ids, [t if keep else IGNORE for t, keep in zip(ids, out["assistant_masks"])]
        ids, labels, done = [], [], ""
        for i, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            head = tok.apply_chat_template(turns[:i], tokenize=False, add_generation_prompt=True)
            full = tok.apply_chat_template(turns[: i + 1], tokenize=False)
            end = len(head) + len(turn["content"])
            if not head.startswith(done) or full[len(head):end] != turn["content"]:
                raise UserError("this chat template renders a conversation differently as it grows (or rewrites "
                                "assistant turns): mark the assistant's tokens with {% generation %} in it")
            context = tok(head[len(done):], add_special_tokens=False).input_ids
            answer = self.completion_ids(turn["content"])
            ids += context + answer
            labels += [IGNORE] * len(context) + answer
            eos = tok.eos_token or ""
            done = full[:end] + (eos if eos and full.startswith(eos, end) else "")
        return ids, labels


def prompt_of(example: dict) -> str | list[dict]:
    """What a model is asked for an example: the conversation before its last assistant turn (a
    chat example), or the prompt."""
    turns = example.get("messages")
    return turns[:-1] if turns else example["prompt"]


def _length(enc: dict, seq2seq: bool) -> int:
    """An encoded example's length as max_length counts it (the longer side for an encoder-decoder)."""
    return max(len(enc["input_ids"]), len(enc["labels"])) if seq2seq else len(enc["input_ids"])


def encode_all(fmt: Formatter, examples: list[dict], max_length: int, overlong: str, what: str) -> tuple[list[dict], int]:
    """Encoded examples and the number skipped as over-long (an error if overlong == 'error')."""
    out, skipped = [], 0
    for line, ex in enumerate(examples, 1):  # prepared files hold one example per line
        enc = fmt.sequence(ex)
        if _length(enc, fmt.seq2seq) > max_length:
            if overlong == "error":
                n = len(enc["input_ids"]) + (len(enc["labels"]) if fmt.seq2seq else 0)
                raise UserError(f"{what}:{line}: example '{ex['id']}' has {n} tokens, over max_length {max_length} "
                                "(raise max_length, or set overlong: skip)")
            skipped += 1
            continue
        out.append(enc)
    if not out:
        raise UserError(f"{what}: all {len(examples)} examples are longer than max_length {max_length}")
    return out, skipped


def collate(encoded: list[dict], pad_id: int, seq2seq: bool) -> dict[str, torch.Tensor]:
    """Right padding for training: labels padded with IGNORE so padding never carries loss."""
    n = max(len(e["input_ids"]) for e in encoded)
    ids = torch.full((len(encoded), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), n), dtype=torch.long)
    if seq2seq:
        m = max(len(e["labels"]) for e in encoded)
        labels = torch.full((len(encoded), m), IGNORE, dtype=torch.long)
    else:
        labels = torch.full((len(encoded), n), IGNORE, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
        mask[i, : len(e["input_ids"])] = 1
        labels[i, : len(e["labels"])] = torch.tensor(e["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


PADDING_FREE_SEQ2SEQ = "train.padding_free: decoder-only models only (T5/BART train on padded batches)"


def pack(encoded: list[dict], pad_id: int, seq2seq: bool) -> dict[str, torch.Tensor]:
    """A micro-batch without padding: its sequences concatenated into one row (batch dimension 1).

    `position_ids` restart at 0 for each sequence, which is what confines attention to it:
    transformers builds a block-diagonal causal mask from them (SDPA, eager) and flash attention
    takes `cu_seq_lens` (each sequence's start, then the total) for its varlen kernel. Each
    sequence's first label is IGNORE: in a padded batch nothing predicts a row's first token, and
    here the position before it is the previous sequence's last token. Labels are otherwise the
    examples' own (completion tokens only), so the targets are exactly `collate`'s. The all-ones
    attention_mask counts real tokens as `collate`'s does; the model is not given it (a 2D mask
    would turn off the packed-sequence detection).
    """
    if seq2seq:
        raise UserError(PADDING_FREE_SEQ2SEQ)
    del pad_id  # no padding: the signature is collate's, so either can batch a step
    ids = torch.tensor([t for e in encoded for t in e["input_ids"]], dtype=torch.long)[None]
    labels = torch.tensor([t for e in encoded for t in [IGNORE] + e["labels"][1:]], dtype=torch.long)[None]
    lengths = [len(e["input_ids"]) for e in encoded]
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    cu = torch.tensor([0] + lengths, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "position_ids": positions,
            "cu_seq_lens": cu}


def target_tokens(batch: dict[str, torch.Tensor], seq2seq: bool) -> int:
    labels = batch["labels"] if seq2seq else batch["labels"][:, 1:]
    return int((labels != IGNORE).sum())


def train_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """One epoch's batches of example indices, deterministic in (seed, epoch).

    Length grouping sorts within mega-batches of 50 batches and then shuffles the batches:
    padding drops to a few percent while the order stays random at the batch level.
    """
    rng = random.Random(seed * 100_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if group_by_length:
        mega = batch_size * 50
        idx = [i for k in range(0, len(idx), mega)
               for i in sorted(idx[k:k + mega], key=lambda j: -lengths[j])]
    batches = [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Batches for inference: longest first, so a memory problem shows in the first batch."""
    return budget_batches(lengths, batch_size, budget=float("inf"), extra=0)


def budget_batches(lengths: list[int], max_rows: int, budget: float, extra: int,
                   batch_cost: float | None = None) -> list[list[int]]:
    """Batches for decoding, longest first: at most `max_rows` examples and `budget` cache tokens each.

    A batch's cache is rows x (its longest prompt + `extra` new tokens): long prompts travel in
    fewer rows, so memory stays bounded, and short ones in up to `max_rows`.

    Without `batch_cost` the batches are filled greedily. With it, the cut points minimise
    sum(batch_cost + cache tokens) over the batches (a dynamic programme over the sorted
    lengths): a batch costs a fixed `batch_cost` per decode step (reading the weights) plus its
    cache tokens (reading the cache, padding included), so one long outlier does not widen a
    full batch of shorter prompts when a batch of its own is cheaper.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if batch_cost is None:
        batches: list[list[int]] = []
        for i in order:
            last = batches[-1] if batches else None
            if last and len(last) < max_rows and (len(last) + 1) * (lengths[last[0]] + extra) <= budget:
                last.append(i)
            else:
                batches.append([i])
        return batches
    n = len(order)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):  # best[j]: cheapest cover of the j longest; cut[j]: where its last batch starts
        for i in range(j - 1, max(j - max_rows, 0) - 1, -1):
            tokens = (j - i) * (lengths[order[i]] + extra)
            if tokens > budget and j - i > 1:
                break
            if best[i] + batch_cost + tokens < best[j]:
                best[j], cut[j] = best[i] + batch_cost + tokens, i
    spans, j = [], n
    while j:
        spans.append(order[cut[j]:j])
        j = cut[j]
    return spans[::-1]
