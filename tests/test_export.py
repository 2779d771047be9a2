"""`tunebench export`: a run out as plain transformers files (LoRA folded in) and as GGUF.

The plain side is checked against peft's own merge and transformers' own loading; the GGUF side
by loading the file back through transformers' GGUF loader (`gguf_file=`), which undoes llama.cpp's
Q/K permutation: every tensor must come back as exactly the f16 rounding, or gguf's own q8_0
round trip, of the exported one.
"""
import json

import pytest
import torch
from conftest import dialogsum_rows

from tunebench import models
from tunebench.cli import main
from tunebench.config import ModelConfig, TrainConfig
from tunebench.errors import UserError
from tunebench.generation import generate
from tunebench.models.batching import Formatter
from tunebench.models.export import export
from tunebench.pipeline import train_stage


@pytest.fixture(scope="module")
def lora_run(tiny_llama, prepared, tmp_path_factory):
    """A training run that kept only its adapter (merge: false): export folds it in with peft."""
    out = tmp_path_factory.mktemp("lora-run")
    cfg = TrainConfig(method="lora", max_steps=2, batch_size=2, lr=1e-2, lora_r=8, lora_dropout=0.0, precision="fp32",
                      merge=False, report_to=["none"])
    train_stage(ModelConfig(model=str(tiny_llama)), cfg, prepared, out)
    return out


@pytest.fixture(scope="module")
def exported(lora_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-tuned"
    assert main(["export", str(lora_run), "--out", str(out), "--gguf", "f32", "--gguf", "f16", "--gguf", "q8_0"]) == 0
    return out


def _prompts(n=4):
    return ["Summarize the following conversation.\n\n" + r["dialogue"] for r in dialogsum_rows("dev", n)]


def test_the_export_is_the_merged_model_that_plain_transformers_loads(exported, lora_run, tiny_llama):
    import reference
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert not (lora_run / "merged").exists()
    plain = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
                                       lora_run / "adapter").merge_and_unload()
    ids = torch.tensor([list(range(1, 40))])
    with torch.no_grad():
        got, want, before = plain(ids).logits, merged(ids).logits, base(ids).logits
    assert torch.equal(got, want)
    assert (got - before).abs().max() > 1e-3  # the adapter did change the model

    tok = AutoTokenizer.from_pretrained(exported)
    assert tok.chat_template == AutoTokenizer.from_pretrained(tiny_llama).chat_template
    assert (plain.generation_config.eos_token_id, plain.generation_config.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    # greedy completions: plain generate() on the export, one prompt at a time, equal tunebench's own
    ours, _ = generate(*_loaded(str(lora_run)), _prompts(), batch_size=4, max_new_tokens=12, progress=False)
    theirs = [tok.decode(reference.greedy(plain, tok, reference.prompt_ids(tok, p, False), 12), skip_special_tokens=True).strip()
              for p in _prompts()]
    assert ours == theirs
    info = json.loads((exported / "tunebench_export.json").read_text())
    assert (info["adapter_merged"], info["base_model"], info["prompt_format"]) == (str(lora_run / "adapter"), str(tiny_llama),
                                                                                   "chat template")


def _loaded(name):
    model, tok, _ = models.load(name, torch.float32)
    return model, Formatter.for_model(tok, False)


@pytest.mark.parametrize("qtype", ["f32", "f16", "q8_0"])
def test_gguf_round_trips_through_transformers(exported, qtype):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    back = AutoModelForCausalLM.from_pretrained(exported / "gguf", gguf_file=f"model-{qtype}.gguf", dtype=torch.float32)
    want = plain.state_dict()
    got = back.state_dict()
    assert set(got) == set(want)
    for name, t in want.items():
        if t.dim() == 1 or qtype == "f32":
            expect = t  # norms are written in f32 at every type
        elif qtype == "f16":
            expect = t.half().float()
        else:
            q8 = gguf.GGMLQuantizationType.Q8_0
            expect = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(t.numpy(), q8), q8))
        assert torch.equal(got[name], expect), name
    # the logits then follow: the model rebuilt from the GGUF computes what the export rounded alike computes
    rounded = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    rounded.load_state_dict(got)
    ids = torch.tensor([list(range(1, 60))])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, rounded(ids).logits, rtol=0, atol=1e-5)
        if qtype == "f32":  # lossless: the GGUF computes exactly what the export computes
            assert torch.equal(back(ids).logits, plain(ids).logits)

    # the tokenizer transformers builds from the GGUF alone: same chat template, same prompt ids
    tok = AutoTokenizer.from_pretrained(exported / "gguf", gguf_file=f"model-{qtype}.gguf")
    fmt = _loaded(str(exported))[1]
    assert tok.chat_template == fmt.tokenizer.chat_template
    for p in _prompts():
        chat = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"]
        assert chat == fmt.prompt_ids(p)
        assert tok(p).input_ids == fmt.tokenizer(p).input_ids  # BOS added by both, as the tiny tokenizer does


