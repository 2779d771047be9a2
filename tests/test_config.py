import pytest
from conftest import REPO

from tunebench.config import Recipe, load_recipe
from tunebench.errors import UserError


def test_demo_recipe_loads_and_overrides_apply():
    r = load_recipe(REPO / "recipes" / "dialogsum-lora.yaml", ["train.lr=1e-4", "evaluate.limit=5"])
    assert isinstance(r, Recipe) and r.train.lr == 1e-4 and r.evaluate.limit == 5 and r.train.method == "lora"


@pytest.mark.parametrize("text,expected", [
    ("train:\n  lr: 1e-4\n  lora_rr: 8\n", r"r\.yaml:3: train\.lora_rr: unknown key \(did you mean 'lora_r'\?\)"),
    ("train:\n  lr: -1.0\n", r"r\.yaml:2: train\.lr: Input should be greater than 0"),
    ("train:\n  batch_size: 0\n", r"r\.yaml:2: train\.batch_size: Input should be greater than 0"),
    ("trian:\n  lr: 1\n", r"r\.yaml:1: trian: unknown key \(did you mean 'train'\?\)"),
    ("train: [1, 2\n", r"r\.yaml:\d+: not valid YAML"),
    ("train:\n  method: qlora\n", r"r\.yaml:2: train\.method: Input should be 'lora' or 'full'"),
    ("mixture:\n  tasks: [sst2]\n  temperatur: 2\n", r"r\.yaml:3: mixture\.temperatur: unknown key \(did you mean 'temperature'\?\)"),
    ("mixture:\n  tasks:\n    - {task: sst2, wieght: 2}\n", r"r\.yaml:3: mixture\.tasks\[0\]\.wieght: unknown key \(did you mean 'weight'\?\)"),
    ("mixture:\n  tasks: [sst2]\n  fewshot_share: 1.5\n", r"r\.yaml:3: mixture\.fewshot_share: Input should be less than or equal to 1"),
    ("contamination:\n  n: 1\n", r"r\.yaml:2: contamination\.n: Input should be greater than or equal to 2"),
])
def test_recipe_errors_name_file_line_and_key(tmp_path, text, expected):
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(UserError, match=expected):
        load_recipe(tmp_path / "r.yaml")


def test_multitask_recipe_loads_with_its_mixture_and_contamination_sections():
    r = load_recipe(REPO / "recipes" / "multitask-lora.yaml", ["mixture.total=16", "contamination.drop=false"])
    assert r.mixture.total == 16 and r.mixture.cap == 3000 and r.mixture.temperature == 1.0
    assert [t.task for t in r.mixture.tasks][:3] == ["dialogsum", "samsum", "amazon_reviews"] and len(r.mixture.tasks) >= 9
    assert r.contamination.enabled and not r.contamination.drop and r.contamination.n == 13
    demo = load_recipe(REPO / "recipes" / "dialogsum-lora.yaml")
    # same model, LoRA and evaluation as the single-task demo: the comparison changes only the training data
    assert r.model == demo.model and r.evaluate == demo.evaluate and r.forgetting == demo.forgetting
    assert r.train.model_dump(exclude={"save_every"}) == demo.train.model_dump(exclude={"save_every"})
    assert r.data.eval_template == demo.data.eval_template and r.data.test_limit is None


def test_a_stage_recorded_before_a_setting_existed_stays_complete_while_it_is_at_its_default(tmp_path):
    """train.padding_free came after stages were recorded without it: at its default it is left out
    of the recorded settings, so those stages are not redone; set, it is recorded and they are."""
    import json

    from tunebench.config import ModelConfig, TrainConfig
    from tunebench.io.layout import stage_config
    from tunebench.io.runs import completed

    model = ModelConfig(model="m")
    now = stage_config("data", model=model, train=TrainConfig())
    assert "padding_free" not in now["train"]
    before = json.loads(json.dumps(now))  # what an older tunebench wrote: no such key at all
    (tmp_path / "run.json").write_text(json.dumps({"status": "complete", "config": before}))
    assert completed(tmp_path, stage_config("data", model=model, train=TrainConfig()))
    packed = stage_config("data", model=model, train=TrainConfig(padding_free=True))
    assert packed["train"]["padding_free"] is True and not completed(tmp_path, packed)
