"""W1: LoRA fine-tuning throughput, tunebench vs TRL's SFTTrainer, side by side.

The workload is fixed so that numbers stay comparable: the embedded default model
(SmolLM2-135M-Instruct), LoRA r=16, alpha 32, dropout 0 (peft's default) on all linear layers,
DialogSum training records rendered with the default template (summarize_conversation), batch 4,
max length 512, lr 2e-4 with a linear decay and no warm-up, seed 0, 2 warm-up steps then 30
timed steps, CPU threads 2.

Every tool trains on the same token sequences: tunebench tokenizes the records once and TRL gets
them as a processed dataset (input_ids + completion_mask, completion-only loss), so the figures
differ only by how the tools train. Each tool runs in a fresh process, so its peak RSS is its own.

- tunebench: the real `tunebench train` command.
- trl_defaults: SFTTrainer with its defaults (what most tutorials use): fp32 weights, bf16 autocast,
  gradient checkpointing on, random batch order.
- trl_tuned: as a knowledgeable user would set it up on CPU: the frozen base weights loaded in bf16
  (`SFTConfig(model_init_kwargs={"dtype": "bfloat16"})`, as tunebench holds them for LoRA; peft keeps
  the adapters in fp32), bf16 autocast, gradient checkpointing off, length-grouped batches (TRL's
  padding-free mode needs flash-attention kernels, which a CPU lacks). It is fed tunebench's
  length-grouped batch order with a sequential sampler, which is the same grouping as
  transformers' `group_by_length` sampler and lets the two loss curves be compared step by step
  on identical batches.

Figures: real (non-padding) tokens/s over the timed steps, peak RSS, per-step loss, and model FLOP
utilisation (MFU): the model FLOPs of the timed steps' sequences / the timed seconds / a bf16 peak.
Model FLOPs count the matrix multiplies a LoRA step needs (bench/_flops.py; a multiply-add is 2):

    sum over the sequences (n real tokens, c of them carrying loss) of
        n x [sum over decoder linear layers (d_in x d_out) of 4 d_in d_out + 6 r (d_in + d_out)
             - layer 0's q, k, v input gradients (2 d_in d_out + 2 r d_in each; nothing before them trains)]
      + c x 4 x hidden x vocab                        (frozen LM head, only where the loss is taken)
      + 6 x layers x heads x head_dim x n (n + 1)     (causal attention, forward and backward)

The frozen weights need forward and input gradient (2 + 2) but no weight gradient; the adapters
need all three; the embedding lookup is a gather, no FLOPs. Each tool's FLOPs are counted on the
sequences it trained on in its own timed steps. MFU is reported against two peaks, each named:
`mfu_vs_measured_peak` divides by the best bf16 matrix multiply this script measures on this
machine in this run (before and after the tools, the higher taken); `mfu_vs_nominal_peak` by the
processor's nominal bf16 peak where documented facts give it (threads x the clock the model name
states x Intel AMX's 1024 bf16 FLOPs per cycle and core; on a GPU the datasheet's dense figure),
else null with the reason (`nominal_peak` in the JSON says which).

W1-demo (`--workload demo`) trains as the demo recipe does (recipes/dialogsum-lora.yaml, read from
it): batch 8, LoRA dropout 0.05 for tunebench and both peers, cosine with 5% warm-up, lr 3e-4, the
demo's 600 dialogues with its seven templates and the chat template; 2 warm-up + 16 timed steps,
which take in the epoch's longest batch (8 x 510 tokens, step 17 of 73: the one that sets the
training's peak memory). tunebench also trains with dropout 0 in the same run, for the cost of
dropout. tunebench starts itself under jemalloc where the system has it (src/tunebench/io/memory.py);
the peers run on the system's malloc, as TRL does (`allocator` in the JSON).

    python bench/w1_train.py [--workload w1|demo] [--quick] [--json out.json] [--peers trl_defaults trl_tuned] [--device cpu|cuda]
                             [--model-size 135m|360m|1.7b]

`--model-size 360m|1.7b` trains SmolLM2's configuration of that size with random weights (bench/_models.py),
the same directory for every tool; the FLOPs are counted on its dimensions.

Needs TRL (`pip install -e '.[bench]'`); it is not a dependency of tunebench itself.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import add_device_arg, gpu_peak_mb, pin_device, run_child  # noqa: E402  (bench/ is the script's directory)
from _flops import Dims, lora_step_flops, nominal_peak  # noqa: E402
from _models import add_size_arg, model_name, model_path, model_record  # noqa: E402

MODEL = "smollm2-135m-instruct"  # --model-size 360m|1.7b: the built directory (bench/_models.py)
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
BATCH, MAX_LEN, LR, SEED = 4, 512, 2e-4, 0
SCHEDULE, WARMUP_RATIO = "linear", 0.0
PEERS = ("trl_defaults", "trl_tuned")
# on a GPU only (`--device cuda`): TRL's padding-free mode (trl_tuned's settings, each batch flattened into one
# row; flash-attn's varlen kernel when installed, else SDPA under transformers' block-diagonal mask)
CUDA_PEERS = ("trl_padding_free",)
# trl_tuned beyond SFTConfig's defaults: frozen base weights in bf16, as tunebench holds them for LoRA
# (TRL loads fp32 unless told), no checkpointing, tunebench's length-grouped order through a sequential sampler
TRL_TUNED = {"model_init_kwargs": {"dtype": "bfloat16"}, "gradient_checkpointing": False, "bf16": True,
             "train_sampling_strategy": "sequential"}
DEMO_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "dialogsum-lora.yaml"


def use_workload(name: str) -> None:
    """`demo`: the settings of recipes/dialogsum-lora.yaml (read from it): batch 8, LoRA dropout 0.05,
    cosine with 5% warm-up, lr 3e-4, its 600 training dialogues with its templates and chat
    template. tunebench also trains once with dropout 0 (`tunebench_dropout0`) in the same run."""
    global BATCH, LR, SCHEDULE, WARMUP_RATIO, SEED
    if name == "demo":
        from tunebench.config import load_recipe

        t = load_recipe(DEMO_RECIPE).train
        LORA.update(r=t.lora_r, alpha=t.lora_alpha, dropout=t.lora_dropout)
        BATCH, LR, SCHEDULE, WARMUP_RATIO, SEED = t.batch_size, t.lr, t.schedule, t.warmup_ratio, t.seed


# ---------------------------------------------------------------------------- workers (one process each)

def run_tunebench(data: Path, steps: int, out: Path, dropout: float | None = None, padding_free: bool = False) -> dict:
    """The real CLI, as a user runs it; its log.jsonl holds per-step loss, tokens and time."""
    dropout = LORA["dropout"] if dropout is None else dropout
    run = out / (f"run-dropout{dropout}" + ("-padding-free" if padding_free else ""))
    cmd = [sys.executable, "-m", "tunebench.cli", "train", "--data", str(data), "--out", str(run),
           "--model", MODEL, "--method", "lora", "--lora-r", str(LORA["r"]), "--lora-alpha", str(LORA["alpha"]),
           "--lora-dropout", str(dropout), "--lora-targets", "all-linear", "--batch-size", str(BATCH),
           "--max-length", str(MAX_LEN), "--lr", str(LR), "--schedule", SCHEDULE, "--warmup-ratio", str(WARMUP_RATIO),
           "--max-steps", str(steps), "--seed", str(SEED), "--precision", "bf16", "--no-merge",
           "--report-to", "none", "--save-every", str(10**6)] + (["--padding-free"] if padding_free else [])
    from tunebench.io.runs import read_json, read_jsonl

    rss = run_child(cmd)
    log = read_jsonl(run / "log.jsonl")
    allocator = read_json(run / "run.json")["environment"].get("allocator")
    return {"loss": [r["loss"] for r in log], "tokens": [r["tokens"] for r in log], "allocator": allocator,
            "time": [r["time_s"] for r in log], "peak_rss_mb": rss, "peak_gpu_mb": log[-1].get("peak_gpu_mb")}


def trl_worker(name: str, data: Path, steps: int, result: Path, device: str) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from tunebench import models
    from tunebench.io.runs import read_jsonl

    rows = read_jsonl(data / f"trl_{name}.jsonl")
    path = models.resolve(MODEL).path
    tok = AutoTokenizer.from_pretrained(path)
    tokens: list[int] = []
    lengths: list[list[int]] = []  # per batch: each sequence's real tokens
    loss_positions: list[list[int]] = []  # per batch: each sequence's positions whose next token is a label

    class CountingCollator(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            tokens.append(int(out["attention_mask"].sum()))
            lengths.append(out["attention_mask"].sum(1).tolist())
            loss_positions.append((out["labels"][:, 1:] != -100).sum(1).tolist())
            return out

    times, losses = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    common = dict(output_dir=str(data / f"out_{name}"), use_cpu=device == "cpu", per_device_train_batch_size=BATCH,
                  max_length=MAX_LEN, learning_rate=LR, lr_scheduler_type=SCHEDULE, warmup_steps=round(WARMUP_RATIO * steps),
                  max_steps=steps, seed=SEED, data_seed=SEED, logging_steps=1, save_strategy="no",
                  report_to=[], completion_only_loss=True, dataloader_num_workers=0)
    tuned = {"trl_defaults": {}, "trl_tuned": TRL_TUNED, "trl_padding_free": trl_padding_free_settings()}[name]
    cfg = SFTConfig(**common, **tuned)
    peft_cfg = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules="all-linear", task_type="CAUSAL_LM")
    set_seed(SEED)  # the LoRA A matrices are drawn before Trainer seeds anything
    # TRL refuses a collator of one's own in padding-free mode: its own is wrapped once built instead
    trainer = SFTTrainer(model=path, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_cfg, callbacks=[Clock()],
                         data_collator=None if cfg.padding_free else CountingCollator(pad_token_id=tok.pad_token_id))
    if cfg.padding_free:
        trainer.data_collator = counting_packed(trainer.data_collator, tokens, lengths, loss_positions)
    base = trainer.model.get_base_model()
    dtypes = {"frozen": str(base.model.layers[0].self_attn.q_proj.base_layer.weight.dtype),
              "adapters": str(base.model.layers[0].self_attn.q_proj.lora_A["default"].weight.dtype)}
    t0 = time.perf_counter()
    trainer.train()
    result.write_text(json.dumps({"loss": losses, "tokens": tokens[:steps], "time": [t - t0 for t in times],
                                  "lengths": lengths[:steps], "loss_positions": loss_positions[:steps],
                                  "threads": torch.get_num_threads(), "peak_gpu_mb": gpu_peak_mb(),
                                  "gradient_checkpointing": bool(cfg.gradient_checkpointing), "bf16_autocast": bool(cfg.bf16),
                                  "dtypes": dtypes}))


def trl_padding_free_settings() -> dict:
    """trl_tuned's settings with TRL's padding-free mode: each batch one row, positions restarting per
    sequence (TRL's collator), flash-attn's varlen kernel where it is installed."""
    import importlib.util

    init = dict(TRL_TUNED["model_init_kwargs"])
    if importlib.util.find_spec("flash_attn") is not None:
        init["attn_implementation"] = "flash_attention_2"
    return {**TRL_TUNED, "model_init_kwargs": init, "padding_free": True}


def counting_packed(collator, tokens: list, lengths: list, loss_positions: list):
    """TRL's padding-free collator, counting each batch's sequences from its cu_seq_lens as
    CountingCollator counts a padded batch's rows (each sequence's first label is masked)."""
    def collate(examples):
        out = collator(examples)
        cu = out["cu_seq_lens_q"].tolist()
        labels = out["labels"][0]
        lengths.append([b - a for a, b in zip(cu, cu[1:])])
        tokens.append(sum(lengths[-1]))
        loss_positions.append([int((labels[a:b] != -100).sum()) for a, b in zip(cu, cu[1:])])
        return out
    return collate


# ---------------------------------------------------------------------------- the parent

def prepare(work: Path, records: int, workload: str) -> tuple[Path, dict]:
    """Render DialogSum records with the default template (W1) or as the demo recipe does (demo);
    the token sequences every tool trains on."""
    from tunebench import models
    from tunebench.config import DataConfig
    from tunebench.data.examples import load_prepared
    from tunebench.io.runs import write_jsonl
    from tunebench.models.batching import IGNORE, Formatter, encode_all, train_batches
    from tunebench.pipeline import prepare_stage

    data = work / "data"
    if workload == "demo":
        from tunebench.config import load_recipe

        recipe = load_recipe(DEMO_RECIPE)
        cfg, chat = recipe.data.model_copy(update={"validation_limit": 8, "test_limit": 8}), recipe.model.chat_template
    else:
        cfg, chat = DataConfig(templates=["summarize_conversation"], template_choice="fixed", train_limit=records,
                               validation_limit=8, test_limit=8, seed=SEED), "auto"
    prepare_stage(cfg, data)
    tok = models.load_tokenizer(models.resolve(MODEL).path)
    enc, skipped = encode_all(Formatter.for_model(tok, False, chat), load_prepared(data, "train"), MAX_LEN, "skip", "train")
    rows = [{"input_ids": e["input_ids"], "completion_mask": [int(x != IGNORE) for x in e["labels"]]} for e in enc]
    # tunebench's batch order (a pure function of lengths, seed and epoch), flattened for a sequential sampler
    batches = train_batches([len(e["input_ids"]) for e in enc], BATCH, SEED, 0, True)
    order = [i for b in batches for i in b]
    for name, seq in (("trl_defaults", rows), ("trl_tuned", [rows[i] for i in order]),
                      ("trl_padding_free", [rows[i] for i in order])):
        write_jsonl(data / f"trl_{name}.jsonl", seq)
    return data, {"examples": len(enc), "skipped_overlong": skipped,
                  "batch_lengths": [[len(enc[i]["input_ids"]) for i in b] for b in batches],
                  "batch_loss_positions": [[sum(x != IGNORE for x in enc[i]["labels"][1:]) for i in b] for b in batches]}


def bf16_peak(threads: int, device: str = "cpu", seconds: float = 2.0) -> float:
    """Best bf16 matmul rate (FLOP/s) over a few square sizes: the device's practical peak."""
    import torch

    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = 0.0
    for n in ((1024, 2048, 3072) if device == "cpu" else (4096, 8192)):
        a, b = (torch.randn(n, n, dtype=torch.bfloat16, device=device) for _ in range(2))
        a @ b
        sync()
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            k += 1
            if k % 10 == 0:
                sync()
        sync()
        best = max(best, 2 * n**3 * k / (time.perf_counter() - t0))
    return best


