"""Safe by default: sandboxed templates, no remote code, no pickles, no writes outside the run."""
import json
import pickle
import shutil

import pytest

from tunebench.data.templates import Template
from tunebench.errors import UserError
from tunebench.io.runs import inside


@pytest.mark.parametrize("text", [
    "{{ x.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__['os'].popen('id').read() }}",
    "{{ x['__class__'] }}",
])
def test_the_sandbox_refuses_python_internals_at_render_time(text):
    with pytest.raises(UserError, match="refused by the template sandbox|undefined"):
        Template(name="t", prompt=text, task="t").render({"x": "a string"})


def test_a_model_that_needs_its_own_code_is_refused(tmp_path):
    from tunebench import models

    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {"AutoConfig": "cfg.Evil"}}))
    (d / "cfg.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n")
    with pytest.raises(UserError, match="needs its own code; pass --trust-remote-code"):
        models.load(str(d))
    assert not (tmp_path / "ran").exists()


class _Payload:
    """What a malicious pytorch_model.bin holds: unpickling it would run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_never_run_code(tiny_llama, tmp_path):
    from tunebench import models

    d = tmp_path / "m"
    shutil.copytree(tiny_llama, d)
    (d / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.embed_tokens.weight": _Payload(str(marker))}, f)
    with pytest.raises(UserError, match="cannot load model"):
        models.load(str(d))
    assert not marker.exists()


def test_output_paths_cannot_escape_the_run_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert inside(run, "tasks__x.json") == run / "tasks__x.json"
    for name in ("../escape.json", "/etc/passwd", "a/../../escape.json"):
        with pytest.raises(UserError, match="resolves outside the run directory"):
            inside(run, name)
    (tmp_path / "elsewhere").mkdir()
    (run / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="resolves outside the run directory"):
        inside(run, "link/x.json")


def test_a_benchmark_run_will_not_write_through_a_symlink(tiny_llama, tmp_path):
    from tunebench.benchmarks.harness import run_bench
    from tunebench.benchmarks.tasks import resolve_tasks
    from tunebench.config import BenchConfig, ModelConfig

    out = tmp_path / "run"
    (out).mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "tasks").symlink_to(tmp_path / "elsewhere")
    tasks, _ = resolve_tasks(["glue/sst2"])
    with pytest.raises(UserError, match="resolves outside the run directory"):
        run_bench(ModelConfig(model=str(tiny_llama)), BenchConfig(), tasks, out, limit=2)
    assert list((tmp_path / "elsewhere").iterdir()) == []
