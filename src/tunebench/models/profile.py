"""Device-specific tuning, chosen in one place: the sizes that trade speed against memory or
padding, per kind of device. General code asks `profile_for(device)` instead of keeping constants.

The CPU values were measured on a 2-core AMD EPYC (AVX512-BF16, no AMX) with SmolLM2-135M (README:
Speed). No GPU has measured its own yet: CUDA uses the CPU's values until one does, and says so,
except the prefill group size, which `profile_for_model` measures on the loaded model the first time
a GPU generates with it (`calibrate_prefill_tokens`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace


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


# candidate prefill group sizes (padded tokens per forward) and the rows they are cut into
PREFILL_CANDIDATES = (256, 512, 1024, 2048, 4096, 8192)
CALIBRATION_ROW = 256
# a larger group must be this much faster per token to be chosen: beyond the knee it only adds padding and memory
PREFILL_GAIN = 0.05
_calibrated: dict[tuple, DeviceProfile] = {}


def choose_prefill_tokens(seconds_per_token: dict[int, float], gain: float = PREFILL_GAIN) -> int:
    """The smallest group size whose time per token is within `gain` of the best size's: where a
    device stops getting faster per token as forwards grow (a CPU's matmuls near ~1000 rows, a large
    GPU's much later), smaller groups waste less on padding and hold less memory."""
    best = min(seconds_per_token.values())
    return min(n for n, t in seconds_per_token.items() if t <= best * (1 + gain))


def calibrate_prefill_tokens(model, candidates: tuple[int, ...] = PREFILL_CANDIDATES, repeats: int = 3) -> dict[int, float]:
    """Seconds per token of a cache-free forward of the model's decoder at each candidate size
    (rows of CALIBRATION_ROW random tokens), the best of `repeats` after one warm-up. CUDA only."""
    import torch

    device = next(model.parameters()).device
    decoder, vocab = model.get_decoder(), model.config.vocab_size
    out = {}
    with torch.inference_mode():
        for n in candidates:
            ids = torch.randint(0, vocab, (max(n // CALIBRATION_ROW, 1), min(n, CALIBRATION_ROW)), device=device)
            times = []
            for _ in range(repeats + 1):
                torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                decoder(input_ids=ids, use_cache=False)
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
            out[n] = min(times[1:]) / ids.numel()
    return out


def profile_for_model(model) -> DeviceProfile:
    """The profile of the device a model is on; on a GPU with its prefill group size measured on this
    model (once per process, device name, model and dtype: a few seconds, once)."""
    import torch

    p = next(model.parameters())
    prof = profile_for(p.device)
    if p.device.type != "cuda":
        return prof
    key = (torch.cuda.get_device_name(p.device), model.config.name_or_path, type(model).__name__, str(p.dtype))
    if key not in _calibrated:
        _calibrated[key] = replace(prof, prefill_tokens=choose_prefill_tokens(calibrate_prefill_tokens(model)))
    return _calibrated[key]
