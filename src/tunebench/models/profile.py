"""Device-specific tuning, chosen in one place: the sizes that trade speed against memory or
padding, per kind of device. General code asks `profile_for(device)` instead of keeping constants.

The CPU values were measured on a 2-core AMD EPYC (AVX512-BF16, no AMX) with SmolLM2-135M (README:
Speed). No GPU has measured its own yet: CUDA uses the CPU's values until one does, and says so.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DeviceProfile:
    name: str
    # generation: near-equal prompts are prefilled together up to this many padded tokens, while at
    # most `prefill_padding` of them are padding (prefill matmuls of ~200 rows run at ~80% of the
    # CPU's fp32 peak, of ~1000 rows at ~98%)
    prefill_tokens: int
    prefill_padding: float
    # a prompt prefilled after a cached prefix takes SDPA's masked path (slightly slower per token than
    # the causal one): sharing pays once the prefix is this long
    shared_prefix_min: int
    # greedy decoding bounds a batch's cache at batch_size rows of this many tokens
    decode_row_tokens: int
    # benchmark generation decodes this many examples in lock step, whatever --batch-size says: a
    # decode step costs about the same for 8 rows as for 64 on a CPU (it reads the weights either way)
    generate_rows: int
    # training attention keeps its probabilities for backward up to this size per layer and
    # recomputes them above it (8 x 510 tokens of SmolLM2: 36 MB a layer, 1.1 GB over 30 layers)
    keep_probs_bytes: int
    measured: bool = True


CPU = DeviceProfile(name="cpu", prefill_tokens=1024, prefill_padding=0.05, shared_prefix_min=8, decode_row_tokens=512,
                    generate_rows=64, keep_probs_bytes=16 * 2**20)
# not measured on a GPU: the CPU's values, so that a GPU run does what the CPU run does
CUDA = DeviceProfile(name="cuda", prefill_tokens=CPU.prefill_tokens, prefill_padding=CPU.prefill_padding,
                     shared_prefix_min=CPU.shared_prefix_min, decode_row_tokens=CPU.decode_row_tokens,
                     generate_rows=CPU.generate_rows, keep_probs_bytes=CPU.keep_probs_bytes, measured=False)


def profile_for(device) -> DeviceProfile:
    """The profile of a torch.device (or its type as a string)."""
    kind = getattr(device, "type", device)
    return CUDA if kind == "cuda" else CPU
