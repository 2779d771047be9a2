"""Shared fixtures: tiny models built locally from a config (no download), and the real data."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TUNEBENCH_DATA", REPO.parent / "shared" / "data"))
DIALOGSUM = DATA / "dialogsum"

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def _fresh_data_root_settings():
    """A recipe's data_root or a --data-root seen by one test must not steer the next."""
    yield
    from tunebench.io import locations

    locations.reset()


def materialise(spec: Path, root: Path) -> Path:
    """Write out a folder kept in the repository as one JSON file (relative path -> exact text):
    BIG-bench containers, whose files must be named task.json like the real tasks' files.
    Returns root/<spec's stem>."""
    folder = root / spec.stem
    for rel, text in json.loads(spec.read_text(encoding="utf-8")).items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    return folder


def dialogsum_rows(split: str, n: int | None = None) -> list[dict]:
    rows = []
    with open(DIALOGSUM / f"dialogsum.{split}.jsonl", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if n and len(rows) == n:
                break
    return rows


def build_tokenizer(bos: bool = True):
    """A byte-level BPE trained in well under a second on DialogSum dev text."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    texts = [r["dialogue"] + "\n" + r["summary"] for r in dialogsum_rows("dev", 200)]
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:  # like Llama: the tokenizer itself prepends BOS, which is what makes a double BOS possible
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    return tok


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny-llama")
    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True, initializer_range=0.2)  # big enough that LoRA alone can overfit
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    d = tmp_path_factory.mktemp("tiny-t5")
    tok = build_tokenizer(bos=False)
    tk = tok.backend_tokenizer
    from tokenizers import processors

    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.eos_token_id)])
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                   decoder_start_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    T5ForConditionalGeneration(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A small prepared DialogSum directory (real data): 16 train, 4 validation, 4 test."""
    from tunebench.config import DataConfig
    from tunebench.pipeline import prepare_stage

    d = tmp_path_factory.mktemp("prepared")
    prepare_stage(DataConfig(path=str(DIALOGSUM), train_limit=16, validation_limit=4, test_limit=4), d)
    return d


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render_in_chromium(html: Path, shot: Path, element: str | None = None) -> tuple[list[str], list[list]]:
    """Open a report in headless Chromium: its console errors, and [alt, complete, width, height]
    of every image. A screenshot goes to `shot`: the element matching the `element` selector, or the
    whole page."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        if element:
            page.locator(element).screenshot(path=str(shot))
        else:
            page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return errors, images


def assert_not_blank(shot: Path) -> None:
    """A screenshot with contrast and detail (not a blank page); kept at $TUNEBENCH_SCREENSHOT if set."""
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 100 and len(set(img.resize((64, 64)).tobytes())) > 20  # not blank
    keep = os.environ.get("TUNEBENCH_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
