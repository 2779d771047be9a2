"""What W1's model FLOP utilisation counts and divides by: the matmul FLOPs a LoRA training step
needs, and the processor's nominal bf16 peak where documented facts give it.

Model FLOPs of one LoRA step (frozen base weights, adapters of rank r on every linear layer of the
decoder blocks, the LM head frozen; a multiply-add is 2 FLOPs; only matrix multiplies count, not
norms, activations, softmax or RoPE), summed over the step's sequences of n real tokens
(padding excluded) of which c carry loss (completion tokens, the positions whose next token is a
label):

    per real token, for each decoder linear layer W (d_in x d_out) and its adapter B A:
        4 d_in d_out          forward and input gradient of the frozen W (no weight gradient)
      + 6 r (d_in + d_out)    the adapter: forward, its weight gradients, its input gradient
      except where nothing before the layer trains (layer 0's q, k and v projections read the
      frozen embedding): there the input gradients, 2 d_in d_out + 2 r d_in, are not needed
    per loss position:
        4 hidden vocab        LM head forward and input gradient (frozen: no weight gradient;
                              it runs only where the loss is taken)
    per sequence and layer:
        6 heads head_dim n (n + 1)   causal attention: the n (n + 1) / 2 query-key pairs of the
                              lower triangle, 2 FLOPs per pair and head dimension for the scores
                              and 2 for the weighted values (forward 2 heads head_dim n (n + 1)),
                              and the backward's four matmuls (dQ, dK, dV, d attention weights)
                              twice that
    the embedding lookup: none (a gather, not a matmul)

PaLM's 12 x layers x hidden x sequence length per token counts the full square of scores; a
causal model needs the lower triangle, half of it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dims:
    """The shapes of a Llama-style decoder (grouped-query attention, SwiGLU MLP)."""
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, cfg) -> "Dims":
        heads = cfg.num_attention_heads
        return cls(cfg.num_hidden_layers, cfg.hidden_size, heads, getattr(cfg, "num_key_value_heads", None) or heads,
                   getattr(cfg, "head_dim", None) or cfg.hidden_size // heads, cfg.intermediate_size, cfg.vocab_size)

    def projections(self) -> list[tuple[str, int, int]]:
        """(name, d_in, d_out) of one decoder layer's linear layers."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
                ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]


# layer 0's projections whose input is the (frozen) embedding, through the frozen input norm
READS_EMBEDDING = ("q_proj", "k_proj", "v_proj")


def lora_flops_per_token(d: Dims, r: int) -> int:
    """The per-real-token part: decoder linear layers with their adapters."""
    full = sum(4 * i * o + 6 * r * (i + o) for _, i, o in d.projections()) * d.layers
    saved = sum(2 * i * o + 2 * r * i for name, i, o in d.projections() if name in READS_EMBEDDING)
    return full - saved


def lora_step_flops(d: Dims, r: int, lengths: list[int], loss_positions: list[int]) -> int:
    """Model FLOPs of training on these sequences (real lengths, positions carrying loss)."""
    per_token = lora_flops_per_token(d, r)
    head = 4 * d.hidden * d.vocab
    attn = 6 * d.layers * d.heads * d.head_dim
    return sum(per_token * n + head * c + attn * n * (n + 1) for n, c in zip(lengths, loss_positions, strict=True))


# ---------------------------------------------------------------------------- nominal peaks

# bf16 FLOPs per cycle and core, where the vendor documents them. Intel: a 4th-gen (and later)
# Xeon core's AMX tile unit performs 1024 BF16 operations per cycle (Intel's AMX documentation).
AMX_BF16_FLOPS_PER_CYCLE = 1024
# GPUs: dense bf16 tensor-core peak from the datasheet (which prints twice this, "with sparsity")
GPU_BF16_DENSE = {"NVIDIA H200": (989.5e12, "NVIDIA H200 SXM datasheet: 1,979 TFLOPS bf16 tensor core with 2:4 sparsity, "
                                            "989.5 TFLOPS dense")}


def cpu_info(text: str | None = None) -> dict:
    """Model name, flags, family and model number of the first processor in /proc/cpuinfo."""
    text = Path("/proc/cpuinfo").read_text() if text is None else text
    info = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return {"model_name": info.get("model name", ""), "vendor": info.get("vendor_id", ""),
            "family": info.get("cpu family"), "model": info.get("model"), "flags": set(info.get("flags", "").split())}


def nominal_cpu_peak(threads: int, info: dict | None = None) -> dict:
    """threads x nominal clock x documented bf16 FLOPs per cycle, or None with the reason.

    The nominal clock is the one the model name states ("@ 2.10GHz", Intel's brand string);
    /proc/cpuinfo's "cpu MHz" is a current or reported frequency, not a nominal one.
    """
    info = cpu_info() if info is None else info
    name = info["model_name"]
    out = {"flops": None, "processor": name, "cpu_family": info["family"], "cpu_model": info["model"],
           "derivation": None, "reason": None}
    if "amx_bf16" not in info["flags"]:
        which = ("AVX512-BF16 (no AMX)" if "avx512_bf16" in info["flags"] else "no bf16 matrix or vector unit")
        out["reason"] = (f"'{name}' (family {info['family']}, model {info['model']}) has {which}: the script knows "
                         "no vendor-documented bf16 FLOPs per cycle for it")
        return out
    clock = re.search(r"@\s*([0-9.]+)\s*GHz", name)
    if not clock:
        out["reason"] = f"the model name '{name}' states no nominal clock"
        return out
    ghz = float(clock.group(1))
    out["flops"] = threads * ghz * 1e9 * AMX_BF16_FLOPS_PER_CYCLE
    out["derivation"] = (f"{threads} cores (one per thread) x {ghz} GHz (model name) x {AMX_BF16_FLOPS_PER_CYCLE} "
                         "bf16 FLOPs per cycle (Intel AMX, per core)")
    return out


def nominal_peak(device: str, threads: int) -> dict:
    if device == "cpu":
        return nominal_cpu_peak(threads)
    import torch

    name = torch.cuda.get_device_name()
    if name in GPU_BF16_DENSE:
        flops, how = GPU_BF16_DENSE[name]
        return {"flops": flops, "processor": name, "derivation": how, "reason": None}
    return {"flops": None, "processor": name, "derivation": None,
            "reason": f"no datasheet bf16 peak known to the script for '{name}'"}
