"""The hand-written training paths compute what peft and transformers compute: same loss, same gradients."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tunebench.models import kernels, profile
from tunebench.models.batching import collate
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


@pytest.mark.parametrize("dropout", [0.0])
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
    l_ref, g_ref = _loss_and_grads(ref, batch, plain=True)
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


def _step_keeping(model, batch, bf16: bool = False):
    """One training step's loss, the bytes autograd keeps for backward, and the adapters' gradients."""
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size() if t.layout == torch.strided else 0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = CompletionLoss(model, False)(**batch)
    loss.backward()
    return float(loss), sum(sizes), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def _fused_pair(tiny_llama, dtype):
    """The tiny model with LoRA twice, both through the fused LoRA linear."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=dtype)
    ref, fast = _lora(copy.deepcopy(base)), _lora(copy.deepcopy(base))
    for m in (ref, fast):
        kernels.fuse_lora(m)
    return base, ref, fast


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_keeps_less_and_gives_the_same_gradients_to_the_bit(tiny_llama, dtype):
    base, ref, fast = _fused_pair(tiny_llama, dtype)
    assert kernels.fuse_swiglu(fast) == 2
    batch = _batch(base.config.vocab_size)
    bf16 = dtype == torch.bfloat16
    (l_ref, kept_ref, g_ref), (l_fast, kept_fast, g_fast) = _step_keeping(ref, batch, bf16), _step_keeping(fast, batch, bf16)
    assert l_fast == l_ref
    for n in g_ref:
        assert torch.equal(g_fast[n], g_ref[n]), n
    # one (tokens x intermediate) tensor per layer fewer
    itemsize = torch.finfo(dtype).bits // 8
    assert kept_ref - kept_fast == 2 * batch["input_ids"].numel() * base.config.intermediate_size * itemsize
    with torch.no_grad():  # inference keeps the model's own forward
        assert torch.equal(fast(input_ids=batch["input_ids"]).logits, ref(input_ids=batch["input_ids"]).logits)


# ---------------------------------------------------------------------------- LoRA dropout

def _lora_layer(d_in=48, d_out=10, r=4, p=0.2, bias=False):
    from peft import LoraConfig, get_peft_model

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(d_in, d_out, bias=bias)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    net = get_peft_model(Net(), LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=p, target_modules=["proj"]))
    with torch.no_grad():
        net.base_model.model.proj.lora_B["default"].weight.normal_()
    net.train()
    return net


def test_dropped_positions_are_an_iid_bernoulli_mask():
    """The gaps between drops of i.i.d. Bernoulli(p) trials are Geometric(p): the positions drawn
    from gaps have the mask's rate, independent neighbours and geometric gaps, on every seed."""
    from scipy import stats

    n, p = 400_003, 0.05
    masks = []
    for seed in range(5):
        pos = kernels.dropped_positions(n, p, seed, "cpu")
        assert pos.dtype == torch.int64 and bool((pos[1:] > pos[:-1]).all()) and 0 <= int(pos[0]) and int(pos[-1]) < n
        m = torch.zeros(n, dtype=torch.bool)
        m[pos] = True
        masks.append(m)
        k = int(m.sum())
        assert abs(k - n * p) < 5 * (n * p * (1 - p)) ** 0.5, k  # binomial count
        both = int((m[1:] & m[:-1]).sum())  # neighbours independent: pairs dropped together at rate p^2
        assert abs(both - (n - 1) * p * p) < 5 * ((n - 1) * p * p) ** 0.5, both
        gaps = torch.diff(pos).numpy()
        cut = 60
        observed = [int((gaps == g).sum()) for g in range(1, cut)] + [int((gaps >= cut).sum())]
        expected = [len(gaps) * p * (1 - p) ** (g - 1) for g in range(1, cut)] + [len(gaps) * (1 - p) ** (cut - 1)]
        assert stats.chisquare(observed, expected).pvalue > 1e-4
    assert torch.equal(masks[0], kernels.dropped_positions(n, p, 0, "cpu").new_zeros(n, dtype=torch.bool)
                       .index_fill_(0, kernels.dropped_positions(n, p, 0, "cpu"), True))  # a seed fixes the mask
    assert not torch.equal(masks[0], masks[1])
    assert kernels.dropped_positions(10, 0.999, 0, "cpu").numel() <= 10  # many chunks, nothing past n


