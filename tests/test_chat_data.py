"""Chat datasets in: OpenAI messages, ShareGPT and Alpaca records, save_to_disk folders, and the
assistant-only label mask checked token by token against TRL's."""
import copy
import json
from pathlib import Path

import pytest
from conftest import CHAT_TEMPLATE, build_tokenizer, dialogsum_rows

from tunebench.config import DataConfig, GenerateConfig, ModelConfig, TrainConfig
from tunebench.data.examples import prepare
from tunebench.errors import UserError
from tunebench.io.locations import data_root
from tunebench.models.batching import IGNORE, NEEDS_CHAT_TEMPLATE, Formatter, prompt_of

SYSTEM = "You write short summaries of dialogues."


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _conversations(n: int) -> list[list[dict]]:
    """Real multi-turn conversations: a DialogSum dialogue summarised, then its topic asked for;
    every other one opens with a system turn."""
    out = []
    for i, r in enumerate(dialogsum_rows("train", n)):
        turns = [{"role": "user", "content": f"Summarize this dialogue:\n{r['dialogue']}"},
                 {"role": "assistant", "content": r["summary"]},
                 {"role": "user", "content": "And its topic, in a few words?"},
                 {"role": "assistant", "content": r["topic"]}]
        out.append(([{"role": "system", "content": SYSTEM}] if i % 2 else []) + turns)
    return out


def _id(example: dict) -> str:
    return example["id"]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from tunebench import models

    return models.load_tokenizer(models.resolve("smollm2-135m-instruct").path)


# ---------------------------------------------------------------------------- same examples as the task

@pytest.mark.parametrize("task", ["dialogsum", "samsum"])
def test_dialogsum_and_samsum_records_as_messages_give_the_task_training_examples(task, tmp_path, smollm2_tokenizer):
    """The task's own training examples, written as one user turn and one assistant turn each,
    come back as the same examples and the same tokens and labels."""
    cfg = DataConfig(dataset="dialogsum" if task == "dialogsum" else str(data_root() / "samsum"), task=task,
                     train_limit=40, validation_limit=8, test_limit=4)
    by_task, _ = prepare(cfg)
    folder = tmp_path / "messages"
    for split in ("train", "validation"):
        _write_jsonl(folder / f"{split}.jsonl", [
            {"id": e["id"], "messages": [{"role": "user", "content": e["prompt"]},
                                         {"role": "assistant", "content": e["completion"]}]} for e in by_task[split]])
    as_chat, summary = prepare(DataConfig(dataset=str(folder)))
    assert summary["task"] == "messages"
    tiny = build_tokenizer()
    tiny.chat_template = CHAT_TEMPLATE
    for split in ("train", "validation"):
        assert len(as_chat[split]) == len(by_task[split]) > 0
        for a, b in zip(sorted(by_task[split], key=_id), sorted(as_chat[split], key=_id)):  # validation: shuffled
            assert (a["id"], a["prompt"], a["completion"], a["references"]) == (b["id"], b["prompt"], b["completion"], b["references"])
            for tok in (smollm2_tokenizer, tiny):
                fmt = Formatter.for_model(tok, False)
                assert fmt.use_chat
                assert fmt.encode(b, 4096) == fmt.encode(a, 4096)


# ---------------------------------------------------------------------------- the label mask against TRL's

def _trl_rows(tokenizer, conversations: list[list[dict]], tmp_path) -> list[dict]:
    """TRL's own tokenization of conversational data with assistant_only_loss (its SFTTrainer's
    dataset preparation), on a model of the tokenizer's vocabulary that never runs."""
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    args = SFTConfig(output_dir=str(tmp_path / "trl"), assistant_only_loss=True, max_length=None, report_to="none",
                     use_cpu=True, bf16=False)
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list([{"messages": c} for c in conversations]))
    return [trainer.train_dataset[i] for i in range(len(conversations))]


def _smollm2_marked(template: str) -> str:
    """SmolLM2's chat template with TRL's {% generation %} markers around each assistant turn's text
    and its <|im_end|>: what TRL needs to mask a template it does not ship a training copy of."""
    turn = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    assert turn in template
    return template.replace(turn, "{% if message['role'] == 'assistant' %}{{'<|im_start|>assistant\n'}}"
                            "{% generation %}{{message['content'] + '<|im_end|>'}}{% endgeneration %}{{'\n'}}"
                            "{% else %}" + turn + "{% endif %}")


