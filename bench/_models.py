"""The model every bench script and every tool in it loads, at one of SmolLM2's sizes (`--model-size`).

Throughput does not depend on the weights' values, so the larger sizes are SmolLM2's own
configurations with random weights: 135m is the real embedded model (`smollm2-135m-instruct`,
today's behaviour exactly); 360m and 1.7b are built from the embedded model's config.json (token
ids, activation, attention layout) with the size fields of HuggingFaceTB/SmolLM2-360M-Instruct and
SmolLM2-1.7B-Instruct, initialised from the config (normal, std `initializer_range` 0.02; RMSNorm
weights 1) with a fixed seed, and saved once as fp32 safetensors with the embedded model's
tokenizer, chat template and generation config under `<tunebench cache>/bench-models/<size>/`
(written to a temporary directory first, then renamed into place). Later runs, and every tool of a
run (tunebench and its peers), load that same directory.

With random weights the logits are near-uniform: generation does not stop at EOS (every dialogue
runs to max_new_tokens), multiple-choice accuracy is chance, training losses start near
ln(vocab). Each script compares tools on the same weights, so the comparisons still hold.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED = "smollm2-135m-instruct"
SIZES = ("135m", "360m", "1.7b")
SEED = 0
RECIPE = 1  # bumped when the way a model is built changes, so that stale caches are rebuilt

# The size fields of SmolLM2's published configs (config.json of HuggingFaceTB/SmolLM2-360M-Instruct
# and SmolLM2-1.7B-Instruct); the rest comes from the embedded 135M model's config.json.
OVERRIDES = {
    "360m": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 15,
             "num_key_value_heads": 5, "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192,
             "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True},
    "1.7b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
             "num_key_value_heads": 32, "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192,
             "rope_theta": 130000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True},
}
# parameter counts of the published models (tied embedding counted once): the built config must match
PUBLISHED_PARAMETERS = {"135m": 134_515_008, "360m": 361_821_120, "1.7b": 1_711_376_384}
HUB_NAMES = {"135m": "HuggingFaceTB/SmolLM2-135M-Instruct", "360m": "HuggingFaceTB/SmolLM2-360M-Instruct",
             "1.7b": "HuggingFaceTB/SmolLM2-1.7B-Instruct"}
# what is copied from the embedded model's directory beside the new weights
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "generation_config.json")


def add_size_arg(ap) -> None:
    ap.add_argument("--model-size", choices=SIZES, default="135m",
                    help="135m: the embedded SmolLM2-135M-Instruct; 360m, 1.7b: SmolLM2's configurations with random "
                         "weights (same for every tool, built once into the tunebench cache)")


def config_dict(size: str, base: dict) -> dict:
    """The config.json of a size: the embedded model's `base`, with the size's fields."""
    cfg = {k: v for k, v in base.items() if k not in ("_model_name_or_path", "_name_or_path", "transformers_version")}
    over = dict(OVERRIDES[size])
    theta = over.pop("rope_theta")
    cfg.update(over)
    cfg["rope_parameters"] = {**(base.get("rope_parameters") or {}), "rope_theta": theta, "rope_type": "default"}
    cfg.pop("rope_theta", None)
    cfg.pop("rope_scaling", None)
    cfg["dtype"] = "float32"
    return cfg


def parameters_of(cfg: dict) -> int:
    """Parameters of a Llama config (no biases; a tied LM head counted once)."""
    h, i, v, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    return v * h * (1 if cfg.get("tie_word_embeddings") else 2) + n * layer + h


def cache_root() -> Path:
    from tunebench.models import cache_dir

    return cache_dir() / "bench-models"


def spec(size: str, base: dict) -> dict:
    """What a built directory records about itself (and is checked against on reuse)."""
    cfg = config_dict(size, base)
    return {"size": size, "seed": SEED, "recipe": RECIPE, "init": "random (transformers' from_config, "
            f"initializer_range {cfg.get('initializer_range')})", "configuration_of": HUB_NAMES[size],
            "parameters": parameters_of(cfg), "overrides": OVERRIDES[size]}


def _build(size: str, embedded: Path, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    base = json.loads((embedded / "config.json").read_text())
    cfg_dict = config_dict(size, base)
    model_type = cfg_dict.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **cfg_dict)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    n = model.num_parameters()
    if n != PUBLISHED_PARAMETERS[size]:
        raise SystemExit(f"{size}: built {n:,} parameters, the published model has {PUBLISHED_PARAMETERS[size]:,}")
    model.config.name_or_path = f"smollm2-{size}-random"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{size}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        del model
        for name in TOKENIZER_FILES:  # the embedded model's tokenizer, chat template and generation config
            if (embedded / name).is_file():
                shutil.copy2(embedded / name, tmp / name)
        (tmp / "bench_model.json").write_text(json.dumps(spec(size, base), indent=2))
        tmp.chmod(0o755)  # mkdtemp makes it private
        if _built(target, spec(size, base)):  # another process built it meanwhile: keep that one
            shutil.rmtree(tmp)
            return
        if target.exists():  # a stale build (another recipe): replaced
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _built(target: Path, want: dict) -> bool:
    marker = target / "bench_model.json"
    return marker.is_file() and json.loads(marker.read_text()) == want


def model_path(size: str) -> str:
    """The directory of a size's weights, built on first use. 135m: the embedded model's own cache."""
    from tunebench import models

    embedded = Path(models.resolve(EMBEDDED).path)
    if size == "135m":
        return str(embedded)
    target = cache_root() / size
    want = spec(size, json.loads((embedded / "config.json").read_text()))
    if not _built(target, want):
        print(f"building the {size} bench model (SmolLM2's configuration, random weights, seed {SEED}) in {target}",
              flush=True)
        try:
            _build(size, embedded, target)
        except OSError:
            # another process renamed its build into place first: use it if it is the one wanted
            if not _built(target, want):
                raise
    return str(target)


def model_name(size: str) -> str:
    """What the scripts hand to tunebench (`--model`, `models.load`): the registered name for 135m, so
    that it runs exactly as before, else the built directory."""
    return EMBEDDED if size == "135m" else model_path(size)


def model_record(size: str) -> dict:
    """The `model` entry of a script's --json: size, parameters, path, and whether the weights are real."""
    from safetensors import safe_open

    path = Path(model_path(size))
    cfg = json.loads((path / "config.json").read_text())
    n = 0
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(f, "pt") as sf:
            for k in sf.keys():
                if k == "lm_head.weight" and cfg.get("tie_word_embeddings"):
                    continue
                count = 1
                for d in sf.get_slice(k).get_shape():
                    count *= d
                n += count
    return {"size": size, "parameters": n, "path": str(path), "name": model_name(size),
            "weights": "real (embedded SmolLM2-135M-Instruct)" if size == "135m" else f"random, seed {SEED}",
            "configuration_of": HUB_NAMES[size]}
