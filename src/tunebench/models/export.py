"""`tunebench export`: a training run or a model -> one directory that plain transformers loads.

The directory holds the weights with any LoRA adapter folded in (fp32 safetensors), the tokenizer
with its chat template, a generation config that stops where tunebench's generation stops, and
`tunebench_export.json` saying what it was made from. `--gguf f32|f16|q8_0` adds DIR/gguf/model-TYPE.gguf
(to_gguf). Everything is written to DIR.tmp and renamed into place at the end, so a failed
export leaves no half directory behind, and an earlier export at DIR is replaced whole.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import UserError
from ..io.layout import EXPORT_FILE, MANIFEST, RUN_MODEL_FILE, RecipeRun
from ..io.runs import environment, read_json, write_json
from . import (
    REGISTRY_SOURCE,
    ResolvedModel,
    _config,
    load_model,
    load_tokenizer,
    resolve,
    stop_ids,
)
from .batching import Formatter
from .to_gguf import GGUF_DIR, GGUF_TYPES, check_exportable, gguf_file_name, write_gguf


def export(source: str, out: Path | str, gguf_types: Sequence[str] = (), trust_remote_code: bool = False) -> dict:
    """Export `source` (a training run or a recipe run, a registered name or a model directory) to
    `out`; returns what `tunebench_export.json` records."""
    out = Path(out)
    recipe_train = RecipeRun(source).train
    # a recipe run's root (`tunebench run`'s out) stands for its training run
    if (recipe_train / RUN_MODEL_FILE).is_file():
        source = str(recipe_train)
    resolved = resolve(source)
    _check_out(out, resolved)
    for q in gguf_types:
        if q not in GGUF_TYPES:
            raise UserError(f"--gguf {q}: choose one of {', '.join(GGUF_TYPES)}")
    tok = load_tokenizer(resolved.path, trust_remote_code)
    if gguf_types:  # refused before the weights are read
        check_exportable(_config(resolved.path, trust_remote_code), tok)
    model = load_model(resolved, torch.float32, trust_remote_code, merge_adapter=True)
    _stop_where_tunebench_stops(model, tok)
    source_gguf = _source_gguf(resolved.base_name)
    info = {"source": source, "model": resolved.path, "adapter_merged": resolved.adapter,
            "base_model": resolved.base_name, "prompt_format": _prompt_format(Path(source), tok, model.config.is_encoder_decoder),
            "gguf": {}, "environment": environment()}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        general = _general(out.name, source_gguf)
        for q in dict.fromkeys(gguf_types):
            (tmp / GGUF_DIR).mkdir(exist_ok=True)
            name = f"{GGUF_DIR}/{gguf_file_name(q)}"
            info["gguf"][q] = {"file": name, **write_gguf(model, tok, tmp, tmp / name, q, general, source_gguf)}
        write_json(tmp / EXPORT_FILE, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return info


def _check_out(out: Path, resolved: ResolvedModel) -> None:
    """DIR may be new, empty, or an earlier export (replaced); nothing else is overwritten."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_FILE).is_file():
        raise UserError(f"{out}: exists and is not a tunebench export (no {EXPORT_FILE}); choose another --out")
    for read in filter(None, (resolved.path, resolved.adapter)):
        if Path(read).exists() and Path(read).resolve().is_relative_to(out.resolve()):
            raise UserError(f"{out}: the model is read from there; choose another --out")


def _prompt_format(run_dir: Path, tok, seq2seq: bool) -> str:
    """How the model was asked during tuning (a training run's `chat_template` setting; `auto`
    elsewhere), for whoever prompts the export."""
    setting = "auto"
    if (run_dir / MANIFEST).is_file() and (run_dir / RUN_MODEL_FILE).is_file():
        setting = read_json(run_dir / MANIFEST).get("config", {}).get("model", {}).get("chat_template", "auto")
    if Formatter.for_model(tok, seq2seq, setting).use_chat:
        return "chat template"
    return "prompt as encoder input" if seq2seq else "prompt + two newlines (no chat template)"


def _stop_where_tunebench_stops(model, tok) -> None:
    """tunebench's generation stops at the generation config's EOS ids and the tokenizer's EOS, and
    pads with the tokenizer's pad id: say the same in generation_config.json, so that a plain
    `generate()` on the export stops where tunebench stopped."""
    gc = model.generation_config
    ids = stop_ids(model, tok)
    if ids:
        gc.eos_token_id = ids[0] if len(ids) == 1 else ids
    if gc.pad_token_id is None:
        gc.pad_token_id = tok.pad_token_id
    if gc.bos_token_id is None and tok.bos_token_id is not None:
        gc.bos_token_id = tok.bos_token_id


def _source_gguf(base_name: Optional[str]) -> Optional[Path]:
    """The GGUF a registered base model is converted from (its metadata is carried over)."""
    if base_name in REGISTRY_SOURCE:
        path = REGISTRY_SOURCE[base_name]()
        return path if path.suffix == ".gguf" else None
    return None


def _general(name: str, source_gguf: Optional[Path]) -> dict:
    """general.* for the export: its name, and what the base model's GGUF says of the family
    (organization, basename, size, licence, languages), with that file as the base model."""
    general: dict = {"name": name}
    if source_gguf is None:
        return general
    import gguf

    fields = gguf.GGUFReader(source_gguf).fields
    for key in ("organization", "basename", "size_label", "license", "languages"):
        if f"general.{key}" in fields:
            general[key] = fields[f"general.{key}"].contents()
    if "general.name" in fields:
        general["base_model.count"] = 1
        general["base_model.0.name"] = fields["general.name"].contents()
        if "general.organization" in fields:
            general["base_model.0.organization"] = fields["general.organization"].contents()
    return general