def _trl_training_template(name: str) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text()


@pytest.mark.parametrize("template", ["smollm2", "trl-qwen2.5-training"])
def test_label_mask_equals_trl_assistant_only_loss_token_by_token(template, smollm2_tokenizer, tmp_path):
    """smollm2: tunebench on SmolLM2's own template (no markers: each assistant turn's text and its
    EOS) against TRL on the same template with markers added, which renders the same text.
    trl-qwen2.5-training: both on TRL's own training template, whose markers tunebench follows."""
    conversations = _conversations(6) + [c[-2:] for c in _conversations(2)]
    ours, theirs = copy.deepcopy(smollm2_tokenizer), copy.deepcopy(smollm2_tokenizer)
    if template == "smollm2":
        theirs.chat_template = _smollm2_marked(ours.chat_template)
        for c in conversations:
            assert theirs.apply_chat_template(c, tokenize=False) == ours.apply_chat_template(c, tokenize=False)
    else:
        ours.chat_template = theirs.chat_template = _trl_training_template("qwen2_5_training")
    fmt = Formatter.for_model(ours, False)
    trained = 0
    for conv, row in zip(conversations, _trl_rows(theirs, conversations, tmp_path)):
        enc = fmt.encode({"id": "x", "prompt": "", "completion": conv[-1]["content"], "messages": conv}, 4096)
        n = len(enc["input_ids"])
        assert enc["input_ids"] == row["input_ids"][:n]
        assert enc["labels"] == row["labels"][:n]
        # what TRL keeps past tunebench's last token is the template's line break after the final
        # <|im_end|>: nothing learns from it (TRL's qwen2.5 training template does train it)
        tail = row["labels"][n:]
        assert len(tail) <= 1 and (template != "smollm2" or tail == [IGNORE] * len(tail))
        trained += sum(t != IGNORE for t in enc["labels"])
    assert trained > 0


def test_every_assistant_turn_carries_the_loss_and_nothing_else():
    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    fmt = Formatter.for_model(tok, False)
    conv = _conversations(2)[1]
    ids, labels = fmt.conversation_ids(conv)
    assert tok.decode(ids) == tok.apply_chat_template(conv, tokenize=False).rstrip("\n")
    spans, cur = [], []
    for t, lab in zip(ids, labels):
        if lab != IGNORE:
            assert lab == t
            cur.append(t)
        elif cur:
            spans.append(cur)
            cur = []
    spans += [cur] if cur else []
    answers = [t["content"] for t in conv if t["role"] == "assistant"]
    assert [tok.decode(s) for s in spans] == [a + tok.eos_token for a in answers]


def test_a_conversation_needs_a_chat_template_unless_it_is_one_exchange():
    tok = build_tokenizer()
    plain = Formatter.for_model(tok, False)  # no chat template
    conv = _conversations(1)[0]
    with pytest.raises(UserError, match="needs the model's chat template"):
        plain.encode({"id": "x", "prompt": "", "completion": conv[-1]["content"], "messages": conv}, 4096)
    one = conv[:2]
    ex = {"id": "x", "prompt": one[0]["content"], "completion": one[1]["content"], "messages": one}
    assert plain.encode(ex, 4096) == plain.encode({k: v for k, v in ex.items() if k != "messages"}, 4096)
    assert NEEDS_CHAT_TEMPLATE.startswith("a conversation")


# ---------------------------------------------------------------------------- formats and sources

def test_sharegpt_and_alpaca_records_become_the_same_conversations(tmp_path):
    conv = _conversations(3)[1]  # system, user, assistant, user, assistant
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    share = _write_jsonl(tmp_path / "share.jsonl", [
        {"id": "a", "conversations": [{"from": names[t["role"]], "value": t["content"]} for t in conv]}])
    msgs = _write_jsonl(tmp_path / "msgs.jsonl", [{"id": "a", "messages": conv}])
    r = dialogsum_rows("dev", 1)[0]
    alpaca = _write_jsonl(tmp_path / "alpaca.jsonl", [
        {"id": "a", "instruction": "Summarize this dialogue.", "input": r["dialogue"], "output": r["summary"]}])
    kw = dict(validation_fraction=0, test_fraction=0)
    a, _ = prepare(DataConfig(dataset=str(share), **kw))
    b, _ = prepare(DataConfig(dataset=str(msgs), **kw))
    assert a["train"][0]["messages"] == b["train"][0]["messages"] == conv
    assert a["train"][0]["prompt"] == conv[-2]["content"] and a["train"][0]["references"] == [conv[-1]["content"]]
    c, summary = prepare(DataConfig(dataset=str(alpaca), **kw))
    assert summary["task"] == "alpaca"
    assert c["train"][0]["messages"] == [{"role": "user", "content": f"Summarize this dialogue.\n\n{r['dialogue']}"},
                                         {"role": "assistant", "content": r["summary"]}]
    # --format task reads the same file through a task's templates instead (and wants its fields)
    with pytest.raises(UserError, match="field 'prompt' is missing"):
        prepare(DataConfig(dataset=str(alpaca), task="prompt_completion", format="task", **kw))


