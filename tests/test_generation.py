import pytest
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tunebench.batching import Formatter
from tunebench.generation import generate
from conftest import dialogsum_rows

PROMPTS = ["Summarize: " + r["dialogue"][: 40 + 60 * i] for i, r in enumerate(dialogsum_rows("dev", 5))]


@pytest.mark.parametrize("fixture,cls,seq2seq", [("tiny_llama", AutoModelForCausalLM, False),
                                                 ("tiny_t5", AutoModelForSeq2SeqLM, True)])
def test_batched_equals_one_at_a_time_in_input_order(request, fixture, cls, seq2seq):
    path = request.getfixturevalue(fixture)
    fmt = Formatter.for_model(AutoTokenizer.from_pretrained(path), seq2seq)
    model = cls.from_pretrained(path)
    batched, stats = generate(model, fmt, PROMPTS, batch_size=5, max_new_tokens=12)
    single = [generate(model, fmt, [p], batch_size=1, max_new_tokens=12)[0][0] for p in PROMPTS]
    assert batched == single
    assert stats["examples"] == 5 and stats["prompt_tokens"] > 0
