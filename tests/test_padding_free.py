"""Padding-free training batches (`batching.pack`, `train.padding_free`): the same targets, loss,
gradients and loss curve as padded batches, with attention confined to each sequence."""
import copy

import pytest
import torch
from test_training import _log, _overfit_data, _rows

from tunebench.config import ModelConfig, TrainConfig
from tunebench.errors import UserError
from tunebench.models import kernels
from tunebench.models.batching import IGNORE, Formatter, collate, pack, target_tokens
from tunebench.training import train
from tunebench.training.model import CompletionLoss


def _encoded(path, n=8):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    fmt = Formatter.for_model(tok, False)
    return [fmt.encode(r, 512) for r in _rows(n)], tok


def test_pack_restarts_positions_and_masks_each_first_label(tiny_llama):
    enc, tok = _encoded(tiny_llama, 5)
    lengths = [len(e["input_ids"]) for e in enc]
    packed, padded = pack(enc, tok.pad_token_id, False), collate(enc, tok.pad_token_id, False)
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert packed["position_ids"][0].tolist() == [i for n in lengths for i in range(n)]
    assert packed["cu_seq_lens"].tolist() == [sum(lengths[:k]) for k in range(len(lengths) + 1)]
    assert packed["cu_seq_lens"].dtype == torch.int32
    starts = packed["cu_seq_lens"][:-1].long()
    assert (packed["labels"][0, starts] == IGNORE).all()
    # the same tokens and the same targets as the padded batch, in the same order
    real = padded["attention_mask"].bool()
    assert packed["input_ids"][0].tolist() == padded["input_ids"][real].tolist()
    assert packed["labels"][0].tolist() == padded["labels"][real].tolist()  # the padded first labels are prompt tokens
    assert target_tokens(packed, False) == target_tokens(padded, False)
    assert int(packed["attention_mask"].sum()) == int(padded["attention_mask"].sum())


def test_pack_refuses_encoder_decoders():
    with pytest.raises(UserError, match="decoder-only"):
        pack([{"input_ids": [1, 2], "labels": [3, 4]}], 0, True)


def _loss_and_grads(loss_fn, batch):
    loss_fn.zero_grad(set_to_none=True)
    loss = loss_fn(**batch)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in loss_fn.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cpu_kernels", [False, True])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_packed_loss_and_gradients_equal_the_padded_batch(tiny_llama, method, cpu_kernels):
    """fp32, one micro-batch of 8 sequences of different lengths: summed loss within 1e-5 and every
    gradient close. With the CPU kernels on (as training runs on a CPU) the packed batch's mask sends
    attention to SDPA; the norms and MLPs are per token either way."""
    from transformers import AutoModelForCausalLM

    from tunebench.training.model import build_model

    enc, tok = _encoded(tiny_llama)
    torch.manual_seed(0)
    if method == "lora":
        from tunebench.models import ResolvedModel

        model = build_model(ResolvedModel(str(tiny_llama)), TrainConfig(method="lora", lora_r=8, lora_dropout=0.0),
                            torch.float32, False)
    else:
        model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    if cpu_kernels:
        assert kernels.use_causal_attention(model) is not None
        kernels.fuse_swiglu(model)
        kernels.fuse_rmsnorm(model)
    loss_fn = CompletionLoss(model, False)
    padded, packed = collate(enc, tok.pad_token_id, False), pack(enc, tok.pad_token_id, False)
    l_pad, g_pad = _loss_and_grads(loss_fn, padded)
    l_pack, g_pack = _loss_and_grads(loss_fn, packed)
    assert l_pack == pytest.approx(l_pad, rel=1e-5)
    assert set(g_pack) == set(g_pad) and g_pad
    for n in g_pad:
        # a summed loss's gradients are large (the tied embedding's reach ~1): fp32 noise scaled to each tensor
        scale = float(g_pad[n].abs().max())
        torch.testing.assert_close(g_pack[n], g_pad[n], atol=1e-5 * scale, rtol=1e-4, msg=lambda m: f"{n}: {m}")


