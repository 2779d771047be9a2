"""Training on tiny local models: two steps pinned to a plain transformers/peft loop, both model
kinds, loss falls, accumulation, resume."""
import json

import pytest
import reference
import torch
from safetensors.torch import load_file
from torch import nn

from tunebench.config import ModelConfig, TrainConfig
from tunebench.io.runs import write_jsonl
from tunebench.training import train


def _rows(n=8):
    return [{"id": f"e{i}", "prompt": f"Summarize: #Person1#: I need item number {i}, please.",
             "completion": "They talk." if i % 2 else f"#Person1# asks for item {i} and gets it quickly today."}
            for i in range(n)]


def _overfit_data(tmp_path, n=8):
    rows = _rows(n)
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", rows[:2])
    return tmp_path


def _log(out):
    return [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_t5_without_dropout(tiny_t5, tmp_path_factory):
    """The tiny T5 with dropout off: a reference loop cannot draw the same dropout masks as
    tunebench, whose batches hold the examples in another order."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    d = tmp_path_factory.mktemp("tiny-t5-no-dropout")
    T5ForConditionalGeneration.from_pretrained(tiny_t5, dropout_rate=0.0).save_pretrained(d)
    AutoTokenizer.from_pretrained(tiny_t5).save_pretrained(d)
    return d


def _adam_close(got: torch.Tensor, want: torch.Tensor, lr: float, name: str) -> None:
    """Weights after Adam steps, equal but for Adam's sign noise: an element's first update is about
    lr * g / |g|, so where a gradient is within float noise of zero, two correct computations can move
    it differently (by at most lr). A handful of such elements per tensor is allowed; a wrong update,
    a missing weight decay or a wrong scale moves most elements and fails."""
    diff = (got.float() - want.float()).abs()
    off = int((diff > 1e-6).sum())
    assert float(diff.max()) <= lr and off <= max(4, diff.numel() // 1000), f"{name}: {off} elements off, max {float(diff.max()):.2e}"


@pytest.mark.parametrize("fixture,method,batch_size,grad_accum", [
    ("tiny_llama", "lora", 8, 1), ("tiny_llama", "full", 4, 2),
    ("tiny_t5_without_dropout", "lora", 4, 2), ("tiny_t5_without_dropout", "full", 8, 1)])
def test_two_steps_equal_a_plain_transformers_and_peft_loop(request, tmp_path, fixture, method, batch_size, grad_accum):
    """Two optimizer steps over all 8 examples (one micro-batch, or two accumulated) against the
    same steps written with transformers' own loss, peft's own LoRA layers, SDPA with a padding
    mask and torch's AdamW, clipping and a hand-written cosine schedule (reference.train_steps):
    losses, gradient norms, learning rates, validation losses, token counts, parameter counts and
    the saved weights."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    path = request.getfixturevalue(fixture)
    seq2seq = "t5" in fixture
    lr, wd, steps = (1e-2 if method == "lora" else 3e-3), 0.1, 2
    data = _overfit_data(tmp_path / "data")
    cfg = TrainConfig(method=method, max_steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                      weight_decay=wd, schedule="cosine", warmup_ratio=0.0, max_grad_norm=1.0, lora_r=8,
                      lora_alpha=16, lora_dropout=0.0, lora_targets="all-linear", precision="fp32", seed=0,
                      save_every=1000, report_to=["none"])
    s = train(ModelConfig(model=str(path)), cfg, data, tmp_path / "out")
    log = _log(tmp_path / "out")

    tok = AutoTokenizer.from_pretrained(path)
    train_pairs, val_pairs = reference.encode(tok, _rows(), seq2seq), reference.encode(tok, _rows()[:2], seq2seq)
    torch.manual_seed(cfg.seed)  # peft draws lora_A from torch's generator: the run's seed, the run's init
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(path, dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    train_batch = reference.batch(train_pairs, tok.pad_token_id, seq2seq)
    ref = reference.train_steps(model, train_batch, reference.batch(val_pairs, tok.pad_token_id, seq2seq),
                                lr, wd, steps)

    assert [r["step"] for r in log] == [1, 2] and [r["epoch"] for r in log] == [1.0, 2.0]
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in ref], rel=1e-5)
    assert [r["grad_norm"] for r in log] == pytest.approx([r["grad_norm"] for r in ref], rel=1e-5, abs=6e-5)
    assert [r["val_loss"] for r in log] == pytest.approx([r["val_loss"] for r in ref], rel=1e-5)
    # the row of step k logs the rate the scheduler holds after it, i.e. step k+1's (as HF Trainer logs it)
    assert [r["lr"] for r in log] == pytest.approx([reference.cosine_lr(lr, k, steps) for k in (1, 2)], abs=1e-12)
    # tokens: the batch's input tokens, padding excluded; for T5 the encoder's input only (the targets
    # are not counted, as in HF Trainer's num_input_tokens_seen)
    assert [r["tokens"] for r in log] == [int(train_batch["attention_mask"].sum())] * 2
    assert s["trainable_parameters"] == trainable and s["total_parameters"] == total
    assert (s["steps"], s["train_examples"], s["validation_examples"], s["skipped_overlong"]) == (2, 8, 2, 0)
    assert s["final_loss"] == log[-1]["loss"] and s["final_val_loss"] == log[-1]["val_loss"]
    assert s["best_val_loss"] == min(r["val_loss"] for r in log)

    if method == "lora":
        from peft import get_peft_model_state_dict

        want = get_peft_model_state_dict(model)
        got = load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
        assert set(got) == set(want)
    else:
        want = model.state_dict()
        got = load_file(tmp_path / "out" / "model" / "model.safetensors")
        assert set(got) <= set(want) and len(got) >= len([p for p in model.parameters()])  # tied copies left out
    for k in got:
        _adam_close(got[k], want[k], lr, k)


