import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tunebench.batching import Formatter
from tunebench.generation import generate
from conftest import dialogsum_rows

PROMPTS = ["Summarize: " + r["dialogue"][: 40 + 60 * i] for i, r in enumerate(dialogsum_rows("dev", 5))]


def test_batched_equals_one_at_a_time_decoder(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    fmt = Formatter.for_model(tok, False)
    batched, stats = generate(model, fmt, PROMPTS, batch_size=5, max_new_tokens=12)
    single = [generate(model, fmt, [p], batch_size=1, max_new_tokens=12)[0][0] for p in PROMPTS]
    assert batched == single
    assert stats["examples"] == 5 and stats["generated_tokens"] > 0


def test_seq2seq_generation_runs_in_order(tiny_t5):
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    fmt = Formatter.for_model(tok, True)
    batched, _ = generate(model, fmt, PROMPTS, batch_size=5, max_new_tokens=8)
    single = [generate(model, fmt, [p], batch_size=1, max_new_tokens=8)[0][0] for p in PROMPTS]
    assert batched == single
