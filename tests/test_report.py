"""The HTML report of a small real run, rendered in headless Chromium; and `tunebench chat`."""
import os
import sys

import pytest
from conftest import CHROMIUM, DIALOGSUM, REPO, assert_not_blank, render_in_chromium

from tunebench.cli import main


@pytest.fixture(scope="module")
def small_run(tiny_llama, tmp_path_factory):
    """The demo recipe end to end on the tiny model: real data, real metrics, real benchmark tasks."""
    out = tmp_path_factory.mktemp("run") / "demo"
    assert main(["run", str(REPO / "recipes" / "dialogsum-lora.yaml"), "--set", f"out={out}",
                 "--set", f"model.model={tiny_llama}", "--set", f"data.path={DIALOGSUM}",
                 "--set", "data.train_limit=24", "--set", "data.validation_limit=4", "--set", "data.test_limit=4",
                 "--set", "train.epochs=2", "--set", "train.batch_size=4", "--set", "train.lr=1e-2",
                 "--set", "evaluate.max_new_tokens=12", "--set", "forgetting.suite=[]",
                 "--set", "forgetting.task=[superglue/copa, glue/sst2, bigbench/object_counting]",
                 "--set", "forgetting.limit=8", "--set", "forgetting.max_new_tokens=4"]) == 0
    return out


def test_report_has_every_section(small_run):
    html = (small_run / "report.html").read_text()
    for text in ("What was run", "Training and validation loss", "Before and after", "Examples", "Forgetting",
                 "tasks significantly worse", "rougeLsum", "Efficiency", "All metric families (summaries)",
                 "All metric families (benchmarks", "toxic_fraction", "gender_demographic_representation"):
        assert text in html, text
    assert html.count("data:image/png;base64,") == 4  # loss, metrics, forgetting, reliability
    # the before/after table shows ROUGE/BLEU as rouge-score and sacrebleu give them for the run's predictions
    import reference

    from tunebench.io.runs import read_jsonl

    scores = {}
    for run in ("base", "tuned"):
        preds = read_jsonl(small_run / run / "predictions.jsonl")
        scores[run] = reference.rouge_and_bleu([p["prediction"] for p in preds], [p["references"] for p in preds])
    for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"):
        b, t = scores["base"][k], scores["tuned"][k]
        row = f"<tr><td>{k}</td><td>{b:.4f}</td><td>{t:.4f}</td>"
        assert row in html and f"{t - b:+.4f}</td>" in html.split(row, 1)[1].split("</tr>", 1)[0], k
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched to view it
    assert (small_run / "train" / "tensorboard").is_dir() and any((small_run / "train" / "tensorboard").iterdir())


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_report_renders_in_headless_chromium(small_run, tmp_path):
    shot = tmp_path / "report.png"
    errors, images = render_in_chromium(small_run / "report.html", shot)
    images = [i[1:] for i in images]
    assert errors == []
    assert len(images) == 4 and all(ok and w > 100 and h > 100 for ok, w, h in images)
    assert_not_blank(shot)


def test_chat_through_a_pseudo_terminal(small_run):
    import pexpect

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = pexpect.spawn(sys.executable, ["-m", "tunebench.cli", "chat", str(small_run / "train"), "--compare",
                                           "--template", "dialogsum/summarize_conversation", "--max-new-tokens", "6"],
                          env=env, encoding="utf-8", timeout=120)
    child.expect("you> ")
    child.sendline("#Person1#: Hi, how are you?\\n#Person2#: Fine, thanks.")
    # pexpect compiles with re.DOTALL: ".*" would swallow the tuned line when both arrive in one read
    child.expect(r" base> [^\r\n]*\r\n")
    child.expect(r"tuned> [^\r\n]*\r\n")
    child.expect("you> ")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_report_refuses_what_it_cannot_read(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.html")]) == 2
    assert "nothing to report" in capsys.readouterr().err and not (tmp_path / "r.html").exists()