def model_dims() -> Dims:
    """The model's shapes (its config), checked against its weight file (so the FLOPs count every matrix)."""
    from safetensors import safe_open
    from transformers import AutoConfig

    from tunebench import models

    path = Path(models.resolve(MODEL).path)
    dims = Dims.from_config(AutoConfig.from_pretrained(path))
    shapes = {}
    for f in path.glob("*.safetensors"):
        with safe_open(f, "pt") as sf:
            shapes.update({k: tuple(sf.get_slice(k).get_shape()) for k in sf.keys()})
    for layer in range(dims.layers):
        for name, d_in, d_out in dims.projections():
            key = f"model.layers.{layer}.{'self_attn' if name[0] in 'qkvo' else 'mlp'}.{name}.weight"
            assert shapes.get(key) == (d_out, d_in), (key, shapes.get(key), (d_out, d_in))
    projections = [k for k in shapes if k.endswith("_proj.weight")]
    assert len(projections) == dims.layers * len(dims.projections()), projections
    return dims


def step_flops(dims: Dims, lengths: list[list[int]], loss_positions: list[list[int]]) -> int:
    """Model FLOPs of these steps (per step: each sequence's real tokens and loss positions)."""
    return lora_step_flops(dims, LORA["r"], [n for b in lengths for n in b], [c for b in loss_positions for c in b])