def _lora_parameter_counts(path, cls, r):
    """(LoRA parameters, base parameters) counted by hand: r x (in + out) for every nn.Linear but
    the output head, which is what peft's "all-linear" adapts."""
    base = cls.from_pretrained(path)
    head = base.get_output_embeddings()
    linears = [m for m in base.modules() if isinstance(m, nn.Linear) and m is not head]
    return sum(r * (m.in_features + m.out_features) for m in linears), sum(p.numel() for p in base.parameters())


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_t5"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_loss_falls_on_an_overfitting_set(request, tmp_path, fixture, method):
    """The run can fit 8 examples: a behaviour, not a figure (the figures of a step are pinned above)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    model = str(request.getfixturevalue(fixture))
    data = _overfit_data(tmp_path / "data")
    lr = 3e-3 if method == "full" else 1e-2
    cfg = TrainConfig(method=method, epochs=30, batch_size=4, lr=lr, lora_r=8, lora_dropout=0.0, precision="fp32",
                      schedule="constant", warmup_ratio=0.0, save_every=1000)
    s = train(ModelConfig(model=model), cfg, data, tmp_path / "out")
    log = _log(tmp_path / "out")
    assert s["steps"] == 60 and [r["step"] for r in log] == list(range(1, 61))
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    # validation at every epoch's end (every 2nd step); the summary reports the last and the best
    vals = [r.get("val_loss") for r in log]
    assert all(v is not None for v in vals[1::2]) and all(v is None for v in vals[0::2])
    assert s["final_val_loss"] == vals[-1] and s["best_val_loss"] == min(vals[1::2]) and vals[-1] < log[0]["loss"]
    info = json.loads((tmp_path / "out" / "tunebench_model.json").read_text())
    lora, base = _lora_parameter_counts(model, AutoModelForSeq2SeqLM if "t5" in fixture else AutoModelForCausalLM, 8)
    if method == "lora":
        assert info == {"base_model": model, "method": "lora", "adapter": "adapter", "merged": "merged", "model": None}
        assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
        assert (tmp_path / "out" / "merged" / "model.safetensors").is_file()  # loadable by plain transformers
        assert (s["trainable_parameters"], s["total_parameters"]) == (lora, base + lora)
    else:
        assert info == {"base_model": model, "method": "full", "adapter": None, "merged": None, "model": "model"}
        assert s["trainable_parameters"] == s["total_parameters"] == base


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



def test_full_fine_tuning_under_bf16_autocast_trains(tiny_llama, tmp_path):
    """fp32 weights under bf16 autocast: RoPE's fp32 cos/sin hand the attention fp32 q and k with a
    bf16 v, and its backward (run outside autocast) once failed on the mix. The loss and gradient
    norm of the first step stay within bf16 rounding of the fp32 run's."""
    data = _overfit_data(tmp_path / "data")
    common = dict(method="full", max_steps=2, batch_size=4, lr=1e-4, warmup_ratio=0.0, schedule="constant")
    bf16 = train(ModelConfig(model=str(tiny_llama)), TrainConfig(precision="bf16", **common), data, tmp_path / "bf16")
    train(ModelConfig(model=str(tiny_llama)), TrainConfig(precision="fp32", **common), data, tmp_path / "fp32")
    assert bf16["steps"] == 2 and bf16["precision"] == "bfloat16"
    a, b = _log(tmp_path / "bf16")[0], _log(tmp_path / "fp32")[0]
    assert a["loss"] == pytest.approx(b["loss"], rel=2e-2) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=5e-2)

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
