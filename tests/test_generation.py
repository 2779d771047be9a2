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


@pytest.mark.parametrize("share", [True, False], ids=["shared-prefix", "own-prefill"])
def test_greedy_decode_gives_what_one_generate_per_prompt_gives(tiny_llama, monkeypatch, share):
    """The in-place cache, a shared prefix prefilled once, per-row positions and rows leaving the
    batch change no token."""
    import torch

    from tunebench import generation
    from tunebench.generation import greedy_decode, supports_greedy_decode

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    assert supports_greedy_decode(model)
    prompts = [tok("Summarize the following conversation, please. " + p).input_ids for p in PROMPTS]
    assert len({len(p) for p in prompts}) == 5
    monkeypatch.setattr(generation, "SHARED_PREFIX_MIN", 4 if share else 10**6)
    assert (generation._shared_prefix(prompts) >= 4) == share

    def one_at_a_time(stop):
        outs = []
        for p in prompts:
            with torch.no_grad():
                out = model.generate(torch.tensor([p]), max_new_tokens=20, do_sample=False, eos_token_id=stop,
                                     pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
            outs.append(out)
        return outs

    free = one_at_a_time([tok.eos_token_id])
    # stop tokens that end the rows at different steps, so that finished rows leave the batch
    stop = sorted({row[k] for row, k in zip(free, (3, 7, 11, 15, 19))})
    ref = one_at_a_time(stop)
    assert len({len(r) for r in ref}) > 2
    assert greedy_decode(model, prompts, 20, stop) == ref
    assert greedy_decode(model, prompts, 20, [tok.eos_token_id]) == free


def test_logits_processors_send_generation_to_transformers(tiny_llama):
    import torch

    from tunebench.generation import supports_greedy_decode

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model.generation_config.repetition_penalty = 1.3
    assert not supports_greedy_decode(model)