def test_turns_after_the_last_assistant_turn_are_left_out(tmp_path):
    conv = _conversations(1)[0] + [{"role": "user", "content": "Thanks!"}]
    f = _write_jsonl(tmp_path / "c.jsonl", [{"messages": conv}])
    ex, _ = prepare(DataConfig(dataset=str(f), validation_fraction=0, test_fraction=0))
    assert ex["train"][0]["messages"] == conv[:-1]
    assert prompt_of(ex["train"][0]) == conv[:-2]


def test_save_to_disk_folders_keep_their_splits_or_take_one(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = {s: [{"id": f"{s}-{i}", "messages": c} for i, c in enumerate(_conversations(n))]
            for s, n in (("train", 6), ("validation", 3), ("test", 2))}
    DatasetDict({s: Dataset.from_list(r) for s, r in rows.items()}).save_to_disk(str(tmp_path / "dd"))
    ex, summary = prepare(DataConfig(dataset=str(tmp_path / "dd")))
    assert summary["counts"] == {"train": 6, "validation": 3, "test": 2}
    assert sorted(e["id"] for e in ex["test"]) == ["test-0", "test-1"]
    assert ex["test"][0]["source"].endswith("[test]:1")
    assert ex["train"][0]["messages"] == rows["train"][0]["messages"]  # Arrow's round trip adds no keys
    one, summary = prepare(DataConfig(dataset=str(tmp_path / "dd"), dataset_split="train", test_fraction=0.5,
                                      validation_fraction=0))
    assert summary["counts"] == {"train": 3, "validation": 0, "test": 3}
    with pytest.raises(UserError, match=r"no split 'dev' \(data.dataset_split; it has train, validation, test\)"):
        prepare(DataConfig(dataset=str(tmp_path / "dd"), dataset_split="dev"))
    Dataset.from_list(rows["train"]).save_to_disk(str(tmp_path / "one"))
    ex, summary = prepare(DataConfig(dataset=str(tmp_path / "one"), test_fraction=0.5, validation_fraction=0))
    assert summary["counts"]["train"] + summary["counts"]["test"] == 6


def test_a_hub_dataset_id_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="knkarthick/dialogsum: a Hub dataset id, but HF_HUB_OFFLINE is set"):
        prepare(DataConfig(dataset="knkarthick/dialogsum", dataset_config="default", dataset_split="train"))


# ---------------------------------------------------------------------------- train and evaluate

def test_multi_turn_chat_data_trains_and_evaluates_on_the_last_assistant_turn(tiny_llama, tmp_path):
    from tunebench.pipeline import evaluate_stage, prepare_stage, train_stage

    rows = [{"id": f"c{i}", "messages": c} for i, c in enumerate(_conversations(24))]
    src = tmp_path / "src"
    _write_jsonl(src / "train.jsonl", rows[:16])
    _write_jsonl(src / "validation.jsonl", rows[16:20])
    _write_jsonl(src / "test.jsonl", rows[20:])
    prepare_stage(DataConfig(dataset=str(src)), tmp_path / "data")
    model = ModelConfig(model=str(tiny_llama))
    s = train_stage(model, TrainConfig(max_steps=2, batch_size=4, precision="fp32", max_length=1024, report_to=["none"]),
                    tmp_path / "data", tmp_path / "run")
    assert s["steps"] == 2 and s["final_loss"] > 0
    m = evaluate_stage(ModelConfig(model=str(tmp_path / "run")), GenerateConfig(max_new_tokens=4, precision="fp32"),
                       tmp_path / "data", tmp_path / "eval")
    assert m["n"] == 4
    preds = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [p["references"] for p in preds] == [[r["messages"][-1]["content"]] for r in rows[20:]]
