"""Label masks, EOS and BOS handling: the pitfalls that make tuned models never stop or mis-train."""
from transformers import AutoTokenizer

from tunebench.models.batching import IGNORE, Formatter, collate, train_batches


def _fmt(path, seq2seq=False):
    tok = AutoTokenizer.from_pretrained(path)
    return Formatter.for_model(tok, seq2seq), tok


EX = {"id": "x", "prompt": "Summarize: #Person1#: Hello there.", "completion": "They greet each other."}


def test_labels_mask_exactly_the_prompt_and_keep_eos(tiny_llama):
    fmt, tok = _fmt(tiny_llama)
    enc = fmt.encode(EX, 512)
    p = fmt.prompt_ids(EX["prompt"])
    assert enc["input_ids"][: len(p)] == p
    assert enc["labels"][: len(p)] == [IGNORE] * len(p)
    target = enc["labels"][len(p):]
    assert IGNORE not in target and target == enc["input_ids"][len(p):]
    assert target[-1] == tok.eos_token_id
    assert tok.decode(target, skip_special_tokens=True) == EX["completion"]


def test_eos_stays_in_labels_when_pad_is_eos(tiny_llama):
    fmt, tok = _fmt(tiny_llama)
    tok.pad_token = tok.eos_token
    enc = fmt.encode(EX, 512)
    batch = collate([enc, fmt.encode({**EX, "completion": "Hi."}, 512)], tok.pad_token_id, False)
    for row, e in zip(batch["labels"], [enc]):
        assert int(row[len(e["labels"]) - 1]) == tok.eos_token_id
    # padding positions are masked even though their id equals EOS
    short = batch["labels"][1]
    n = batch["attention_mask"][1].sum()
    assert (short[n:] == IGNORE).all() and int(short[n - 1]) == tok.eos_token_id


def test_no_double_bos_with_chat_template(tiny_llama):
    fmt, tok = _fmt(tiny_llama)
    assert fmt.use_chat
    ids = fmt.prompt_ids(EX["prompt"])
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1
    # the plain-text path lets the tokenizer add its BOS exactly once
    plain = Formatter.for_model(tok, False, chat_template="off").prompt_ids(EX["prompt"])
    assert plain.count(tok.bos_token_id) == 1


def test_seq2seq_encoding(tiny_t5):
    fmt, tok = _fmt(tiny_t5, seq2seq=True)
    enc = fmt.encode(EX, 512)
    assert enc["labels"][-1] == tok.eos_token_id and IGNORE not in enc["labels"]
    assert enc["input_ids"][-1] == tok.eos_token_id


def test_overlong_examples_are_reported(tiny_llama):
    import pytest

    from tunebench.errors import UserError
    from tunebench.models.batching import encode_all

    fmt, _ = _fmt(tiny_llama)
    long = {**EX, "id": "long", "prompt": "word " * 400}
    enc, skipped = encode_all(fmt, [EX, long], 64, "skip", "t")
    assert len(enc) == 1 and skipped == 1
    with pytest.raises(UserError, match="example 'long' has \\d+ tokens, over max_length 64"):
        encode_all(fmt, [EX, long], 64, "error", "t")


def test_length_grouped_batches_cover_every_example_once():
    lengths = [((i * 37) % 101) + 5 for i in range(203)]
    b = train_batches(lengths, 8, seed=1, epoch=0, group_by_length=True)
    flat = sorted(i for batch in b for i in batch)
    assert flat == list(range(203))
    assert b == train_batches(lengths, 8, seed=1, epoch=0, group_by_length=True)
    assert b != train_batches(lengths, 8, seed=1, epoch=1, group_by_length=True)
    pad = sum(max(lengths[i] for i in x) * len(x) - sum(lengths[i] for i in x) for x in b)
    rnd = train_batches(lengths, 8, seed=1, epoch=0, group_by_length=False)
    pad_rnd = sum(max(lengths[i] for i in x) * len(x) - sum(lengths[i] for i in x) for x in rnd)
    assert pad < pad_rnd / 3


def test_budget_batches_bound_rows_and_cache_tokens():
    from tunebench.models.batching import budget_batches

    lengths = [500, 40, 300, 40, 40, 1000, 300, 40]
    batches = budget_batches(lengths, max_rows=3, budget=1200, extra=100)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert batches == [[5], [0, 2], [6, 1, 3], [4, 7]]
    for b in batches:  # rows x (longest + new tokens) within budget, unless one row alone exceeds it
        assert len(b) <= 3 and (len(b) == 1 or len(b) * (max(lengths[i] for i in b) + 100) <= 1200)
    assert budget_batches(lengths, max_rows=2, budget=10**6, extra=0) == [[5, 0], [2, 6], [1, 3], [4, 7]]
    assert budget_batches([3000], max_rows=4, budget=100, extra=10) == [[0]]


def test_budget_batches_with_a_step_cost_give_an_outlier_its_own_batch():
    from tunebench.models.batching import budget_batches

    lengths = [100, 1000, 100, 90, 100]
    # one batch: 500 + 5 x 1000 cache tokens; the outlier alone: (500 + 1000) + (500 + 4 x 100)
    assert budget_batches(lengths, max_rows=5, budget=10**6, extra=0, batch_cost=500) == [[1], [0, 2, 4, 3]]
    # when a batch's fixed cost outweighs the padding, the fewest batches win
    assert budget_batches(lengths, max_rows=5, budget=10**6, extra=0, batch_cost=10**4) == [[1, 0, 2, 4, 3]]
    # rows and cache tokens stay bounded
    assert budget_batches(lengths, max_rows=2, budget=10**6, extra=0, batch_cost=10**4) == [[1], [0, 2], [4, 3]]
    assert budget_batches(lengths, max_rows=5, budget=350, extra=10, batch_cost=10**4) == [[1], [0, 2, 4], [3]]
