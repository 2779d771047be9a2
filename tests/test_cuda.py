"""The CUDA paths: what the CPU tests pin, on a GPU. Skipped where there is none (CI has none);
run them on a GPU machine with `pytest tests/test_cuda.py`."""
from __future__ import annotations

import copy

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_fused_lora_matches_peft_on_cuda(tiny_llama):
    from test_kernels import _batch, _lora, _loss_and_grads
    from transformers import AutoModelForCausalLM

    from tunebench.models import kernels

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).cuda()
    ref, fast = _lora(copy.deepcopy(base)), _lora(copy.deepcopy(base))
    assert kernels.fuse_lora(fast) == 2 * 7
    batch = {k: v.cuda() for k, v in _batch(base.config.vocab_size).items()}
    l_ref, g_ref = _loss_and_grads(ref, batch, plain=True)
    l_fast, g_fast = _loss_and_grads(fast, batch, plain=False)
    assert l_fast == pytest.approx(l_ref, rel=1e-4)
    for n in g_ref:
        torch.testing.assert_close(g_fast[n], g_ref[n], atol=1e-4, rtol=1e-2, msg=lambda m: f"{n}: {m}")


def test_greedy_generation_on_cuda_equals_one_generate_per_prompt(tiny_llama):
    import reference
    from test_generation import PROMPTS
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebench.generation import GreedyHead, generate, supports_greedy_decode
    from tunebench.models.batching import Formatter

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).cuda().eval()
    assert supports_greedy_decode(model) and not isinstance(GreedyHead.for_model(model), GreedyHead)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    fmt = Formatter.for_model(tok, False)
    batched, _ = generate(model, fmt, PROMPTS, batch_size=5, max_new_tokens=12)
    # transformers' own greedy generate on the same GPU, one call per prompt
    texts = [tok.decode(reference.greedy(model, tok, reference.prompt_ids(tok, p, False), 12), skip_special_tokens=True).strip()
             for p in PROMPTS]
    assert len(set(texts)) == len(PROMPTS) and all(texts)
    assert batched == texts


def test_training_runs_on_cuda_and_logs_gpu_memory(tiny_llama, tmp_path):
    from test_training import _log, _overfit_data

    from tunebench.config import ModelConfig, TrainConfig
    from tunebench.training import train

    data = _overfit_data(tmp_path / "data")
    cfg = TrainConfig(method="lora", epochs=10, batch_size=4, lr=1e-2, lora_r=8, lora_dropout=0.0, precision="bf16",
                      schedule="constant", warmup_ratio=0.0, save_every=1000)
    train(ModelConfig(model=str(tiny_llama)), cfg, data, tmp_path / "out")
    log = _log(tmp_path / "out")
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
    assert log[-1]["peak_gpu_mb"] > 0


def _prompts_and_stops(tiny_llama, model):
    from test_generation import PROMPTS
    from transformers import AutoTokenizer

    from tunebench.generation import greedy_decode

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    prompts = [tok("Summarize the following conversation, please. " + p).input_ids for p in PROMPTS]
    free = greedy_decode(model, prompts, 20, [tok.eos_token_id], graphs=False)
    # stop tokens that end the rows at different steps, so that finished rows leave the batch
    stop = sorted({row[k] for row, k in zip(free, (3, 7, 11, 15, 19))})
    return prompts, free, stop, tok


def test_graphed_decode_gives_the_tokens_of_the_ungraphed_one(tiny_llama):
    from transformers import AutoModelForCausalLM

    from tunebench.generation import greedy_decode, use_decode_graphs

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).cuda().eval()
    assert use_decode_graphs(model)
    prompts, free, stop, tok = _prompts_and_stops(tiny_llama, model)
    ref = greedy_decode(model, prompts, 20, stop, graphs=False)
    assert len({len(r) for r in ref}) > 2  # rows finish at different steps and leave the batch
    assert greedy_decode(model, prompts, 20, stop, graphs=True) == ref
    assert greedy_decode(model, prompts, 20, [tok.eos_token_id], graphs=True) == free
    assert greedy_decode(model, prompts, 20, stop) == ref  # the default on a GPU: graphed


def test_graphs_off_by_environment(tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tunebench.generation import use_decode_graphs

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).cuda()
    monkeypatch.setenv("TUNEBENCH_CUDA_GRAPHS", "off")
    assert not use_decode_graphs(model)


def test_prefill_group_size_is_measured_on_the_gpu(tiny_llama):
    from transformers import AutoModelForCausalLM

    from tunebench.models import profile

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).cuda().eval()
    timings = profile.calibrate_prefill_tokens(model, candidates=(256, 1024), repeats=1)
    assert set(timings) == {256, 1024} and all(t > 0 for t in timings.values())
    prof = profile.profile_for_model(model)
    assert prof.prefill_tokens in profile.PREFILL_CANDIDATES and profile.profile_for_model(model) is prof
    assert profile.CUDA.prefill_tokens == profile.CPU.prefill_tokens  # the device's default stays as it was


@pytest.mark.parametrize("flash", [False, True], ids=["torch-varlen", "flash-attn"])
def test_padding_free_varlen_attention_equals_the_padded_batch_on_cuda(tiny_llama, flash):
    """bf16 on the GPU: the packed batch through the varlen kernel (torch's, or flash-attn's when
    installed) against the padded batch through SDPA; loss within bf16 rounding."""
    import importlib.util

    from test_padding_free import _encoded
    from transformers import AutoModelForCausalLM

    from tunebench.models import kernels
    from tunebench.models.batching import collate, pack
    from tunebench.training.model import CompletionLoss

    if flash and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    enc, tok = _encoded(tiny_llama)
    padded_model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).cuda()
    packed_model = copy.deepcopy(padded_model)
    assert kernels.use_varlen_attention(packed_model, torch.bfloat16, flash=flash) == "sdpa"
    assert packed_model.config._attn_implementation == ("flash_attention_2" if flash else kernels.VARLEN)
    batches = [collate(enc, tok.pad_token_id, False), pack(enc, tok.pad_token_id, False)]
    losses = []
    for model, batch in zip((padded_model, packed_model), batches):
        with torch.no_grad():
            losses.append(float(CompletionLoss(model, False)(**{k: v.cuda() for k, v in batch.items()})))
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)


def test_padding_free_training_on_cuda_follows_the_padded_loss_curve(tiny_llama, tmp_path):
    from test_training import _log, _overfit_data

    from tunebench.config import ModelConfig, TrainConfig
    from tunebench.training import train

    data = _overfit_data(tmp_path / "data")
    common = dict(method="lora", max_steps=4, batch_size=4, lr=1e-2, lora_r=8, lora_dropout=0.0, precision="bf16",
                  schedule="constant", warmup_ratio=0.0, save_every=1000, report_to=["none"], merge=False)
    train(ModelConfig(model=str(tiny_llama)), TrainConfig(**common), data, tmp_path / "padded")
    train(ModelConfig(model=str(tiny_llama)), TrainConfig(padding_free=True, **common), data, tmp_path / "packed")
    la, lb = _log(tmp_path / "padded"), _log(tmp_path / "packed")
    assert [r["tokens"] for r in lb] == [r["tokens"] for r in la]
    assert [r["loss"] for r in lb] == pytest.approx([r["loss"] for r in la], rel=3e-2)