def test_fused_lora_dropout_computes_peft_formula_with_its_mask():
    """Forward and every gradient equal peft's B(A(x * mask / (1 - p))) * scaling for the mask the
    fused layer drew (redrawn here from the same seed)."""
    p, d_in = 0.2, 48
    ref = _lora_layer(p=p, bias=True)
    fast = copy.deepcopy(ref)
    kernels.fuse_lora(fast)
    lora = ref.base_model.model.proj
    x = torch.randn(3, 7, d_in, requires_grad=True)
    w = torch.randn(3, 7, 10)
    torch.manual_seed(11)
    y_fast = fast(x)
    (y_fast * w).sum().backward()
    g_fast = [q.grad.clone() for q in fast.parameters() if q.requires_grad] + [x.grad.clone()]
    x.grad = None
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**62, (1,)))  # what the fused layer drew its seed from
    keep = torch.ones(x.numel())
    keep[kernels.dropped_positions(x.numel(), p, seed, "cpu")] = 0
    keep = keep.view_as(x)
    assert 0.1 < 1 - float(keep.mean()) < 0.3
    y_ref = lora.base_layer(x) + lora.lora_B["default"](lora.lora_A["default"](x * keep / (1 - p))) * lora.scaling["default"]
    (y_ref * w).sum().backward()
    g_ref = [q.grad for q in ref.parameters() if q.requires_grad] + [x.grad]
    torch.testing.assert_close(y_fast, y_ref)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b)
    fast.eval()  # no dropout outside training
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref.eval()(x))


def test_fused_lora_dropout_output_distribution_is_peft():
    """Many training-mode passes over one input: each output coordinate of the fused layer has the
    distribution of peft's own dropout layer (two-sample Kolmogorov-Smirnov), with the same mean
    and variance."""
    from scipy import stats

    ref = _lora_layer(d_in=32, d_out=4, r=4, p=0.3)
    fast = copy.deepcopy(ref)
    kernels.fuse_lora(fast)
    x = torch.randn(1, 32)
    with torch.no_grad():
        torch.manual_seed(1)
        a = torch.cat([ref(x) for _ in range(3000)])
        torch.manual_seed(2)
        b = torch.cat([fast(x) for _ in range(3000)])
    for j in range(a.shape[1]):
        assert stats.ks_2samp(a[:, j].numpy(), b[:, j].numpy()).pvalue > 1e-3, j
    torch.testing.assert_close(b.mean(0), a.mean(0), atol=4 * float(a.std(0).max()) / 3000 ** 0.5, rtol=0)
    torch.testing.assert_close(b.var(0), a.var(0), rtol=0.15, atol=0)
    assert float(a.var(0).min()) > 0  # dropout did act


def test_fused_lora_dropout_keeps_no_more_for_backward_than_no_dropout(tiny_llama):
    """peft's dropout keeps a mask and a dropped copy of each LoRA input; the fused path keeps
    what it keeps without dropout."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    batch = _batch(base.config.vocab_size)
    kept = {}
    for p in (0.0, 0.1):
        m = _lora(copy.deepcopy(base), p)
        kernels.fuse_lora(m)
        m.train()
        kept[p] = _step_keeping(m, batch)[1]
    assert kept[0.1] == kept[0.0]


# ---------------------------------------------------------------------------- what backward keeps

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_keeps_its_input_not_an_fp32_copy_and_gives_autograds_gradients(tiny_llama, dtype):
    base, ref, fast = _fused_pair(tiny_llama, dtype)
    assert kernels.fuse_rmsnorm(fast) == 2 * 2 + 1  # two per layer and the final norm
    batch = _batch(base.config.vocab_size)
    (l_ref, kept_ref, g_ref), (l_fast, kept_fast, g_fast) = _step_keeping(ref, batch), _step_keeping(fast, batch)
    assert l_fast == l_ref  # the forward is transformers' own, op for op
    tol = dict(atol=1e-5, rtol=1e-3) if dtype == torch.float32 else dict(atol=2e-3, rtol=2e-2)
    for n in g_ref:
        torch.testing.assert_close(g_fast[n], g_ref[n], **tol, msg=lambda m: f"{n}: {m}")
    if dtype == torch.bfloat16:  # fp32 copies of bf16 inputs are gone
        assert kept_fast < kept_ref
    with torch.no_grad():
        assert torch.equal(fast(input_ids=batch["input_ids"]).logits, ref(input_ids=batch["input_ids"]).logits)


def test_attention_recomputes_probabilities_above_the_size_it_keeps(tiny_llama, monkeypatch):
    """Keeping the probabilities or recomputing them in backward gives the same gradients, bit for bit."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
    batch = _batch(base.config.vocab_size)
    out = {}
    for keep in (1 << 40, 0):
        monkeypatch.setattr(profile.CPU, "keep_probs_bytes", keep)
        m = _lora(copy.deepcopy(base))
        kernels.fuse_lora(m)
        kernels.use_causal_attention(m)
        out[keep] = _step_keeping(m, batch, bf16=True)
    (l_keep, kept_keep, g_keep), (l_re, kept_re, g_re) = out[1 << 40], out[0]
    assert l_keep == l_re and kept_re < kept_keep
    for n in g_keep:
        assert torch.equal(g_keep[n], g_re[n]), n
