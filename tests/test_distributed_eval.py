"""Evaluation split over processes: generate, evaluate and bench under torchrun (two gloo
processes on CPU) give what one process gives, and each process's journal resumes."""
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DIALOGSUM, REPO

from tunebench.cli import main
from tunebench.io.processes import Processes, rank_file, rank_files
from tunebench.io.runs import read_jsonl


def _gen_flags(batch_size: int = 2) -> list[str]:
    return ["--split", "test", "--batch-size", str(batch_size), "--max-new-tokens", "8", "--precision", "fp32"]


def _env():
    import os

    return dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                OMP_NUM_THREADS="1")


def _free_port() -> int:
    with socket.socket() as s:  # other test runs on this machine may hold torchrun's usual ports
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*argv, nproc=2, script=None):
    target = [str(script)] if script else ["-m", "tunebench.cli"]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                           "--master-port", str(_free_port()), *target, *argv],
                          env=_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def prepared9(tmp_path_factory) -> Path:
    """Nine test examples: two processes get shares of different sizes."""
    from tunebench.config import DataConfig
    from tunebench.pipeline import prepare_stage

    d = tmp_path_factory.mktemp("prepared9")
    prepare_stage(DataConfig(path=str(DIALOGSUM), train_limit=4, validation_limit=2, test_limit=9), d)
    return d


@pytest.fixture(scope="module")
def one_process(tiny_llama, prepared9, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "eval"
    assert main(["evaluate", "--model", str(tiny_llama), "--data", str(prepared9), "--out", str(out), *_gen_flags()]) == 0
    return out


def test_share_deals_every_item_once_longest_spread_over_processes():
    items = list(range(11))
    cost = {i: (i * 7) % 11 for i in items}.__getitem__
    shares = [Processes(r, 3).share(items, cost) for r in range(3)]
    assert sorted(x for s in shares for x in s) == items
    assert all(s == sorted(s) for s in shares)  # each share keeps the input order
    assert [len(s) for s in shares] == [3, 4, 4]
    # snake order over the costs 10, 9, ..., 0: ranks 0 1 2 2 1 0 0 1 2 2 1
    assert [sorted(cost(i) for i in s) for s in shares] == [[4, 5, 10], [0, 3, 6, 9], [1, 2, 7, 8]]
    assert Processes().share(items, cost) == items


def test_rank_files_are_named_apart_and_found_from_any_launch(tmp_path):
    p = tmp_path / "predictions.partial.jsonl"
    assert rank_file(p, 0) == p and rank_file(p, 3).name == "predictions.partial.rank3.jsonl"
    for name in ("predictions.partial.rank10.jsonl", "predictions.partial.rank2.jsonl",
                 "predictions.partial.rank2.jsonl.stale-1", "predictions.partial.rank0.jsonl", "other.rank1.jsonl"):
        (tmp_path / name).write_text("")
    assert [f.name for f in rank_files(p)] == ["predictions.partial.rank2.jsonl", "predictions.partial.rank10.jsonl"]


def test_evaluate_on_two_processes_writes_what_one_process_writes(tiny_llama, prepared9, one_process, tmp_path):
    out = tmp_path / "two"
    r = _torchrun("evaluate", "--model", str(tiny_llama), "--data", str(prepared9), "--out", str(out), *_gen_flags())
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "predictions.jsonl").read_bytes() == (one_process / "predictions.jsonl").read_bytes()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (one_process, out))
    assert {k: v for k, v in a.items() if k != "efficiency"} == {k: v for k, v in b.items() if k != "efficiency"}
    eff = json.loads((out / "run.json").read_text())["efficiency"]
    assert eff["processes"] == 2 and eff["examples"] == 9 and eff["resumed_examples"] == 0
    assert eff["generated_tokens"] == json.loads((one_process / "run.json").read_text())["efficiency"]["generated_tokens"]
    assert "processes" not in json.loads((one_process / "run.json").read_text())["efficiency"]
    assert r.stdout.count("rouge1=") == 1  # rank 0 alone reports
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.jsonl", "run.json"]


def _same_rows(a: list[dict], b: list[dict]) -> None:
    """Equal rows; log-likelihoods to float noise (batches of other shapes sum in another order)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], list) and x[k] and isinstance(x[k][0], float) or isinstance(x[k], float):
                assert x[k] == pytest.approx(y[k], abs=1e-5), (x["id"], k)
            else:
                assert x[k] == y[k], (x["id"], k)


def test_bench_on_two_processes_scores_what_one_process_scores(tiny_llama, tmp_path):
    argv = ["bench", "--model", str(tiny_llama), "--task", "glue/sst2", "--task", "bigbench/operators", "--limit", "5",
            "--max-new-tokens", "4", "--batch-size", "2", "--precision", "fp32"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    r = _torchrun(*argv, "--out", str(tmp_path / "two"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("results.json:") == 1
    _same_rows(read_jsonl(tmp_path / "one" / "examples.jsonl"), read_jsonl(tmp_path / "two" / "examples.jsonl"))
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert b["efficiency"]["processes"] == 2 and b["efficiency"]["examples"] == a["efficiency"]["examples"] == 10
    for x, y in zip(a["tasks"], b["tasks"]):
        assert x["scores"] == pytest.approx(y["scores"], abs=1e-6) and x["n"] == y["n"] == 5
        assert x["metrics"]["efficiency"]["prompt_tokens"] == y["metrics"]["efficiency"]["prompt_tokens"]
        assert x["metrics"]["efficiency"]["generated_tokens"] == y["metrics"]["efficiency"]["generated_tokens"]
    assert not list((tmp_path / "two" / "tasks").glob("*.partial*"))


DIE = """\
import os, sys
from tunebench.io.runs import Journal

