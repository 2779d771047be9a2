"""Hand-written compute paths for training: a fused LoRA linear (with LoRA dropout drawn as
dropped positions), a SwiGLU and an RMSNorm that keep less for backward, and a CPU causal
attention.

They are exact rewrites (dropout: the same distribution, see `dropped_positions`) of what peft and transformers compute, made for the case tunebench
trains in: a frozen base stored in the compute dtype (bf16 on capable CPUs), right-padded
batches, one LoRA adapter. They exist because the generic paths spend a third of a CPU step outside matmuls:

- peft's LoRA layer casts its input to the adapter's fp32 dtype and autocast casts it back, twice
  per layer and again in backward, then scales and adds in separate passes. `LoraLinearFn` does
  the base matmul, the two rank-r matmuls and the scaled add (one `addmm_`) in the compute dtype,
  with a hand-written backward that skips the frozen weight's gradient.
- `SwiGLUFn` keeps the MLP's gate and up projections for backward and recomputes silu(gate)
  there instead of keeping it too: one (tokens x intermediate) tensor less per layer, the same
  gradients.
- With right padding a causal model needs no padding mask: a real token never attends to a later
  position, and padded positions carry no loss. Without the mask, `causal_attention` runs plain
  batched matmuls with a cached causal bias, grouping query heads over their shared key/value head
  instead of copying keys and values per head (what eager attention does). On CPU at these
  lengths this beats the fused SDPA kernels, and its hand-written backward (`CausalAttentionFn`)
  keeps a third of what autograd keeps. Anything else (a mask, a KV cache, dropout, a GPU)
  goes to transformers' SDPA path unchanged.

`tests/test_kernels.py` pins them against the generic paths: same loss, same gradients.
"""
from __future__ import annotations

import inspect
import math
import types

import torch
import torch.nn.functional as F
from torch import nn

from .profile import profile_for

ATTENTION = "tunebench_causal"