def timed(res: dict, warmup: int) -> tuple[float, int, float]:
    """Real tokens/s over the steps after the warm-up: (rate, tokens, seconds)."""
    tokens = sum(res["tokens"][warmup:])
    seconds = res["time"][-1] - res["time"][warmup - 1]
    return tokens / seconds, tokens, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 warm-up + 6 timed steps")
    ap.add_argument("--workload", choices=("w1", "demo"), default="w1",
                    help="w1: the fixed W1 settings; demo: the demo recipe's settings (W1-demo)")
    ap.add_argument("--steps", type=int, help="timed steps after the 2 warm-up steps (W1: 30; demo: 16, which "
                                               "takes in the demo's longest batch)")
    ap.add_argument("--peers", nargs="*", choices=PEERS + CUDA_PEERS,
                    help=f"default: {' '.join(PEERS)}, and with --device cuda {' '.join(CUDA_PEERS)}")
    ap.add_argument("--records", type=int, default=1000, help="DialogSum training records to draw batches from")
    ap.add_argument("--threads", type=int, default=2)
    add_device_arg(ap)
    add_size_arg(ap)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--keep", help="keep the work directory here (default: a temporary one, removed)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    use_workload(args.workload)
    if args.peers is None:
        args.peers = list(PEERS) + (list(CUDA_PEERS) if args.device == "cuda" else [])
    global MODEL
    MODEL = model_name(args.model_size)
    warmup = 2
    args.steps = args.steps or (16 if args.workload == "demo" else 30)
    steps = warmup + (6 if args.quick else args.steps)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    pin_device(args.device)

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        work = Path(args.work)
        trl_worker(args.worker, work / "data", steps, work / f"{args.worker}.json", args.device)
        return 0

    work = Path(args.keep or tempfile.mkdtemp(prefix="w1-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"model: {args.model_size} ({model_path(args.model_size)})", flush=True)
        data, info = prepare(work, args.records, args.workload)
        sizes = [len(b) * max(b) for b in info["batch_lengths"]]
        longest = max(range(len(sizes)), key=sizes.__getitem__)
        info["longest_batch"] = {"step": longest + 1, "padded_tokens": sizes[longest], "timed": warmup <= longest < steps}
        print(f"{len(sizes)} batches in an epoch; the longest ({sizes[longest]} padded tokens) is step {longest + 1}, "
              + ("inside" if info["longest_batch"]["timed"] else "outside") + " the timed steps", flush=True)
        peak = bf16_peak(args.threads, args.device)
        where = f"{args.threads} threads" if args.device == "cpu" else args.device
        print(f"bf16 matmul peak on {where}: {peak / 1e9:.0f} GFLOP/s", flush=True)
        results = {"tunebench": run_tunebench(data, steps, work)}
        if LORA["dropout"]:  # the cost of dropout, same run
            results["tunebench_dropout0"] = run_tunebench(data, steps, work, dropout=0.0)
        if args.device == "cuda":  # tunebench's padding-free batches beside TRL's (train.padding_free)
            results["tunebench_padding_free"] = run_tunebench(data, steps, work, padding_free=True)
        for name in args.peers:
            out = work / f"{name}.json"
            rss = run_child([sys.executable, __file__, "--worker", name, "--work", str(work),
                              "--threads", str(args.threads), "--device", args.device] + (["--quick"] if args.quick else [])
                             + ["--steps", str(args.steps), "--workload", args.workload, "--model-size", args.model_size])
            results[name] = {**json.loads(out.read_text()), "peak_rss_mb": rss}
        # measured again at the end: a peak taken while the machine was busy elsewhere would flatter MFU
        peak = max(peak, bf16_peak(args.threads, args.device))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    # the sequences tunebench trained on (its batch order is known in advance); the peers' come from their collators
    lengths, positions = info.pop("batch_lengths")[:steps], info.pop("batch_loss_positions")[:steps]
    for name in results:
        if name.startswith("tunebench"):
            results[name]["lengths"], results[name]["loss_positions"] = lengths, positions
    dims, nominal = model_dims(), nominal_peak(args.device, args.threads)
    figures = {}
    for name, res in results.items():
        rate, tokens, secs = timed(res, warmup)
        lengths, loss_positions = res["lengths"][warmup:steps], res["loss_positions"][warmup:steps]
        assert sum(map(sum, lengths)) == tokens, (name, sum(map(sum, lengths)), tokens)
        flops = step_flops(dims, lengths, loss_positions)
        figures[name] = {"tokens_per_s": rate, "tokens": tokens, "seconds": secs,
                         "loss_tokens": sum(map(sum, loss_positions)), "model_flops": flops,
                         "model_flops_per_real_token": flops / tokens,
                         "mfu_vs_measured_peak": flops / secs / peak,
                         "mfu_vs_nominal_peak": flops / secs / nominal["flops"] if nominal["flops"] else None,
                         "peak_rss_mb": res["peak_rss_mb"], "peak_gpu_mb": res.get("peak_gpu_mb"), "loss": res["loss"]}
        for k in ("gradient_checkpointing", "bf16_autocast", "dtypes", "allocator"):
            if k in res:
                figures[name][k] = res[k]
    tb = figures["tunebench"]
    tb_rate = tb["tokens_per_s"]
    peers = {name: figures[name]["tokens_per_s"] for name in args.peers}
    ratios = {name: tb_rate / rate for name, rate in peers.items()}
    for name in args.peers:
        pf = figures[name]
        print(f"{name}: tunebench {tb_rate:.1f} real tokens/s, {name} {pf['tokens_per_s']:.1f} real tokens/s, "
              f"ratio {ratios[name]:.2f}x; peak RSS {tb['peak_rss_mb']:.0f} MB vs {pf['peak_rss_mb']:.0f} MB"
              + (f", peak GPU memory {tb['peak_gpu_mb']:.0f} MB vs {pf['peak_gpu_mb']:.0f} MB"
                 if args.device == "cuda" else ""), flush=True)
    match = None
    if "trl_tuned" in results:
        a, b = results["tunebench"]["loss"], results["trl_tuned"]["loss"]
        diffs = [abs(x - y) for x, y in zip(a, b)]
        match = {"steps": len(diffs), "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
                 "max_rel_diff": max(d / abs(y) for d, y in zip(diffs, b)), "first_step_abs_diff": diffs[0]}
        print(f"loss curve vs trl_tuned (same batches): max |diff| {match['max_abs_diff']:.4f}, "
              f"mean {match['mean_abs_diff']:.4f}, max relative {match['max_rel_diff']:.2%} over {len(diffs)} steps")
    for name, f in figures.items():
        vs_nominal = (f"{f['mfu_vs_nominal_peak']:.1%} of the nominal {nominal['flops'] / 1e9:.0f} GFLOP/s bf16 peak"
                      if nominal["flops"] else "no nominal peak")
        print(f"MFU {name}: {f['mfu_vs_measured_peak']:.1%} of the measured {peak / 1e9:.0f} GFLOP/s bf16 matmul peak, "
              f"{vs_nominal} ({f['model_flops_per_real_token'] / 1e6:.0f} MFLOP per real token x "
              f"{f['tokens_per_s']:.1f} tokens/s); timed {f['tokens']} tokens in {f['seconds']:.1f} s", flush=True)
    print("nominal peak: " + (nominal["derivation"] if nominal["flops"] else f"none ({nominal['reason']})"), flush=True)
    dropout_cost = None
    if "tunebench_dropout0" in figures:
        d0 = figures["tunebench_dropout0"]
        dropout_cost = {"dropout": LORA["dropout"], "tokens_per_s": tb_rate, "tokens_per_s_dropout0": d0["tokens_per_s"],
                        "ratio": tb_rate / d0["tokens_per_s"], "peak_rss_mb": tb["peak_rss_mb"],
                        "peak_rss_mb_dropout0": d0["peak_rss_mb"]}
        print(f"dropout {LORA['dropout']} vs 0 (tunebench, same run): {tb_rate:.1f} vs {d0['tokens_per_s']:.1f} real "
              f"tokens/s = {dropout_cost['ratio']:.1%}; peak RSS {tb['peak_rss_mb']:.0f} vs {d0['peak_rss_mb']:.0f} MB",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "workload": "W1-demo" if args.workload == "demo" else "W1", "unit": "real tokens/s",
            "model": model_record(args.model_size),
            "dropout_cost": dropout_cost, "tunebench": tb_rate, "peers": peers, "ratios": ratios,
            "extra": {"mfu_vs_measured_peak": tb["mfu_vs_measured_peak"], "mfu_vs_nominal_peak": tb["mfu_vs_nominal_peak"],
                      "measured_bf16_matmul_peak_flops": peak, "nominal_peak": nominal,
                      "model_flops_per_real_token": tb["model_flops_per_real_token"],
                      "flops_formula": "per real token sum over decoder linears of 4 d_in d_out + 6 r (d_in + d_out), "
                                       "less layer 0's q,k,v input gradients; + 4 hidden vocab per loss position; "
                                       "+ 6 layers heads head_dim n (n + 1) per sequence (bench/_flops.py)",
                      "model_dims": dims.__dict__,
                      "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in figures.items()},
                      "peak_gpu_mb": {k: v["peak_gpu_mb"] for k, v in figures.items()}, "device": args.device,
                      "loss_match_trl_tuned": match, "tools": figures, "warmup_steps": warmup,
                      "timed_steps": steps - warmup, "threads": args.threads,
                      "batch_size": BATCH, "max_length": MAX_LEN, "lora": LORA, "lr": LR, "schedule": SCHEDULE,
                      "warmup_ratio": WARMUP_RATIO, **info}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
