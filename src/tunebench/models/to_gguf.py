"""A Hugging Face llama-architecture model (in memory, with its saved directory) -> one GGUF file.

The embedded model arrives as a GGUF; an exported one leaves as one, with the metadata that
llama.cpp and Ollama read (the keys the SmolLM2 file carries): `general.*`, the `llama.*`
hyperparameters, the tokenizer as `tokenizer.ggml.*` and the chat template. Names come from
gguf's own tensor map and q8_0 blocks from gguf's own quantizer, bit-exact with ggml's.

Scope: llama-architecture decoders (SmolLM, Llama without rope scaling) with a byte-level BPE
tokenizer (llama.cpp's `gpt2` model). Anything else is refused with one line, before a file is
started: a GGUF that loads but answers differently is worse than none.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError

# f32: lossless (the round trip is exact); f16: half the size, weights rounded; q8_0: a quarter, 8-bit blocks
GGUF_TYPES = ("f32", "f16", "q8_0")
# transformers model_type -> llama.cpp architecture. llama.cpp's llama graph applies rotary
# embeddings to interleaved pairs, transformers' to the two halves of each head: Q and K rows are
# permuted on the way out, as llama.cpp's convert_hf_to_gguf.py does (transformers' GGUF loader undoes it).
ARCHS = {"llama": "llama"}


# GGUF files go in a folder of their own: beside tokenizer.json, transformers' `gguf_file=` loading
# would take the tokenizer from that file instead of from the GGUF.
GGUF_DIR = "gguf"


def gguf_file_name(qtype: str) -> str:
    return f"model-{qtype}.gguf"


def check_exportable(config, tok) -> None:
    """Refuse, with one line, what this writer would get wrong: called before anything is written."""
    name = getattr(config, "_name_or_path", "") or "this model"
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(f"{name}: --gguf is for decoder-only models; this one is {config.model_type} "
                        "(encoder-decoder): export it without --gguf")
    if config.model_type not in ARCHS:
        raise UserError(f"{name}: --gguf writes llama-architecture models ({', '.join(ARCHS)}); this one is "
                        f"{config.model_type}: export it without --gguf")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UserError(f"{name}: --gguf does not write rope scaling ({rope.get('rope_type') or rope.get('type')}); "
                        "export it without --gguf")
    _pre_tokenizer(tok, None)
    if max(tok.get_vocab().values()) >= config.vocab_size:
        raise UserError(f"{name}: the tokenizer has ids past the model's vocab_size ({config.vocab_size}); "
                        "a GGUF cannot hold them")


def write_gguf(model, tok, hf_dir: Path, path: Path, qtype: str, general: dict, source_gguf: Optional[Path] = None) -> dict:
    """Write `path` from `model` (fp32, LoRA already folded in) and the directory it was saved to
    (`hf_dir`: merges, special tokens and chat template are read from its files by gguf's
    SpecialVocab, as llama.cpp's converter reads them). `general`: general.* strings to set.
    `source_gguf`: the GGUF the base model came from; its tokenizer settings are kept when the
    vocabulary is the same. Returns what was written (tensor count, bytes, tensor types)."""
    import gguf

    cfg = model.config  # qtype and the model were checked (check_exportable) before the weights were read
    w = gguf.GGUFWriter(path, ARCHS[cfg.model_type])
    w.add_type(gguf.GGUFType.MODEL)
    for key, value in general.items():
        if isinstance(value, list):
            w.add_array(f"general.{key}", value)
        elif isinstance(value, int):
            w.add_uint32(f"general.{key}", value)
        elif value is not None:
            w.add_string(f"general.{key}", str(value))
    _hyperparameters(w, cfg, qtype)
    _tokenizer(w, tok, cfg, hf_dir, source_gguf)
    types = _tensors(w, model, qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"tensors": sum(types.values()), "tensor_types": types, "bytes": path.stat().st_size}


def _head_dim(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def _hyperparameters(w, cfg, qtype: str) -> None:
    import gguf

    rope = getattr(cfg, "rope_parameters", None) or {}
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads or cfg.num_attention_heads)
    w.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    head_dim = _head_dim(cfg)
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg.hidden_size // cfg.num_attention_heads:  # llama.cpp assumes hidden/heads unless told
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _pre_tokenizer(tok, source_pre: Optional[str]) -> str:
    """llama.cpp's name for how text is split before BPE (`tokenizer.ggml.pre`). llama.cpp's converter
    recognises a tokenizer by hashing its output on a test string; here the tokenizer's own
    description is read instead, for the two splits a llama-architecture byte-level BPE uses."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"{tok.name_or_path}: --gguf needs a fast (tokenizer.json) tokenizer")
    import json

    desc = json.loads(backend.to_str())
    if desc["model"]["type"] != "BPE" or "ByteLevel" not in json.dumps(desc.get("pre_tokenizer")):
        raise UserError(f"{tok.name_or_path}: --gguf writes byte-level BPE tokenizers (GPT-2 style); this one is "
                        f"{desc['model']['type']} with pre-tokenizer {(desc.get('pre_tokenizer') or {}).get('type')}")
    if source_pre:
        return source_pre
    pre = desc["pre_tokenizer"]
    steps = pre.get("pretokenizers", [pre]) if pre["type"] == "Sequence" else [pre]
    kinds = [(s["type"], s.get("use_regex"), s.get("individual_digits")) for s in steps]
    if kinds == [("ByteLevel", True, None)]:
        return "gpt-2"
    if kinds == [("Digits", None, True), ("ByteLevel", True, None)]:
        return "smollm"
    raise UserError(f"{tok.name_or_path}: --gguf does not know llama.cpp's name for this pre-tokenizer "
                    f"({' + '.join(k[0] for k in kinds)})")


def _vocab(tok, n: int) -> tuple[list[str], list[int]]:
    """Every id below the model's vocab_size, as llama.cpp's converter lists them: added special
    tokens as CONTROL, other added tokens as USER_DEFINED, ids the tokenizer lacks as UNUSED."""
    import gguf

    by_id = {i: t for t, i in tok.get_vocab().items()}
    added = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(n):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _tokenizer(w, tok, cfg, hf_dir: Path, source_gguf: Optional[Path]) -> None:
    import gguf

    tokens, types = _vocab(tok, cfg.vocab_size)
    source_pre = _source_pre(source_gguf, tokens)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer(tok, source_pre))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_add_space_prefix(False)  # byte-level BPE marks spaces itself
    special = gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=cfg.vocab_size)
    # Whether BOS/EOS are added is read from what the tokenizer does, not guessed from its files.
    plain = tok("a", add_special_tokens=False).input_ids
    full = tok("a").input_ids
    special.add_special_token = {
        "bos": len(full) > len(plain) and tok.bos_token_id is not None and full[0] == tok.bos_token_id,
        "eos": len(full) > len(plain) and tok.eos_token_id is not None and full[-1] == tok.eos_token_id,
    }
    special.add_to_gguf(w, quiet=True)


