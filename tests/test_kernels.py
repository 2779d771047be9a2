"""The hand-written training paths compute what peft and transformers compute: same loss, same gradients."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tunebench import kernels
from tunebench.batching import collate
from tunebench.training import CompletionLoss


def _lora(model, dropout=0.0, targets="all-linear"):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    m = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=targets))
    # B starts at zero, which would hide a wrong B-path in the forward pass
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return m


def _batch(vocab: int, lengths=(23, 17, 9, 30)):
    g = torch.Generator().manual_seed(0)
    enc = []
    for n in lengths:
        ids = torch.randint(5, vocab, (n,), generator=g).tolist()
        p = n // 2
        enc.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    return collate(enc, 0, False)


def _loss_and_grads(model, batch, plain: bool):
    """plain: peft's own forward and SDPA with the padding mask, as transformers runs them."""
    loss_fn = CompletionLoss(model, False)
    if plain:
        lm = model.get_base_model()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        keep = batch["labels"][:, 1:] != -100
        loss = torch.nn.functional.cross_entropy(logits[keep].float(), batch["labels"][:, 1:][keep], reduction="sum")
        assert lm.config._attn_implementation == "sdpa"
    else:
        loss = loss_fn(**batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss), grads


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_fused_lora_and_causal_attention_match_peft_and_sdpa_with_padding_mask(tiny_llama, dropout):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    ref = _lora(copy.deepcopy(base), dropout)
    fast = _lora(copy.deepcopy(base), dropout)
    assert kernels.fuse_lora(fast) == 2 * 7  # q k v o gate up down, two layers
    assert kernels.use_causal_attention(fast) == "sdpa"
    assert fast.get_base_model().config._attn_implementation == kernels.ATTENTION
    batch = _batch(base.config.vocab_size)
    ref.train(), fast.train()
    torch.manual_seed(5)
    l_ref, g_ref = _loss_and_grads(ref, batch, plain=True)
    torch.manual_seed(5)  # same dropout masks: the fused path draws them in the same order
    l_fast, g_fast = _loss_and_grads(fast, batch, plain=False)
    assert l_fast == pytest.approx(l_ref, rel=1e-5)
    assert g_ref.keys() == g_fast.keys() and len(g_ref) == 2 * 7 * 2
    for n in g_ref:
        torch.testing.assert_close(g_fast[n], g_ref[n], atol=5e-5, rtol=1e-3, msg=lambda m: f"{n}: {m}")


def test_fused_lora_in_bf16_stays_within_bf16_rounding_of_autocast_peft(tiny_llama):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
    ref, fast = _lora(copy.deepcopy(base)), _lora(copy.deepcopy(base))
    kernels.fuse_lora(fast)
    kernels.use_causal_attention(fast)
    assert next(p for n, p in fast.named_parameters() if "lora_A" in n).dtype == torch.float32  # fp32 masters
    batch = _batch(base.config.vocab_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        l_ref, g_ref = _loss_and_grads(ref, batch, plain=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        l_fast, g_fast = _loss_and_grads(fast, batch, plain=False)
    assert l_fast == pytest.approx(l_ref, rel=2e-2)
    for n in g_ref:
        assert g_fast[n].dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(g_fast[n].flatten(), g_ref[n].flatten(), dim=0)
        assert cos > 0.99, n


def test_fused_lora_layer_with_bias_and_frozen_input():
    """A biased base layer (Qwen's q/k/v) and an input that needs no gradient (the first layer's)."""
    from peft import LoraConfig, get_peft_model

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(12, 7, bias=True)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    ref = get_peft_model(Net(), LoraConfig(r=3, lora_alpha=6, target_modules=["proj"]))
    with torch.no_grad():
        ref.base_model.model.proj.lora_B["default"].weight.normal_()
    fast = copy.deepcopy(ref)
    kernels.fuse_lora(fast)
    for needs_grad in (False, True):
        x = torch.randn(2, 5, 12, requires_grad=needs_grad)
        outs = []
        for m in (ref, fast):
            m.zero_grad()
            y = m(x)
            (y * torch.arange(7.0)).sum().backward()
            grads = [p.grad.clone() for p in m.parameters() if p.requires_grad]
            outs.append((y.detach(), grads, x.grad.clone() if needs_grad else None))
            if needs_grad:
                x.grad = None
        torch.testing.assert_close(outs[1][0], outs[0][0])
        for a, b in zip(outs[1][1], outs[0][1]):
            torch.testing.assert_close(a, b)
        if needs_grad:
            torch.testing.assert_close(outs[1][2], outs[0][2])


def test_disabled_or_merged_adapters_take_peft_own_path(tiny_llama):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    fast = _lora(base)
    kernels.fuse_lora(fast)
    ids = torch.randint(5, base.config.vocab_size, (1, 12))
    with torch.no_grad():
        with fast.disable_adapter():
            off = fast(input_ids=ids).logits
        on = fast(input_ids=ids).logits
        fast.merge_adapter()
        merged = fast(input_ids=ids).logits
    assert not torch.allclose(on, off, atol=1e-3)
    torch.testing.assert_close(merged, on, atol=1e-4, rtol=1e-4)


def test_causal_attention_hands_masks_and_caches_to_sdpa(tiny_llama):
    """Generation after training (left padding, a KV cache) must give what SDPA gives."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.padding_side = "left"
    ref = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    fast = copy.deepcopy(ref)
    kernels.use_causal_attention(fast)
    enc = tok(["Hello there, how are you", "Hi"], return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        real = enc["attention_mask"].bool()  # left-padding positions hold garbage in either path
        torch.testing.assert_close(fast(**enc).logits[real], ref(**enc).logits[real], atol=1e-5, rtol=1e-4)
        assert fast.generate(**enc, **kw).tolist() == ref.generate(**enc, **kw).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_keeps_less_and_gives_the_same_gradients_to_the_bit(tiny_llama, dtype):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=dtype)
    ref, fast = _lora(copy.deepcopy(base)), _lora(copy.deepcopy(base))
    for m in (ref, fast):
        kernels.fuse_lora(m)
    assert kernels.fuse_swiglu(fast) == 2
    batch = _batch(base.config.vocab_size)
    saved = {}
    for name, m in (("ref", ref), ("fast", fast)):
        sizes = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel() * t.element_size() if t.layout == torch.strided else 0)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = CompletionLoss(m, False)(**batch)
        loss.backward()
        saved[name] = (float(loss), sum(sizes), {n: p.grad for n, p in m.named_parameters() if p.requires_grad})
    (l_ref, kept_ref, g_ref), (l_fast, kept_fast, g_fast) = saved["ref"], saved["fast"]
    assert l_fast == l_ref
    for n in g_ref:
        assert torch.equal(g_fast[n], g_ref[n]), n
    # one (tokens x intermediate) tensor per layer fewer
    itemsize = torch.finfo(dtype).bits // 8
    assert kept_ref - kept_fast == 2 * batch["input_ids"].numel() * base.config.intermediate_size * itemsize
    with torch.no_grad():  # inference keeps the model's own forward
        assert torch.equal(fast(input_ids=batch["input_ids"]).logits, ref(input_ids=batch["input_ids"]).logits)
