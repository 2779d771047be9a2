"""bench/_models.py (SmolLM2's configurations at 360m and 1.7b) and bench/size_table.py (how the bench
ratios and peak memory change with size), on hand-made inputs shaped like the scripts' --json files."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from _models import PUBLISHED_PARAMETERS, config_dict, parameters_of  # noqa: E402
from size_table import main, rows, table  # noqa: E402
from test_bench_flops import EMBEDDED_CONFIG  # noqa: E402


@pytest.mark.parametrize("size,dims", [
    ("360m", dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                  num_key_value_heads=5)),
    ("1.7b", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                  num_key_value_heads=32)),
])
def test_size_configs_are_smollm2s(size, dims):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    d = config_dict(size, EMBEDDED_CONFIG)
    assert {k: d[k] for k in dims} == dims
    # the embedded model's common fields stay; the size's own replace 135M's
    assert (d["bos_token_id"], d["eos_token_id"], d["pad_token_id"], d["hidden_act"]) == (1, 2, 2, "silu")
    assert d["rms_norm_eps"] == 1e-5 and d["tie_word_embeddings"] and d["initializer_range"] == 0.02
    assert d["rope_parameters"]["rope_theta"] == {"360m": 100000.0, "1.7b": 130000.0}[size]
    assert parameters_of(d) == PUBLISHED_PARAMETERS[size]
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(d.pop("model_type"), **d))
    assert model.num_parameters() == PUBLISHED_PARAMETERS[size]


def test_135m_parameters_by_formula():
    assert parameters_of(EMBEDDED_CONFIG) == PUBLISHED_PARAMETERS["135m"]


def _model(size):
    return {"size": size, "parameters": PUBLISHED_PARAMETERS[size], "path": f"/cache/{size}", "name": f"/cache/{size}",
            "weights": "random, seed 0", "configuration_of": "HuggingFaceTB/SmolLM2"}


def w1(size, tb, defaults, tuned, mfu, rss, model=True):
    tools = {"tunebench": {"tokens_per_s": tb, "mfu_vs_measured_peak": mfu[0]},
             "trl_defaults": {"tokens_per_s": defaults, "mfu_vs_measured_peak": mfu[1]},
             "trl_tuned": {"tokens_per_s": tuned, "mfu_vs_measured_peak": mfu[2]}}
    d = {"workload": "W1", "unit": "real tokens/s", "dropout_cost": None, "tunebench": tb,
         "peers": {"trl_defaults": defaults, "trl_tuned": tuned},
         "ratios": {"trl_defaults": tb / defaults, "trl_tuned": tb / tuned},
         "extra": {"mfu_vs_measured_peak": mfu[0], "mfu_vs_nominal_peak": None, "device": "cpu", "tools": tools,
                   "loss_match_trl_tuned": {"steps": 32, "max_abs_diff": 0.0141, "mean_abs_diff": 0.004},
                   "peak_rss_mb": dict(zip(tools, rss)), "peak_gpu_mb": dict.fromkeys(tools)}}
    if model:
        d["model"] = _model(size)
    return d


def w2(size, tb, one, pipe, rss):
    return {"workload": "W2", "unit": "dialogues/s", "model": _model(size), "tunebench": tb,
            "peers": {"one_at_a_time": one, "pipeline": pipe}, "ratios": {"one_at_a_time": tb / one, "pipeline": tb / pipe},
            "extra": {"identical_to_one_at_a_time": {"tunebench": 1.0, "pipeline": 1.0}, "device": "cpu",
                      "peak_rss_mb": dict(zip(("tunebench", "one_at_a_time", "pipeline"), rss)),
                      "peak_gpu_mb": {"tunebench": None, "one_at_a_time": None, "pipeline": None}}}


def w3(size, tb, le, rss, gpu=(None, None), device="cpu"):
    return {"workload": "W3", "unit": "examples/s", "model": _model(size), "tunebench": tb, "peers": {"lm_eval": le},
            "ratios": {"lm_eval": tb / le},
            "extra": {"peak_rss_mb": {"tunebench": rss[0], "lm_eval": rss[1]}, "device": device,
                      "peak_gpu_mb": {"tunebench": gpu[0], "lm_eval": gpu[1]}, "identical_choices": 1.0}}


def _write(tmp_path, runs):
    files = []
    for i, r in enumerate(runs):
        f = tmp_path / f"run{i}.json"
        f.write_text(json.dumps(r))
        files.append(str(f))
    return files


def test_rows_pair_sizes_and_compute_changes(tmp_path):
    from size_table import load

    runs = [w3("360m", 3.0, 1.5, (2048, 6144)), w1("360m", 160.0, 50.0, 80.0, (0.45, 0.14, 0.22), (5120, 6144, 10240)),
            w1("135m", 436.6, 125.9, 208.3, (0.534, 0.154, 0.255), (3789, 4506, 6349), model=False),
            w2("135m", 2.06, 0.37, 0.46, (2560, 1126, 5837)), w3("135m", 7.42, 3.03, (1229, 4608))]
    rs = rows([load(Path(f)) for f in _write(tmp_path, runs)])
    assert [(r["workload"], r["peer"], r["size"]) for r in rs] == [
        ("W1", "trl_defaults", "135m"), ("W1", "trl_defaults", "360m"), ("W1", "trl_tuned", "135m"),
        ("W1", "trl_tuned", "360m"), ("W2", "one_at_a_time", "135m"), ("W2", "pipeline", "135m"),
        ("W3", "lm_eval", "135m"), ("W3", "lm_eval", "360m")]
    # a file from before --model-size is the embedded 135m, its parameters unknown
    assert rs[0]["parameters"] is None and rs[1]["parameters"] == 361_821_120
    assert rs[1]["change"]["from"] == "135m"
    assert rs[1]["change"]["ratio"] == pytest.approx((160 / 50) / (436.6 / 125.9))
    assert rs[1]["change"]["rss"] == pytest.approx(5120 / 3789)
    assert rs[0]["change"] is None and rs[4]["change"] is None
    assert rs[1]["mfu"] == (0.45, 0.14) and rs[4]["mfu"] is None
    assert rs[7]["change"]["ratio"] == pytest.approx(2.0 / (7.42 / 3.03))


def test_table_markdown(tmp_path, capsys):
    runs = [w1("135m", 436.6, 125.9, 208.3, (0.534, 0.154, 0.255), (3789, 4506, 6349)),
            w1("360m", 160.0, 50.0, 80.0, (0.38, 0.14, 0.22), (5120, 6144, 10240)),
            w2("360m", 0.8, 0.12, 0.6, (3584, 2048, 4096)), w3("135m", 7.42, 3.03, (1229, 4608))]
    files = _write(tmp_path, runs)
    assert main(files + ["--out", str(tmp_path / "t.md")]) == 0
    text = capsys.readouterr().out
    assert text == (tmp_path / "t.md").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("| workload | size | parameters |") and "peak GPU" not in lines[0]
    assert len(lines) == 2 + 2 * 2 + 2 + 1
    by = {(c[0], c[1], c[5]): c for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines[2:])}
    row = by[("W1", "360m", "trl_defaults")]
    assert row[2] == "362 M" and row[4] == "160.0" and row[6] == "50.0" and row[7] == "3.20x"
    assert row[8] == ">= 3x yes" and row[9] == "38.0% (**below 40%**) / 14.0%" and row[10] == "5.0 GB / 6.0 GB"
    assert row[11] == "x0.92 vs 135m" and row[12] == "x1.35 vs 135m"
    assert by[("W1", "135m", "trl_tuned")][11] == "–" and row[13] == "–"
    assert by[("W1", "135m", "trl_tuned")][13] == "loss max abs diff 0.0141"
    assert by[("W2", "360m", "pipeline")][13] == "tunebench 100% identical, pipeline 100% identical"
    assert by[("W2", "360m", "pipeline")][4] == "0.8" and by[("W2", "360m", "pipeline")][6] == "0.6"
    assert by[("W3", "135m", "lm_eval")][13] == "100% identical choices"
    assert by[("W2", "360m", "pipeline")][8] == ">= 1.5x **no**"
    assert by[("W2", "360m", "one_at_a_time")][9] == "–"
    assert by[("W3", "135m", "lm_eval")][7] == "2.45x"


def test_table_shows_gpu_memory_when_measured():
    runs = [{**w3("135m", 40.0, 10.0, (3000, 5000), gpu=(600, 2100), device="cuda"), "file": "a"}]
    text = table(runs)
    assert "peak GPU tunebench / peer" in text.splitlines()[0]
    assert "| W3 (cuda) |" in text and "0.6 GB / 2.1 GB" in text