def _source_pre(source_gguf: Optional[Path], tokens: list[str]) -> Optional[str]:
    """The pre-tokenizer name of the GGUF the model came from, if its vocabulary is this one."""
    if source_gguf is None:
        return None
    import gguf

    reader = gguf.GGUFReader(source_gguf)
    field = reader.fields.get("tokenizer.ggml.pre")
    listed = reader.fields.get("tokenizer.ggml.tokens")
    if field is None or listed is None or listed.contents() != tokens:
        return None
    return field.contents()


def _permute(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """transformers' rotary half-split rows -> llama.cpp's interleaved pairs (convert_hf_to_gguf's permute)."""
    return t.reshape(n_head, 2, t.shape[0] // n_head // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)


def _tensors(w, model, qtype: str) -> dict[str, int]:
    import gguf

    cfg = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    types: dict[str, int] = {}
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # llama.cpp reads a missing output.weight as tied to token_embd
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"{hf_name}: no GGUF name for this tensor in llama's tensor map")
        t = t.detach().to(torch.float32)
        if ".q_proj." in hf_name:
            t = _permute(t, cfg.num_attention_heads)
        elif ".k_proj." in hf_name:
            t = _permute(t, cfg.num_key_value_heads or cfg.num_attention_heads)
        data = t.numpy()
        if data.ndim == 1 or qtype == "f32":  # norms stay f32, as llama.cpp writes them at every file type
            w.add_tensor(name, data)
            kind = "F32"
        elif qtype == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
            w.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            kind = "Q8_0"
        else:  # f16, or a row too short for q8_0's 32-value blocks
            w.add_tensor(name, data.astype(np.float16))
            kind = "F16"
        types[kind] = types.get(kind, 0) + 1
    return types
