"""Mixing rates, exact counts for a seed, few-shot renderings, and the prepared mixture on disk."""
import json

import pytest
from conftest import DIALOGSUM

from tunebench.config import DataConfig, MixtureConfig
from tunebench.data.mixtures import allocate, rates, realised
from tunebench.pipeline import build_mixture as build
from tunebench.pipeline import prepare_stage


def test_examples_proportional_with_a_cap():
    # FLAN: a task counts with at most `cap` examples; 10,000 -> 3,000
    shares = rates([10000, 2000, 500], [1, 1, 1], cap=3000, temperature=1)
    assert shares == pytest.approx([3000 / 5500, 2000 / 5500, 500 / 5500])
    # 54.55, 36.36, 9.09: floors 54, 36, 9 and the one left over goes to the largest remainder
    assert allocate(100, shares) == [55, 36, 9]
    assert rates([10000, 2000], [1, 1], cap=None, temperature=1) == pytest.approx([10000 / 12000, 2000 / 12000])


def test_temperature_flattens_the_rates():
    shares = rates([10000, 2000, 500], [1, 1, 1], cap=3000, temperature=2)
    root = [3000 ** 0.5, 2000 ** 0.5, 500 ** 0.5]
    assert shares == pytest.approx([r / sum(root) for r in root])
    assert allocate(100, shares) == [45, 37, 18]   # 44.95, 36.70, 18.35
    assert allocate(100, rates([10000, 2000, 500], [1, 1, 1], 3000, 1000)) == [34, 33, 33]  # nearly equal


def test_allocate_always_sums_to_total():
    for total in (1, 7, 100, 999):
        counts = allocate(total, rates([5, 17, 3000, 1], [1, 2, 1, 1], 100, 1.5))
        assert sum(counts) == total and min(counts) >= 0


CFG = dict(tasks=["sst2", "rte", "cb", {"task": "mrpc", "weight": 2}], total=60, cap=500, fewshot_share=0.5,
           max_shots=2, seed=3)


def test_exact_counts_per_task_template_and_shots_for_a_seed():
    train, validation, plan = build(MixtureConfig(**CFG))
    m = {t["task"]: t for t in realised(train, validation, plan)["tasks"]}
    # pools after the reserved benchmark rows are left out; mrpc weighs double
    assert {k: t["pool"] for k, t in m.items()} == {"sst2": 722, "rte": 2364, "cb": 222, "mrpc": 265}
    assert {k: round(t["rate"], 4) for k, t in m.items()} == {"sst2": 0.2854, "rte": 0.2854, "cb": 0.1267, "mrpc": 0.3025}
    assert {k: t["examples"] for k, t in m.items()} == {"sst2": 17, "rte": 17, "cb": 8, "mrpc": 18}
    assert m["sst2"]["templates"] == {"did_they_like_it": 7, "negative_or_positive": 1, "sentiment": 8, "write_review": 1}
    assert m["mrpc"]["templates"] == {"paraphrase": 4, "same_meaning": 3, "say_the_same": 7, "write_paraphrase": 4}
    assert {k: t["shots"] for k, t in m.items()} == {
        "sst2": {"0": 9, "1": 2, "2": 6}, "rte": {"0": 9, "1": 4, "2": 4},
        "cb": {"0": 4, "1": 3, "2": 1}, "mrpc": {"0": 9, "1": 5, "2": 4}}
    assert all(t["validation"] == 8 for t in m.values())
    again, _, _ = build(MixtureConfig(**CFG))
    assert again == train
    other, _, _ = build(MixtureConfig(**{**CFG, "seed": 4}))
    assert other != train and [r["task"] for r in other].count("cb") == 8  # the seed picks, the rates count


def test_few_shot_renderings_use_other_records_of_the_same_task_and_template():
    train, validation, _ = build(MixtureConfig(**CFG))
    few = [r for r in train if r["shots"]]
    assert few
    for r in few:
        assert r["id"] not in r["shot_ids"] and all(s.startswith(r["task"] + "/") for s in r["shot_ids"])
        assert len(r["shot_ids"]) == r["shots"] <= 2
        assert r["prompt"].count("\n\n") >= r["shots"]
    # an exemplar is that record rendered with the same template and followed by its answer
    from tunebench.data.templates import get_task
    from tunebench.pipeline import task_pool as pool

    r = few[0]
    task = get_task(r["task"])
    recs = {x["_id"]: x for x in pool(task).train}
    tmpl = task.template(r["template"])
    first = recs[r["shot_ids"][0]]
    assert r["prompt"].startswith(tmpl.render(first) + "\n" + tmpl.render_target(first) + "\n\n")
    main = recs[r["id"].split("~")[0]]
    assert r["prompt"].endswith(tmpl.render(main)) and r["completion"] == tmpl.render_target(main)
    # validation: held out, zero-shot, never in training
    assert not {v["id"] for v in validation} & {t["id"].split("~")[0] for t in train}
    assert all(v["shots"] == 0 for v in validation)


def test_small_pool_repeats_and_inverted_can_be_left_out():
    train, _, plan = build(MixtureConfig(tasks=["cb"], total=300, cap=None, inverted=False, fewshot_share=0, seed=1))
    m = realised(train, [], plan)["tasks"][0]
    assert m["examples"] == 300 and m["unique_records"] == 222 and m["repeats"] == 78
    assert "write_hypothesis" not in m["templates"] and any(r["id"].endswith("~1") for r in train)


def test_prepare_stage_writes_the_mixture_and_its_realised_counts(tmp_path):
    cfg = MixtureConfig(tasks=["sst2", "dialogsum", "boolq"], total=30, fewshot_share=0.3, validation_per_task=2, seed=0)
    summary = prepare_stage(DataConfig(path=str(DIALOGSUM), test_limit=3), tmp_path, cfg)
    m = json.loads((tmp_path / "mixture.json").read_text())
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert m["totals"]["examples"] == len(train) == 30 and summary["task"] == "mixture"
    assert {t["task"]: t["examples"] for t in m["tasks"]} == {t: sum(r["task"] == t for r in train)
                                                            for t in ("sst2", "dialogsum", "boolq")}
    assert sum(sum(t["shots"].values()) for t in m["tasks"]) == 30
    assert [r["id"] for r in test] == ["test_0", "test_1", "test_2"] and len(test[0]["references"]) == 3
    assert all(not r["id"].startswith("dialogsum/test") for r in train)  # DialogSum test is evaluation only
    assert summary["counts"] == {"train": 30, "validation": 6, "test": 3}
