"""Nothing lost: kill -9 and resume, torn result files, broken checkpoints, several processes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunebench.config import GenerateConfig, ModelConfig, TrainConfig
from tunebench.errors import UserError
from tunebench.io.runs import Journal, read_jsonl
from tunebench.training import train

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    return env


def _train_argv(model, data, out, *extra):
    return [sys.executable, "-m", "tunebench.cli", "train", "--model", str(model), "--data", str(data), "--out", str(out),
            "--method", "lora", "--lora-dropout", "0.1", "--precision", "fp32", "--lr", "3e-3", "--batch-size", "2",
            "--no-merge", "--report-to", "none", *extra]


def _log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def _same_adapter(a, b, atol=0.0):
    wa = load_file(Path(a) / "adapter" / "adapter_model.safetensors")
    wb = load_file(Path(b) / "adapter" / "adapter_model.safetensors")
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=atol, rtol=0), k


def _kill_9_then_resume(argv, env, tmp_path, steps: int, save_every: int, kill_after: int) -> Path:
    """An uninterrupted run (tmp_path/whole), and one SIGKILLed (with every process of its
    session) once its checkpoint at `kill_after` steps is whole, then resumed (tmp_path/cut): the
    two must end alike. `argv(out, *flags)` is the command line."""
    flags = ["--max-steps", str(steps), "--save-every", str(save_every), "--keep-checkpoints", "2"]
    r = subprocess.run(argv(tmp_path / "whole", *flags), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    cut = tmp_path / "cut"
    p = subprocess.Popen(argv(cut, *flags), env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (cut / "checkpoints" / f"step-{kill_after:06d}" / "state.json").exists():
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not (cut / "tunebench_model.json").exists(), "the run finished before it could be killed"
    assert kill_after <= max(x["step"] for x in _log(cut)) < steps

    r = subprocess.run(argv(cut, *flags, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout
    whole, resumed = _log(tmp_path / "whole"), _log(cut)
    assert [x["step"] for x in resumed] == list(range(1, steps + 1))
    assert [x["loss"] for x in resumed] == pytest.approx([x["loss"] for x in whole], abs=1e-5)
    _same_adapter(tmp_path / "whole", cut, atol=1e-6)
    return cut


def test_kill_9_mid_run_then_resume_ends_like_an_uninterrupted_run(tiny_llama, prepared, tmp_path):
    """A real SIGKILL at whatever moment the run is in: mid-step, mid-log-write or mid-checkpoint."""
    cut = _kill_9_then_resume(lambda out, *flags: _train_argv(tiny_llama, prepared, out, *flags), _env(), tmp_path,
                              steps=120, save_every=7, kill_after=14)
    state = json.loads((sorted((cut / "checkpoints").glob("step-*"))[-1] / "state.json").read_text())
    assert state["step"] == 120 and state["data_position"]["global_batch"] == 2


def test_resume_skips_torn_checkpoints(tiny_llama, prepared, tmp_path):
    """Killed mid-save: a .tmp directory and a checkpoint without its state.json are not used."""
    cfg = TrainConfig(method="lora", max_steps=6, batch_size=2, lr=3e-3, precision="fp32", save_every=2,
                      keep_checkpoints=5, merge=False, report_to=["none"])
    train(ModelConfig(model=str(tiny_llama)), cfg, prepared, tmp_path / "whole")
    cut = tmp_path / "cut"
    import shutil

    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-000002", cut / "checkpoints" / "step-000002")
    torn = shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-000004", cut / "checkpoints" / "step-000004")
    (torn / "state.json").unlink()
    half = cut / "checkpoints" / "step-000006.tmp"
    half.mkdir()
    (half / "trainable.safetensors").write_bytes(b"\0" * 100)
    s = train(ModelConfig(model=str(tiny_llama)), cfg, prepared, cut, resume=True)
    assert s["steps"] == 6
    _same_adapter(tmp_path / "whole", cut)


def test_resume_with_other_batch_settings_is_refused(tiny_llama, prepared, tmp_path):
    cfg = TrainConfig(method="lora", max_steps=2, batch_size=2, precision="fp32", save_every=1, merge=False,
                      report_to=["none"])
    train(ModelConfig(model=str(tiny_llama)), cfg, prepared, tmp_path / "out")
    with pytest.raises(UserError, match="data_position.global_batch is 2, this run has 4"):
        train(ModelConfig(model=str(tiny_llama)), cfg.model_copy(update={"batch_size": 4, "max_steps": 4}), prepared,
              tmp_path / "out", resume=True)


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tiny_llama, prepared, tmp_path):
    """lr 1e30: step 1's Adam update (about lr per element) makes the weights ~1e30, so at step 2 every
    RMSNorm's mean square overflows to inf and the hidden states become 0: the loss is a finite
    ln(vocabulary size), but the gradients are NaN. The run stops there, before stepping on them,
    and step 1's checkpoint is the last one written and the one named."""
    import math

    cfg = TrainConfig(method="full", max_steps=20, batch_size=2, lr=1e30, precision="fp32", save_every=1,
                      keep_checkpoints=3, warmup_ratio=0.0, schedule="constant", report_to=["none"])
    out = tmp_path / "out"
    with pytest.raises(UserError) as e:
        train(ModelConfig(model=str(tiny_llama)), cfg, prepared, out)
    assert str(e.value) == (f"training diverged: gradient norm is nan at step 2; last good checkpoint: "
                            f"{out / 'checkpoints' / 'step-000001'} (lower train.lr?)")
    assert [c.name for c in sorted((out / "checkpoints").glob("step-*"))] == ["step-000001"]
    weights = load_file(out / "checkpoints" / "step-000001" / "trainable.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    log = _log(out)
    assert [r["step"] for r in log] == [1] and math.isfinite(log[0]["loss"]) and math.isfinite(log[0]["grad_norm"])


def test_too_little_disk_for_a_checkpoint_is_refused_before_training(tiny_llama, prepared, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 2**20, 2**20))
    cfg = TrainConfig(method="full", max_steps=2, batch_size=2, precision="fp32", report_to=["none"])
    with pytest.raises(UserError, match=r"1 MB free on disk, a checkpoint needs about \d+ MB"):
        train(ModelConfig(model=str(tiny_llama)), cfg, prepared, tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_llama, prepared, tmp_path):
    common = ["--max-steps", "6", "--lora-dropout", "0", "--save-every", "100"]
    one = subprocess.run(_train_argv(tiny_llama, prepared, tmp_path / "one", *common, "--batch-size", "4"),
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    # torchrun sets RANK/WORLD_SIZE; accelerate then starts a gloo process group on CPU
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                          *_train_argv(tiny_llama, prepared, tmp_path / "two", *common, "--batch-size", "2")[1:]],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["summary"]["processes"] == 2
    a, b = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert len(a) == len(b) == 6
    assert [x["loss"] for x in b] == pytest.approx([x["loss"] for x in a], abs=1e-5)
    assert [x["grad_norm"] for x in b] == pytest.approx([x["grad_norm"] for x in a], abs=1e-3)
    # Adam divides by sqrt(v): elements with near-zero gradients carry summation-order noise
    _same_adapter(tmp_path / "one", tmp_path / "two", atol=1e-4)



