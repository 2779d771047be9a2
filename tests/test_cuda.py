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