def test_gguf_metadata_is_what_llama_cpp_reads(exported, tiny_llama):
    import gguf

    r = gguf.GGUFReader(exported / "gguf" / "model-q8_0.gguf")
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    cfg = json.loads((tiny_llama / "config.json").read_text())
    assert (f["general.architecture"], f["general.name"], f["general.file_type"]) == ("llama", "tiny-tuned", 7)
    assert (f["llama.block_count"], f["llama.embedding_length"], f["llama.attention.head_count"],
            f["llama.attention.head_count_kv"], f["llama.rope.dimension_count"]) == (2, 64, 4, 2, 16)
    assert f["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])
    assert (f["tokenizer.ggml.model"], f["tokenizer.ggml.pre"], f["tokenizer.ggml.add_bos_token"]) == ("gpt2", "gpt-2", True)
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"], f["tokenizer.ggml.padding_token_id"]) == (
        cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"])
    assert len(f["tokenizer.ggml.tokens"]) == cfg["vocab_size"]
    assert f["tokenizer.ggml.token_type"][:5] == [gguf.TokenType.CONTROL] * 5  # <pad> <s> </s> <unk> <|im_start|>
    assert "output.weight" not in {t.name for t in r.tensors}  # tied to token_embd, as llama.cpp reads it
    kinds = {t.name: t.tensor_type.name for t in r.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["blk.0.attn_norm.weight"] == "F32"


def test_export_replaces_an_earlier_export_and_nothing_else(exported, tiny_llama, prepared, tmp_path):
    out = tmp_path / "again"
    export(str(tiny_llama), out)
    (out / "stale.txt").write_text("from before")
    export(str(tiny_llama), out)
    assert not (out / "stale.txt").exists() and not (out / "gguf").exists()
    with pytest.raises(UserError, match="exists and is not a tunebench export"):
        export(str(tiny_llama), prepared)
    with pytest.raises(UserError, match="the model is read from there"):
        export(str(exported), exported)


def test_a_recipe_run_exports_its_training_run(lora_run, tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "train").symlink_to(lora_run)
    info = export(str(tmp_path / "recipe"), tmp_path / "out")
    assert info["adapter_merged"] == str(tmp_path / "recipe" / "train" / "adapter")


def test_gguf_of_an_encoder_decoder_is_refused_in_one_line(tiny_t5, tmp_path):
    with pytest.raises(UserError, match=r"--gguf is for decoder-only models; this one is t5 \(encoder-decoder\)"):
        export(str(tiny_t5), tmp_path / "t5", ["f16"])
    assert not (tmp_path / "t5").exists()
    export(str(tiny_t5), tmp_path / "t5")  # without --gguf it is exported
    assert (tmp_path / "t5" / "model.safetensors").is_file()


@pytest.mark.e2e
def test_export_of_the_default_model_on_dialogsum(tmp_path):
    """The real default model: plain transformers on the export generates what tunebench generates,
    and the f16 GGUF read back by transformers computes what tunebench's model computes once its
    matrices are rounded to f16; the rounding itself moves the logits by a few hundredths. The f32
    GGUF gives tunebench's logits exactly."""
    import copy

    import reference
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "smollm2"
    assert main(["export", "smollm2-135m-instruct", "--out", str(out), "--gguf", "f16", "--gguf", "f32"]) == 0
    model, fmt = _loaded("smollm2-135m-instruct")
    prompts = _prompts(3)
    ours, _ = generate(model, fmt, prompts, batch_size=3, max_new_tokens=24, progress=False)
    tok = AutoTokenizer.from_pretrained(out)
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = [reference.prompt_ids(tok, p, False) for p in prompts]
    assert ids == [fmt.prompt_ids(p) for p in prompts]
    assert ours == [tok.decode(reference.greedy(plain, tok, i, 24), skip_special_tokens=True).strip() for i in ids]

    back = AutoModelForCausalLM.from_pretrained(out / "gguf", gguf_file="model-f16.gguf", dtype=torch.float32)
    g_tok = AutoTokenizer.from_pretrained(out / "gguf", gguf_file="model-f16.gguf")
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    writer, rounding = [], []
    for p, i in zip(prompts, ids):
        assert g_tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"] == i
        with torch.no_grad():
            got = back(torch.tensor([i])).logits
            writer.append((got - rounded(torch.tensor([i])).logits).abs().max().item())
            rounding.append((got - model(torch.tensor([i])).logits).abs().max().item())
    assert max(writer) <= 1e-4, writer
    # f16 rounding of the weights alone: 0.062 at most on the 20 prompts of the demo's tuned model
    # (bench/gguf_roundtrip.py, README: Models out); logits here reach about 45
    assert max(rounding) <= 0.15, rounding
    # the f32 file is lossless: transformers reads back exactly tunebench's model
    lossless = AutoModelForCausalLM.from_pretrained(out / "gguf", gguf_file="model-f32.gguf", dtype=torch.float32)
    with torch.no_grad():
        for i in ids:
            assert torch.equal(lossless(torch.tensor([i])).logits, model(torch.tensor([i])).logits)