def _fsdp_argv(model, data, out, *extra):
    """Two gloo processes under FSDP2, as `accelerate launch --config_file examples/accelerate/fsdp.yaml`
    asks for it (the variables that launcher sets; its own multi-CPU launcher needs MPI)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
            *_train_argv(model, data, out, *extra)[1:]]


def _fsdp_env():
    return dict(_env(), ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_TRANSFORMER_CLS_TO_WRAP="LlamaDecoderLayer")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp2_two_processes_match_one_process_and_save_a_plain_model(method, tiny_llama, prepared, tmp_path):
    from transformers import AutoModelForCausalLM

    common = ["--method", method, "--max-steps", "6", "--lora-dropout", "0", "--save-every", "3", "--merge"]
    one = subprocess.run(_train_argv(tiny_llama, prepared, tmp_path / "one", *common, "--batch-size", "4"),
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(_fsdp_argv(tiny_llama, prepared, tmp_path / "two", *common, "--batch-size", "2"),
                         env=_fsdp_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "run.json").read_text())["summary"]
    assert summary["processes"] == 2 and summary["sharding"] == "fsdp2"
    # the checkpoints hold each process's shards, written by torch.distributed.checkpoint
    ckpt = tmp_path / "two" / "checkpoints" / "step-000006"
    assert (ckpt / "sharded" / ".metadata").is_file() and len(list((ckpt / "sharded").glob("*.distcp"))) == 2
    a, b = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [x["loss"] for x in b] == pytest.approx([x["loss"] for x in a], abs=1e-5)
    assert [x["grad_norm"] for x in b] == pytest.approx([x["grad_norm"] for x in a], abs=1e-3)
    saved = "model" if method == "full" else "merged"
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    logits = [AutoModelForCausalLM.from_pretrained(tmp_path / run / saved).eval()(ids).logits for run in ("one", "two")]
    assert torch.allclose(logits[0], logits[1], atol=1e-4), (logits[0] - logits[1]).abs().max()
    if method == "lora":
        _same_adapter(tmp_path / "one", tmp_path / "two", atol=1e-4)
    else:
        wa, wb = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("one", "two"))
        assert set(wa) == set(wb) and all(torch.allclose(wa[k], wb[k], atol=1e-4, rtol=0) for k in wa)


def test_fsdp2_kill_9_then_resume_ends_like_an_uninterrupted_run(tiny_llama, prepared, tmp_path):
    """SIGKILL to the launcher and both processes; the resumed run loads the shards, each process
    its own random state (LoRA dropout 0.1 draws on it), and ends where the whole run ends."""
    cut = _kill_9_then_resume(lambda out, *flags: _fsdp_argv(tiny_llama, prepared, out, *flags), _fsdp_env(), tmp_path,
                              steps=60, save_every=5, kill_after=10)
    assert (cut / "checkpoints" / "step-000060" / "sharded" / ".metadata").is_file()


def test_fsdp_layer_classes_named_by_the_launcher_must_be_in_the_model(tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tunebench.training import sharding

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert sharding._wrap_classes(model) == {"LlamaDecoderLayer"}  # the model's own _no_split_modules
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "GPT2Block")
    with pytest.raises(UserError, match="GPT2Block is not a layer of this model; its layer classes include "
                                        "LlamaDecoderLayer"):
        sharding._wrap_classes(model)

def _interrupt_after(monkeypatch, n_batches):
    """The next journaled run dies (as if killed) right after its n-th batch is on disk."""
    calls = {"n": 0}
    original = Journal.append

    def append(self, rows, record=True):
        original(self, rows, record)
        if record:
            calls["n"] += 1
            if calls["n"] == n_batches:
                raise KeyboardInterrupt
    monkeypatch.setattr(Journal, "append", append)


def test_generation_resumes_from_a_torn_journal_and_recomputes_nothing(tiny_llama, prepared, tmp_path, monkeypatch,
                                                                       capsys):
    from tunebench.pipeline import generate_stage

    model, cfg = ModelConfig(model=str(tiny_llama)), GenerateConfig(split="test", batch_size=1, max_new_tokens=8,
                                                                     precision="fp32")
    whole = generate_stage(model, cfg, prepared, tmp_path / "whole")
    out = tmp_path / "cut"
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        generate_stage(model, cfg, prepared, out)
    monkeypatch.undo()
    journal = out / "predictions.partial.jsonl"
    assert len(journal.read_text().splitlines()) == 3 and not (out / "predictions.jsonl").exists()
    with journal.open("a") as f:
        f.write('{"key": "3", "predic')  # killed in the middle of writing a line
    capsys.readouterr()
    again = generate_stage(model, cfg.model_copy(update={"batch_size": 4}), prepared, out)
    note = capsys.readouterr().out
    assert "2 results kept from an interrupted run" in note and "cut off mid-write was dropped" in note
    assert again["efficiency"]["resumed_examples"] == 2 and again["efficiency"]["examples"] == 2
    assert [r["prediction"] for r in again["predictions"]] == [r["prediction"] for r in whole["predictions"]]
    assert read_jsonl(out / "predictions.jsonl") == read_jsonl(tmp_path / "whole" / "predictions.jsonl")
    assert not journal.exists()


def test_a_journal_from_other_settings_is_set_aside_not_mixed(tiny_llama, prepared, tmp_path, monkeypatch, capsys):
    from tunebench.pipeline import generate_stage

    model, cfg = ModelConfig(model=str(tiny_llama)), GenerateConfig(split="test", batch_size=1, max_new_tokens=8,
                                                                     precision="fp32")
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        generate_stage(model, cfg, prepared, tmp_path / "out")
    monkeypatch.undo()
    r = generate_stage(model, cfg.model_copy(update={"max_new_tokens": 4}), prepared, tmp_path / "out")
    assert "set aside as predictions.partial.jsonl.stale-" in capsys.readouterr().out
    assert r["efficiency"]["examples"] == 4 and r["efficiency"]["resumed_examples"] == 0
    assert len(list((tmp_path / "out").glob("predictions.partial.jsonl.stale-*"))) == 1


def test_a_corrupt_line_inside_a_journal_is_an_error(tmp_path):
    path = tmp_path / "j.jsonl"
    Journal(path, {"a": 1}).append([{"key": "0", "x": 1}])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(UserError, match=r"j\.jsonl:2: corrupt result line"):
        Journal(path, {"a": 1})
    path.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(UserError, match=r"j\.jsonl:3: result line without a unique 'key'"):
        Journal(path, {"a": 1})


def test_benchmark_run_resumes_per_example(tiny_llama, tmp_path, monkeypatch, capsys):
    from tunebench.benchmarks.harness import run_bench
    from tunebench.benchmarks.tasks import resolve_tasks
    from tunebench.config import BenchConfig
    from tunebench.models import profile

    tasks, _ = resolve_tasks(["glue/sst2", "bigbench/operators"])
    cfg, model = BenchConfig(batch_size=2, max_new_tokens=4), ModelConfig(model=str(tiny_llama))
    rows = 2  # generation batches of 2 (not the profile's generate_rows), so that a cut lands inside a task
    monkeypatch.setattr(profile.CPU, "generate_rows", rows)
    run_bench(model, cfg, tasks, tmp_path / "whole", limit=6)
    _interrupt_after(monkeypatch, 5)  # sst2 done (3 batches), operators 2 batches in
    with pytest.raises(KeyboardInterrupt):
        run_bench(model, cfg, tasks, tmp_path / "cut", limit=6)
    monkeypatch.undo()
    monkeypatch.setattr(profile.CPU, "generate_rows", rows)
    assert (tmp_path / "cut" / "tasks" / "glue__sst2.json").is_file()
    partial = tmp_path / "cut" / "tasks" / "bigbench__operators.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 1 + 4
    capsys.readouterr()
    run_bench(model, cfg, tasks, tmp_path / "cut", limit=6)
    out = capsys.readouterr().out
    assert "glue/sst2: done earlier, kept" in out and "4 results kept from an interrupted run" in out
    a, b = read_jsonl(tmp_path / "whole" / "examples.jsonl"), read_jsonl(tmp_path / "cut" / "examples.jsonl")
    assert [(r["id"], r.get("prediction"), r.get("output")) for r in a] == [(r["id"], r.get("prediction"), r.get("output")) for r in b]
    assert not partial.exists()