original, calls = Journal.append, [0]

def append(self, rows, record=True):
    original(self, rows, record)
    if record and os.environ["RANK"] == "1":
        calls[0] += 1
        if calls[0] == 2:
            os._exit(9)  # killed with its second batch on disk

Journal.append = append
from tunebench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_two_process_run_resumes_on_two_or_one_process(tiny_llama, prepared9, one_process, tmp_path, capsys):
    die = tmp_path / "die.py"
    die.write_text(DIE)
    cut = tmp_path / "cut"
    argv = ["generate", "--model", str(tiny_llama), "--data", str(prepared9), "--out", str(cut), *_gen_flags(1)]
    r = _torchrun(*argv, script=die)
    assert r.returncode != 0 and not (cut / "predictions.jsonl").exists()
    own = read_jsonl(cut / "predictions.partial.rank1.jsonl")
    assert len(own) == 3  # header and two results
    kept = sum(len(read_jsonl(f)) - 1 for f in (cut / "predictions.partial.jsonl", *rank_files(cut / "predictions.partial.jsonl")))
    shutil.copytree(cut, tmp_path / "cut1")

    r = _torchrun(*argv)  # the same launch again
    assert r.returncode == 0, r.stderr[-3000:]
    assert "results kept from an interrupted run" in r.stdout
    eff = json.loads((cut / "run.json").read_text())["efficiency"]
    assert eff["resumed_examples"] == kept and eff["examples"] == 9 - kept
    assert (cut / "predictions.jsonl").read_bytes() == (one_process / "predictions.jsonl").read_bytes()
    assert sorted(p.name for p in cut.iterdir()) == ["predictions.jsonl", "run.json"]

    # one process reads both processes' journals: nothing journaled is generated again
    argv[argv.index(str(cut))] = str(tmp_path / "cut1")
    capsys.readouterr()
    assert main(argv) == 0
    assert "predictions.partial.rank1.jsonl: 2 results kept from an interrupted run" in capsys.readouterr().out
    eff = json.loads((tmp_path / "cut1" / "run.json").read_text())["efficiency"]
    assert eff["resumed_examples"] == kept and eff["examples"] == 9 - kept
    assert (tmp_path / "cut1" / "predictions.jsonl").read_bytes() == (one_process / "predictions.jsonl").read_bytes()
    assert not rank_files(tmp_path / "cut1" / "predictions.partial.jsonl")


def test_journals_of_a_larger_launch_resume_on_two_processes(tiny_llama, prepared9, one_process, tmp_path, monkeypatch):
    """Three processes' journals (one with a torn last line) picked up by a launch of two."""
    from tunebench.io.runs import Journal

    original, calls = Journal.append, {"n": 0}

    def append(self, rows, record=True):
        original(self, rows, record)
        calls["n"] += record
        if calls["n"] == 5:
            raise SystemExit(9)  # not KeyboardInterrupt: main turns that into exit code 130

    out = tmp_path / "out"
    argv = ["generate", "--model", str(tiny_llama), "--data", str(prepared9), "--out", str(out), *_gen_flags(1)]
    monkeypatch.setattr(Journal, "append", append)
    with pytest.raises(SystemExit):
        main(argv)
    monkeypatch.undo()
    journal = out / "predictions.partial.jsonl"
    header, *rows = journal.read_text().splitlines()
    assert len(rows) == 5
    # as three processes would have left them: rank 0 two results, rank 1 one, rank 2 two and a torn line
    journal.write_text("\n".join([header, *rows[:2]]) + "\n")
    rank_file(journal, 1).write_text("\n".join([header, rows[2]]) + "\n")
    rank_file(journal, 2).write_text("\n".join([header, *rows[3:]]) + '\n{"key": "8", "predic')
    r = _torchrun(*argv)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "predictions.partial.rank2.jsonl: 2 results kept from an interrupted run; a last line cut off" in r.stdout
    eff = json.loads((out / "run.json").read_text())["efficiency"]
    assert eff["resumed_examples"] == 5 and eff["examples"] == 4 and eff["processes"] == 2
    assert (out / "predictions.jsonl").read_bytes() == (one_process / "predictions.jsonl").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "run.json"]
