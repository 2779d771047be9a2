"""bench/_flops.py: the model FLOPs W1's MFU counts, and the nominal peaks it divides by, pinned
against values worked out by hand."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from _flops import Dims, lora_flops_per_token, lora_step_flops, nominal_cpu_peak  # noqa: E402

TINY = Dims(layers=2, hidden=4, heads=2, kv_heads=1, head_dim=2, intermediate=8, vocab=10)
SMOLLM2 = Dims(layers=30, hidden=576, heads=9, kv_heads=3, head_dim=64, intermediate=1536, vocab=49152)


def test_lora_step_flops_by_hand():
    # one layer: q 4x4, k 4x2, v 4x2, o 4x4, gate 4x8, up 4x8, down 8x4
    #   weights 16+8+8+16+32+32+32 = 144, d_in+d_out 8+6+6+8+12+12+12 = 64; two layers: 288 and 128
    #   per token: 4*288 + 6*1*128 = 1920, less layer 0's q,k,v input gradients 2*(16+8+8) + 2*1*4*3 = 88: 1832
    # one sequence of 3 tokens, 2 of them carrying loss:
    #   3*1832 = 5496, head 4*4*10*2 = 320, attention 6*2*2*2*3*4 = 576; total 6392
    assert lora_flops_per_token(TINY, 1) == 1832
    assert lora_step_flops(TINY, 1, [3], [2]) == 6392
    assert lora_step_flops(TINY, 1, [3, 1], [2, 0]) == 6392 + 1832 + 6 * 2 * 2 * 2 * 1 * 2


def test_smollm2_lora_r16_per_token():
    # per layer: weights 3,538,944 and d_in+d_out 10,176; 30 layers: 106,168,320 and 305,280
    # 4*106,168,320 + 6*16*305,280 = 453,980,160, less 2*552,960 + 2*16*576*3 = 1,161,216
    assert lora_flops_per_token(SMOLLM2, 16) == 452_818_944
    # + head 4*576*49152 = 113,246,208 per loss position + attention 6*30*9*64 * n(n+1) = 103,680 n(n+1)
    assert lora_step_flops(SMOLLM2, 16, [200], [40]) == 200 * 452_818_944 + 40 * 113_246_208 + 103_680 * 200 * 201


def test_dims_from_a_llama_config():
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64)
    assert Dims.from_config(cfg) == SMOLLM2


# the embedded SmolLM2-135M-Instruct's config.json as the tunebench cache holds it (converted from the GGUF)
EMBEDDED_CONFIG = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
                   "bos_token_id": 1, "dtype": "float32", "eos_token_id": 2, "head_dim": 64, "hidden_act": "silu",
                   "hidden_size": 576, "initializer_range": 0.02, "intermediate_size": 1536,
                   "max_position_embeddings": 8192, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 9,
                   "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2, "pretraining_tp": 1,
                   "rms_norm_eps": 9.999999747378752e-06, "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
                   "tie_word_embeddings": True, "unk_token_id": 0, "use_cache": True, "vocab_size": 49152}


def test_flops_follow_the_360m_config():
    """--model-size 360m: the dimensions come from the built config, not from 135M's constants."""
    from _models import config_dict
    from transformers import AutoConfig

    d = config_dict("360m", EMBEDDED_CONFIG)
    dims = Dims.from_config(AutoConfig.for_model(d.pop("model_type"), **d))
    assert dims == Dims(layers=32, hidden=960, heads=15, kv_heads=5, head_dim=64, intermediate=2560, vocab=49152)
    # per layer: q 960x960, k and v 960x320, o 960x960, gate and up 960x2560, down 2560x960:
    #   weights 921,600 x 2 + 307,200 x 2 + 2,457,600 x 3 = 9,830,400; d_in+d_out 1920x2 + 1280x2 + 3520x3 = 16,960
    #   32 layers: 314,572,800 and 542,720; 4 x 314,572,800 + 6 x 16 x 542,720 = 1,310,392,320
    #   less layer 0's q,k,v input gradients 2 x 1,536,000 + 2 x 16 x 960 x 3 = 3,164,160
    assert lora_flops_per_token(dims, 16) == 1_307_228_160
    # + head 4 x 960 x 49152 = 188,743,680 per loss position + attention 6 x 32 x 15 x 64 = 184,320 n(n+1)
    assert lora_step_flops(dims, 16, [200], [40]) == 200 * 1_307_228_160 + 40 * 188_743_680 + 184_320 * 200 * 201


CPU = {"model_name": "", "vendor": "", "family": "6", "model": "143", "flags": set()}


def test_nominal_peak_from_amx_and_the_stated_clock():
    info = {**CPU, "model_name": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "flags": {"avx512_bf16", "amx_bf16"}}
    peak = nominal_cpu_peak(2, info)
    assert peak["flops"] == pytest.approx(2 * 2.7e9 * 1024)  # 5.5296e12
    assert "1024" in peak["derivation"] and peak["reason"] is None


@pytest.mark.parametrize("name,flags,why", [
    ("AMD EPYC", {"avx512_bf16"}, "AVX512-BF16 (no AMX)"),
    ("Intel(R) Xeon(R) Platinum 8480+", {"avx512_bf16", "amx_bf16"}, "states no nominal clock"),
    ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", {"avx2"}, "no bf16 matrix or vector unit"),
])
def test_no_nominal_peak_without_documented_facts(name, flags, why):
    peak = nominal_cpu_peak(2, {**CPU, "model_name": name, "flags": flags})
    assert peak["flops"] is None and why in peak["reason"]


def test_cpu_info_reads_the_first_processor():
    from _flops import cpu_info

    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
            "flags\t\t: fpu avx512_bf16\n\nprocessor\t: 1\nmodel name\t: other\n")
    assert cpu_info(text) == {"model_name": "AMD EPYC", "vendor": "AuthenticAMD", "family": "25", "model": "17",
                              "flags": {"fpu", "avx512_bf16"}}
