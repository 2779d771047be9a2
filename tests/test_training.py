"""Training on tiny local models: both model kinds, loss falls, accumulation, resume."""
import json

import pytest
import torch
from safetensors.torch import load_file

from tunebench.config import ModelConfig, TrainConfig
from tunebench.runs import write_jsonl
from tunebench.training import train


def _overfit_data(tmp_path, n=8):
    rows = [{"id": f"e{i}", "prompt": f"Summarize: #Person1#: I need item number {i}, please.",
             "completion": "They talk." if i % 2 else f"#Person1# asks for item {i} and gets it quickly today."}
            for i in range(n)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", rows[:2])
    return tmp_path


def _log(out):
    return [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_t5"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_loss_falls_on_an_overfitting_set(request, tmp_path, fixture, method):
    model = str(request.getfixturevalue(fixture))
    data = _overfit_data(tmp_path / "data")
    lr = 3e-3 if method == "full" else 1e-2
    cfg = TrainConfig(method=method, epochs=30, batch_size=4, lr=lr, lora_r=8, lora_dropout=0.0, precision="fp32",
                      schedule="constant", warmup_ratio=0.0, save_every=1000)
    s = train(ModelConfig(model=model), cfg, data, tmp_path / "out")
    log = _log(tmp_path / "out")
    assert s["steps"] == 60 and log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert s["final_val_loss"] is not None and s["final_val_loss"] < log[0]["loss"]
    info = json.loads((tmp_path / "out" / "tunebench_model.json").read_text())
    if method == "lora":
        assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
        assert (tmp_path / "out" / "merged" / "model.safetensors").is_file()  # loadable by plain transformers
        assert s["trainable_parameters"] < s["total_parameters"] / 2
    else:
        assert info["model"] == "model"


def test_merged_model_loads_in_plain_transformers_and_matches_the_adapter(tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = _overfit_data(tmp_path / "data")
    cfg = TrainConfig(method="lora", epochs=5, batch_size=4, lr=1e-2, lora_dropout=0.0, precision="fp32")
    train(ModelConfig(model=str(tiny_llama)), cfg, data, tmp_path / "out")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "merged")
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path / "out" / "adapter")
    x = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        assert torch.allclose(merged(x).logits, with_adapter(x).logits, atol=1e-4)


def test_grad_accumulation_4x2_equals_8x1(tiny_llama, tmp_path):
    """Loss is normalised by target tokens of the whole accumulated batch, not per micro-batch."""
    data = _overfit_data(tmp_path / "data")
    common = dict(method="lora", max_steps=1, lr=1e-2, lora_dropout=0.0, precision="fp32", group_by_length=False,
                  warmup_ratio=0.0, schedule="constant")
    a = train(ModelConfig(model=str(tiny_llama)), TrainConfig(batch_size=8, grad_accum=1, **common), data, tmp_path / "a")
    b = train(ModelConfig(model=str(tiny_llama)), TrainConfig(batch_size=4, grad_accum=2, **common), data, tmp_path / "b")
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-5)
    # per-micro-batch normalisation would scale the gradient by the micro-batches' token shares
    assert _log(tmp_path / "a")[0]["grad_norm"] == pytest.approx(_log(tmp_path / "b")[0]["grad_norm"], rel=1e-3)
    if torch.cuda.is_available():
        return  # Adam's first step is lr x sign(g): GPU reduction order flips the sign of near-zero gradients
    wa = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k


def test_resume_from_a_checkpoint_ends_where_an_uninterrupted_run_ends(tiny_llama, tmp_path):
    import shutil

    data = _overfit_data(tmp_path / "data")
    cfg = TrainConfig(method="lora", max_steps=6, batch_size=2, lr=5e-3, lora_dropout=0.1, precision="fp32",
                      save_every=3, keep_checkpoints=5)
    train(ModelConfig(model=str(tiny_llama)), cfg, data, tmp_path / "full")
    # a run killed after step 3: only its first checkpoint survives
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-000003", tmp_path / "cut" / "checkpoints" / "step-000003")
    s = train(ModelConfig(model=str(tiny_llama)), cfg, data, tmp_path / "cut", resume=True)
    assert s["steps"] == 6
    wa = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    la, lb = _log(tmp_path / "full"), _log(tmp_path / "cut")
    assert [r["loss"] for r in la[3:]] == [r["loss"] for r in lb[-3:]]


def test_refuses_to_overwrite_a_run_without_resume(tiny_llama, tmp_path):
    from tunebench.errors import UserError

    data = _overfit_data(tmp_path / "data")
    cfg = TrainConfig(method="lora", max_steps=1, batch_size=8, precision="fp32")
    train(ModelConfig(model=str(tiny_llama)), cfg, data, tmp_path / "out")
    with pytest.raises(UserError, match="pass --resume"):
        train(ModelConfig(model=str(tiny_llama)), cfg, data, tmp_path / "out")


def test_base_model_on_disk_is_untouched(tiny_llama, tmp_path):
    before = load_file(tiny_llama / "model.safetensors")
    data = _overfit_data(tmp_path / "data")
    train(ModelConfig(model=str(tiny_llama)), TrainConfig(method="full", max_steps=2, batch_size=8, lr=1e-2,
                                                         precision="fp32"), data, tmp_path / "out")
    after = load_file(tiny_llama / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