def dropped_positions(n: int, p: float, seed: int, device) -> torch.Tensor:
    """Sorted flat indices of the elements an i.i.d. Bernoulli(p) mask over n elements drops.

    The gaps between successive drops of i.i.d. Bernoulli(p) trials are i.i.d. Geometric(p), so
    drawing the gaps draws exactly the distribution of the mask that `nn.Dropout` draws, with
    about p x n random numbers instead of n: at p = 0.05 a twentieth of the work, which on a CPU
    is what dropout costs (drawing 5 x 10^8 numbers a step takes longer than the step's matmuls
    at batch 8). A seed instead of the generator's state: backward draws the same positions again
    rather than keeping a mask.
    """
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    # inverse CDF, as torch's geometric_ computes it but vectorised: ceil(log(U) / log(1-p)), with
    # U on the grid (i + 1/2) / 2^32 (so each gap's distribution is exact to 2^-32, and no U is 0
    # or 1), two U from each 64-bit draw
    scale = 1.0 / math.log1p(-p)
    chunks, end, mean = [], 0, n * p
    while end < n:
        # enough gaps to pass n with overwhelming probability; the loop covers the rest
        k = int(max(n - end, 1) * p + 6 * math.sqrt(mean) + 16)
        bits = torch.randint(-2**63, 2**63 - 1, ((k + 1) // 2,), dtype=torch.int64, device=device, generator=g)
        u = torch.cat((bits & 0xFFFFFFFF, (bits >> 32) & 0xFFFFFFFF)).double()
        gaps = u.add_(0.5).mul_(2.0**-32).log_().mul_(scale).ceil_().to(torch.int64)
        pos = gaps.cumsum_(0).add_(end - 1)
        chunks.append(pos)
        end = int(pos[-1]) + 1
    pos = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    return pos[: int(torch.searchsorted(pos, n))]


def _masked(x2: torch.Tensor, dropped: torch.Tensor | None, copy: bool = True) -> torch.Tensor:
    if dropped is None:
        return x2
    return (x2.clone() if copy else x2).view(-1).index_fill_(0, dropped, 0).view(x2.shape)


class LoraLinearFn(torch.autograd.Function):
    """y = x W^T + b + s (x_d A^T) B^T, where x_d is x after LoRA dropout with probability p.

    peft's dropout (`nn.Dropout` on each LoRA layer's input) multiplies by a fresh Bernoulli
    mask scaled by 1/(1-p) and keeps that mask and the dropped copy of x for backward: two more
    activations per layer, and on a CPU the mask's random numbers cost a third of the step.
    Here the mask is a list of dropped positions (`dropped_positions`, the same distribution),
    the 1/(1-p) is folded into the scaling, and backward redraws the positions from their seed:
    what backward keeps is what it keeps without dropout.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling, p, seed):
        dt = weight.dtype
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(dt)
        a_, b_ = a.to(dt), b.to(dt)
        dropped = dropped_positions(x2.numel(), p, seed, x2.device) if p else None
        s = scaling / (1 - p)
        y = F.linear(x2, weight, bias)
        xa = _masked(x2, dropped) @ a_.t()
        y.addmm_(xa, b_.t(), alpha=s)
        ctx.save_for_backward(x2, xa, weight, a_, b_)
        ctx.s, ctx.p, ctx.seed, ctx.in_dtype = s, p, seed, x.dtype
        ctx.a_dtype, ctx.b_dtype = a.dtype, b.dtype
        return y.reshape(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        x2, xa, weight, a_, b_ = ctx.saved_tensors
        s = ctx.s
        dropped = dropped_positions(x2.numel(), ctx.p, ctx.seed, x2.device) if ctx.p else None
        dy2 = dy.reshape(-1, dy.shape[-1]).to(weight.dtype)
        dyb = dy2 @ b_  # (N, r)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = dy2 @ weight
            if dropped is None:
                dx.addmm_(dyb, a_, alpha=s)
            else:  # (not addmm with beta = s: in bf16 that takes a path 4x slower than mm)
                dx.add_(_masked(dyb @ a_, dropped, copy=False), alpha=s)
        grad_a = (dyb.t() @ _masked(x2, dropped)).mul_(s).to(ctx.a_dtype) if ctx.needs_input_grad[3] else None
        grad_b = (dy2.t() @ xa).mul_(s).to(ctx.b_dtype) if ctx.needs_input_grad[4] else None
        grad_bias = dy2.sum(0) if ctx.needs_input_grad[2] else None  # False when there is no bias
        dx = dx.reshape(*dy.shape[:-1], -1).to(ctx.in_dtype) if dx is not None else None
        return dx, None, grad_bias, grad_a, grad_b, None, None, None


def _fused_forward(self, x, *args, **kwargs):
    """peft LoraLayer.forward, through LoraLinearFn where the layer is in the plain state it covers."""
    active = [n for n in self.active_adapters if n in self.lora_A]
    base = self.get_base_layer()
    dropout = self.lora_dropout[active[0]] if len(active) == 1 else None
    if (self.disable_adapters or self.merged or args or kwargs or len(active) != 1 or active[0] in self.lora_variant
            or getattr(self, "fan_in_fan_out", False) or not isinstance(base, nn.Linear)
            or self.lora_A[active[0]].bias is not None or self.lora_B[active[0]].bias is not None
            or type(dropout) not in (nn.Identity, nn.Dropout)):
        return type(self).forward(self, x, *args, **kwargs)
    name = active[0]
    p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
    # the seed comes from torch's generator: torch.manual_seed and a checkpoint's RNG state fix the masks
    seed = int(torch.randint(0, 2**62, (1,))) if p else 0
    return LoraLinearFn.apply(x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                              self.scaling[name], p, seed)


def fuse_lora(model: nn.Module) -> int:
    """Route every peft LoRA Linear of the model through LoraLinearFn; the number of layers routed."""
    from peft.tuners.lora import Linear as LoraLinear

    n = 0
    for m in model.modules():
        if type(m) is LoraLinear:
            m.forward = types.MethodType(_fused_forward, m)
            n += 1
    return n


# ---------------------------------------------------------------------------- SwiGLU

class SwiGLUFn(torch.autograd.Function):
    """silu(gate) * up, keeping gate and up for backward and recomputing silu(gate) there.

    Autograd through `act_fn(gate) * up` also keeps silu(gate), one more (tokens x intermediate)
    tensor per layer: 190 MB over SmolLM2's 30 layers at a 2048-token batch. The backward runs
    the ops autograd would run, so the gradients are the same to the bit.
    """

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, dy):
        gate, up = ctx.saved_tensors
        d_up = dy * F.silu(gate) if ctx.needs_input_grad[1] else None
        d_gate = torch.ops.aten.silu_backward(dy * up, gate) if ctx.needs_input_grad[0] else None
        return d_gate, d_up


def _swiglu_forward(self, x):
    if not torch.is_grad_enabled():
        return type(self).forward(self, x)
    return self.down_proj(SwiGLUFn.apply(self.gate_proj(x), self.up_proj(x)))


def fuse_swiglu(model: nn.Module) -> int:
    """Route every Llama-style SiLU-gated MLP (gate_proj, up_proj, down_proj, SiLU) through
    SwiGLUFn while gradients are on; the number of MLPs routed."""
    from transformers.activations import SiLUActivation

    n = 0
    for m in model.modules():
        if (all(isinstance(getattr(m, k, None), nn.Module) for k in ("gate_proj", "up_proj", "down_proj"))
                and type(getattr(m, "act_fn", None)) in (SiLUActivation, nn.SiLU)
                and type(m).forward.__code__.co_varnames[:2] == ("self", "x")):
            m.forward = types.MethodType(_swiglu_forward, m)
            n += 1
    return n


# ---------------------------------------------------------------------------- attention

_causal_bias: dict[tuple, torch.Tensor] = {}


def _bias(n: int, dtype: torch.dtype, device) -> torch.Tensor:
    key = (n, dtype, str(device))
    if key not in _causal_bias:
        if len(_causal_bias) > 64:  # many distinct lengths: keep memory bounded
            _causal_bias.clear()
        _causal_bias[key] = torch.full((n, n), float("-inf"), dtype=dtype, device=device).triu(1)
    return _causal_bias[key]


def causal_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: (batch, heads, length, head_dim) in, (batch, length, heads, head_dim) out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    n, d = query.shape[-2], query.shape[-1]
    if (attention_mask is not None or key.shape[-2] != n or dropout or query.device.type != "cpu"
            or not getattr(module, "is_causal", True) or kwargs.get("sliding_window") or kwargs.get("s_aux") is not None
            or kwargs.get("cu_seq_lens_q") is not None
            or getattr(module, "config", None) is not None and getattr(module.config, "attn_logit_softcapping", None)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    b, h = query.shape[:2]
    kv = key.shape[1]
    # Full fine-tuning under bf16 autocast: RoPE's fp32 cos/sin lift q and k back to fp32 while v
    # stays bf16. Autocast casts them back for the forward's matmuls, but the backward runs without
    # it: take q and k in v's dtype here, as the forward's matmuls would.
    query, key = query.to(value.dtype), key.to(value.dtype)
    # (b, kv, g*n, d): the g query heads that share a key/value head become one matmul's rows
    q = query.reshape(b, kv, (h // kv) * n, d)
    out = CausalAttentionFn.apply(q, key, value, scaling if scaling is not None else d ** -0.5)
    return out.view(b, h, n, d).transpose(1, 2).contiguous(), None




class CausalAttentionFn(torch.autograd.Function):
    """softmax(q k^T s + causal) v over grouped heads, with a backward written for it.

    Autograd through the same ops keeps the fp32 softmax output and the bf16 probabilities and
    walks the casts back in fp32; this keeps only the probabilities in the compute dtype (or, for
    long batches, nothing beyond q, k, v: see DeviceProfile.keep_probs_bytes) and runs the fused softmax
    backward on them: 2.5x faster per layer and a third of the memory.
    """

    @staticmethod
    def _probs(q, k, scale):
        b, kv, gn, _ = q.shape
        n = k.shape[-2]
        s = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)
        s = s.view(b, kv, gn // n, n, n) + _bias(n, s.dtype, s.device)
        return torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype).view(b, kv, gn, n)

    @staticmethod
    def forward(ctx, q, k, v, scale):
        p = CausalAttentionFn._probs(q, k, scale)
        # the largest thing a long batch keeps for backward: recomputed above the device profile's size
        ctx.keep = p.numel() * p.element_size() <= profile_for(p.device).keep_probs_bytes
        ctx.save_for_backward(q, k, v, *([p] if ctx.keep else []))
        ctx.scale = scale
        return torch.matmul(p, v)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, *kept = ctx.saved_tensors
        # the same ops on the same inputs: the recomputed probabilities are the forward's, bit for bit
        p = kept[0] if ctx.keep else CausalAttentionFn._probs(q, k, ctx.scale)
        dout = dout.to(v.dtype)
        dv = torch.matmul(p.transpose(-1, -2), dout)  # sums over the g query heads of each kv head
        dp = torch.matmul(dout, v.transpose(-1, -2))
        ds = torch.ops.aten._softmax_backward_data(dp, p, -1, p.dtype).mul_(ctx.scale)
        return torch.matmul(ds, k), torch.matmul(ds.transpose(-1, -2), q), dv, None


VARLEN = "tunebench_varlen"


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface for padding-free batches (`batching.pack`) on a GPU without
    flash-attn installed: torch's own varlen flash kernel (`torch.nn.attention.varlen`, half
    precision on CUDA) over each sequence's block, given the batch's `cu_seq_lens_q`. Anything
    else goes to SDPA with the block-diagonal mask transformers built from the position ids:
    exact, but it computes the whole square of the packed row."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    fn = _torch_varlen()
    cu = kwargs.get("cu_seq_lens_q")
    if (fn is None or cu is None or query.shape[0] != 1 or not query.is_cuda or dropout or kwargs.get("sliding_window")
            or query.dtype not in (torch.float16, torch.bfloat16) or key.shape[-2] != query.shape[-2]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # (tokens, heads, head_dim)
    params = inspect.signature(fn).parameters
    extra = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    if "enable_gqa" in params:
        extra["enable_gqa"] = True
    elif k.shape[1] != q.shape[1]:
        k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
    longest = int(kwargs.get("max_length_q") or int((cu[1:] - cu[:-1]).max()))
    out = fn(q, k, v, cu.to(torch.int32), cu.to(torch.int32), longest, longest, scale=scaling, **extra)
    return out[None], None


def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch before 2.9
        return None
    return varlen_attn


def use_varlen_attention(model: nn.Module, dtype: torch.dtype, flash: bool | None = None) -> str | None:
    """Attention for padding-free training on a GPU: flash-attn's varlen kernel through transformers
    when flash-attn is installed and the compute dtype is half precision (it has no fp32 kernel),
    else `varlen_attention`; `flash=False` keeps flash-attn out. The implementation the model had,
    to restore later; None if unchanged."""
    import importlib.util

    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = getattr(lm.config, "_attn_implementation", None)
    if before not in ("sdpa", "eager") or not hasattr(lm, "set_attn_implementation"):
        return None
    flash = (flash is not False and importlib.util.find_spec("flash_attn") is not None
             and dtype in (torch.float16, torch.bfloat16))
    if not flash:
        AttentionInterface.register(VARLEN, varlen_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN, sdpa_mask)
    try:
        lm.set_attn_implementation("flash_attention_2" if flash else VARLEN)
    except (ValueError, NotImplementedError, AttributeError, ImportError):
        return None
    return before


# ---------------------------------------------------------------------------- RMSNorm

class RMSNormFn(torch.autograd.Function):
    """Llama's RMSNorm with a frozen weight: w * (x * rsqrt(mean(x^2) + eps)), normalised in fp32.

    Autograd keeps the fp32 copy of x (twice the bytes of a bf16 x); this keeps x as it came
    and the per-row rsqrt, and recomputes the fp32 copy in backward (the same values: a bf16 to
    fp32 cast is exact).
    """

    @staticmethod
    def forward(ctx, x, weight, eps):
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, weight, rstd)
        return weight * (xf * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        xf = x.float()
        g = (dy * weight).float()  # d(normalised x), as the forward's cast back to x's dtype passes it on
        # d/dx of x * rstd(x): (g - x * rstd^2 * mean(g * x)) * rstd
        dx = (g - xf * (rstd * rstd * (g * xf).mean(-1, keepdim=True))) * rstd
        return dx.to(x.dtype), None, None


def _rmsnorm_forward(self, x):
    if not torch.is_grad_enabled() or self.weight.requires_grad:
        return type(self).forward(self, x)
    return RMSNormFn.apply(x, self.weight, self.variance_epsilon)


def fuse_rmsnorm(model: nn.Module) -> int:
    """Route every Llama-style RMSNorm of the model through RMSNormFn while gradients are on and
    its weight is frozen (LoRA); the number of norms routed."""
    n = 0
    for m in model.modules():
        if (type(m).__name__.endswith("RMSNorm") and isinstance(getattr(m, "weight", None), nn.Parameter)
                and isinstance(getattr(m, "variance_epsilon", None), float)
                and type(m).forward.__code__.co_varnames[:2] == ("self", "hidden_states")
                and "self.weight * hidden_states.to(input_dtype)" in _source(type(m).forward)):
            m.forward = types.MethodType(_rmsnorm_forward, m)
            n += 1
    return n


def _source(fn) -> str:
    import inspect

    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, causal_attention)
    # the SDPA mask builder: no mask for an unpadded causal batch, a real mask (and the SDPA
    # fallback above) whenever padding or a cache makes one necessary
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def use_causal_attention(model: nn.Module) -> str | None:
    """Switch a decoder-only model to `causal_attention`; the implementation it had, to restore later."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = getattr(lm.config, "_attn_implementation", None)
    if before not in ("sdpa", "eager") or not hasattr(lm, "set_attn_implementation"):
        return None
    register_attention()
    try:
        lm.set_attn_implementation(ATTENTION)
    except (ValueError, NotImplementedError, AttributeError):  # a model that does not go through the interface
        return None
    return before
