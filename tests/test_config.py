import pytest

from tunebench.config import Recipe, load_recipe
from tunebench.errors import UserError
from conftest import REPO


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
])
def test_recipe_errors_name_file_line_and_key(tmp_path, text, expected):
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(UserError, match=expected):
        load_recipe(tmp_path / "r.yaml")
