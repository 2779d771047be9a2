import pytest
from conftest import dialogsum_rows
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tunebench.generation import generate
from tunebench.models.batching import Formatter

PROMPTS = ["Summarize: " + r["dialogue"][: 40 + 60 * i] for i, r in enumerate(dialogsum_rows("dev", 5))]


@pytest.mark.parametrize("fixture,cls,seq2seq", [("tiny_llama", AutoModelForCausalLM, False),
                                                 ("tiny_t5", AutoModelForSeq2SeqLM, True)])
def test_batched_equals_one_generate_per_prompt_in_input_order(request, fixture, cls, seq2seq):
    """Batched completions equal transformers' `generate` run on one prompt at a time (greedy, cut
    at the first stop token, decoded without special tokens); the token counts are those prompts'
    and those completions'."""
    import reference

    path = request.getfixturevalue(fixture)
    tok = AutoTokenizer.from_pretrained(path)
    fmt = Formatter.for_model(tok, seq2seq)
    model = cls.from_pretrained(path)
    batched, stats = generate(model, fmt, PROMPTS, batch_size=5, max_new_tokens=12)
    single = [generate(model, fmt, [p], batch_size=1, max_new_tokens=12)[0][0] for p in PROMPTS]
    assert batched == single
    prompts = [reference.prompt_ids(tok, p, seq2seq) for p in PROMPTS]
    outs = [reference.greedy(model, tok, p, 12) for p in prompts]
    texts = [tok.decode(o, skip_special_tokens=True).strip() for o in outs]
    if not seq2seq:  # five different, non-empty completions (the random tiny T5 only ever emits its pad token)
        assert len(set(texts)) == len(PROMPTS) and all(texts)
    assert batched == texts
    assert (stats["examples"], stats["prompt_tokens"], stats["generated_tokens"], stats["sum_sq_lengths"]) == (
        5, sum(map(len, prompts)), sum(map(len, outs)), sum((len(p) + len(o)) ** 2 for p, o in zip(prompts, outs)))


@pytest.mark.parametrize("share,grouped", [(True, False), (False, False), (True, True), (False, True)],
                         ids=["shared-prefix", "own-prefill", "shared-prefix-grouped", "own-prefill-grouped"])
def test_greedy_decode_gives_what_one_generate_per_prompt_gives(tiny_llama, monkeypatch, share, grouped):
    """The in-place cache, a shared prefix prefilled once, prompts of different lengths prefilled
    together (right-padded), per-row positions and rows leaving the batch change no token."""
    import torch

    from tunebench import generation
    from tunebench.generation import greedy_decode, supports_greedy_decode
    from tunebench.models import profile

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    assert supports_greedy_decode(model)
    prompts = [tok("Summarize the following conversation, please. " + p).input_ids for p in PROMPTS]
    assert len({len(p) for p in prompts}) == 5
    monkeypatch.setattr(profile.CPU, "shared_prefix_min", 4 if share else 10**6)
    assert (generation._shared_prefix(prompts, profile.CPU) >= 4) == share
    # grouped: any padding allowed, so the five prompts (of different lengths) share forwards
    monkeypatch.setattr(profile.CPU, "prefill_padding", 1.0 if grouped else 0.0)
    groups = generation._prefill_groups([len(p) for p in prompts], profile.CPU)
    assert (len(groups) < len(prompts)) == grouped

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
    # the static step a CUDA graph captures (full-width cache under a mask, indexed writes, rebuilt as
    # rows leave), run uncaptured here: the same tokens
    assert greedy_decode(model, prompts, 20, stop, graphs=True) == ref
    assert greedy_decode(model, prompts, 20, [tok.eos_token_id], graphs=True) == free


def test_decode_graphs_only_on_a_gpu_with_sdpa(tiny_llama, monkeypatch):
    import torch

    from tunebench.generation import use_decode_graphs

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    assert model.config._attn_implementation == "sdpa" and not use_decode_graphs(model)  # a CPU: never


def test_logits_processors_send_generation_to_transformers(tiny_llama):
    import torch

    from tunebench.generation import supports_greedy_decode

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model.generation_config.repetition_penalty = 1.3
    assert not supports_greedy_decode(model)


def test_greedy_head_picks_the_fp32_argmax_near_ties_included():
    """The bf16 screen keeps every token that can still be the fp32 argmax: near-ties that bf16
    cannot tell apart, exact ties (lowest id, as argmax) and ordinary rows all come out as the
    fp32 projection's argmax."""
    import torch

    from tunebench.generation import GreedyHead

    g = torch.Generator().manual_seed(0)
    w = torch.randn(5000, 64, generator=g) * 0.05
    w[11] = w[10] + 1e-4 * torch.randn(64, generator=g)  # same row in bf16, different in fp32
    w[21] = w[20]  # an exact tie
    h = torch.randn(300, 64, generator=g) * 3
    # rows whose logits for 10 and 11 (about 64) differ by under 0.01: bf16 rounds them 0.25 apart
    d = w[11] - w[10]
    gap = (torch.rand(100, generator=g) - 0.5) * 0.02 - 400 * (w[10] @ d)
    h[:100] = w[10] * 400 + gap[:, None] * d / (d @ d)
    h[100:150] = w[20] * 400
    want = torch.nn.functional.linear(h, w).argmax(-1).tolist()
    assert {want[i] for i in range(100)} == {10, 11} and set(want[100:150]) == {20}
    assert GreedyHead(w)(h) == want


def test_greedy_head_only_where_it_pays(tiny_llama, monkeypatch):
    import torch

    from tunebench import models
    from tunebench.generation import GreedyHead

    monkeypatch.setattr(models, "bf16_supported", lambda device: True)
    fp32 = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    assert isinstance(GreedyHead.for_model(fp32), GreedyHead)
    bf16 = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
    assert not isinstance(GreedyHead.for_model(bf16), GreedyHead)
    monkeypatch.setattr(models, "bf16_supported", lambda device: False)
    assert not isinstance(GreedyHead.for_model(fp32), GreedyHead)


def test_prefill_group_size_is_where_time_per_token_stops_falling():
    from tunebench.models import profile
    from tunebench.models.profile import choose_prefill_tokens

    # a CPU-like curve: flat from ~1000 rows; a GPU-like one: still falling at 4096
    assert choose_prefill_tokens({256: 1.25, 512: 1.1, 1024: 1.02, 2048: 1.0, 4096: 1.01}) == 1024
    assert choose_prefill_tokens({256: 8.0, 512: 4.0, 1024: 2.0, 2048: 1.2, 4096: 1.0, 8192: 1.0}) == 4096
    assert choose_prefill_tokens({512: 1.0, 1024: 1.0}) == 512  # a tie: the smaller, less padding
    assert choose_prefill_tokens({256: 2.0, 512: 1.0}, gain=1.0) == 256
    # a CPU keeps its measured constants: no calibration runs
    model = type("M", (), {"parameters": lambda self: iter([__import__("torch").zeros(1)])})()
    assert profile.profile_for_model(model) is profile.CPU