def test_attention_stays_within_each_packed_sequence(tiny_llama):
    """Each sequence's hidden states in the packed row equal those it has alone: a change in one
    sequence's tokens leaves its neighbours' states as they were."""
    from transformers import AutoModelForCausalLM

    enc, tok = _encoded(tiny_llama, 3)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    body = model.model
    packed = pack(enc, tok.pad_token_id, False)
    with torch.no_grad():
        h = body(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).last_hidden_state
        cu = packed["cu_seq_lens"].tolist()
        for k, e in enumerate(enc):
            alone = body(input_ids=torch.tensor([e["input_ids"]]), use_cache=False).last_hidden_state
            torch.testing.assert_close(h[:, cu[k]:cu[k + 1]], alone, atol=1e-5, rtol=1e-5)
        changed = copy.deepcopy(enc)
        changed[0]["input_ids"] = [5] * len(changed[0]["input_ids"])
        p2 = pack(changed, tok.pad_token_id, False)
        h2 = body(input_ids=p2["input_ids"], position_ids=p2["position_ids"], use_cache=False).last_hidden_state
    torch.testing.assert_close(h2[:, cu[1]:], h[:, cu[1]:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method,batch_size,grad_accum", [("lora", 4, 1), ("full", 2, 2)])
def test_padding_free_training_follows_the_padded_loss_curve(tiny_llama, tmp_path, method, batch_size, grad_accum):
    """A few optimizer steps (fp32, the CPU kernels on, as `train` sets them up) with and without
    padding_free: the same batches, so the same losses, gradient norms, token counts and validation
    losses, within float tolerance."""
    data = _overfit_data(tmp_path / "data")
    common = dict(method=method, max_steps=4, batch_size=batch_size, grad_accum=grad_accum, lr=1e-2 if method == "lora" else 3e-3,
                  lora_r=8, lora_dropout=0.0, precision="fp32", schedule="constant", warmup_ratio=0.0, save_every=1000,
                  report_to=["none"], merge=False)
    a = train(ModelConfig(model=str(tiny_llama)), TrainConfig(**common), data, tmp_path / "padded")
    b = train(ModelConfig(model=str(tiny_llama)), TrainConfig(padding_free=True, **common), data, tmp_path / "packed")
    la, lb = _log(tmp_path / "padded"), _log(tmp_path / "packed")
    assert [r["loss"] for r in lb] == pytest.approx([r["loss"] for r in la], rel=1e-4)
    assert [r["grad_norm"] for r in lb] == pytest.approx([r["grad_norm"] for r in la], rel=1e-3)
    assert [r["tokens"] for r in lb] == [r["tokens"] for r in la]
    val = [r["val_loss"] for r in la if r.get("val_loss") is not None]
    assert val and [r["val_loss"] for r in lb if r.get("val_loss") is not None] == pytest.approx(val, rel=1e-4)
    assert a["steps"] == b["steps"] == 4


def test_padding_free_is_refused_for_encoder_decoders(tiny_t5, tmp_path):
    data = _overfit_data(tmp_path / "data")
    with pytest.raises(UserError, match="train.padding_free: decoder-only"):
        train(ModelConfig(model=str(tiny_t5)), TrainConfig(padding_free=True, max_steps=1, report_to=["none"]), data,
              tmp_path / "out")


def test_padding_free_flag_mirrors_the_recipe_field():
    from tunebench.cli import _parser
    from tunebench.config import from_flags

    args = _parser().parse_args(["train", "--data", "d", "--out", "o", "--padding-free"])
    assert from_flags(TrainConfig, args).padding_free is True
    args = _parser().parse_args(["train", "--data", "d", "--out", "o"])
    assert from_flags(TrainConfig, args).padding_free is False


def test_varlen_attention_falls_back_to_the_block_mask_off_a_gpu(tiny_llama):
    """The attention a GPU run without flash-attn switches to: on a CPU (or in fp32) it takes SDPA
    with transformers' block-diagonal mask, and the packed loss is still the padded one."""
    from transformers import AutoModelForCausalLM

    enc, tok = _encoded(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    loss_fn = CompletionLoss(model, False)
    with torch.no_grad():
        want = float(loss_fn(**collate(enc, tok.pad_token_id, False)))
        assert kernels.use_varlen_attention(model, torch.float32, flash=False) == "sdpa"
        assert model.config._attn_implementation == kernels.VARLEN
        got = float(loss_fn(**pack(enc, tok.pad_token_id, False)))
    model.set_attn_implementation("sdpa")
    assert got == pytest.approx(want, rel=1e-5)
