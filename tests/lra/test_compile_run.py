"""``model.compile=true``: the network is compiled for training, validation and test, the run resumes
(compiled or not: compiling changes how, not what), its checkpoints keep the eager parameter names, and
its record says it was compiled.

In the default suite the compiled network runs on ``aot_eager`` (the same capture and graphs as a real
run, eager kernels: seconds instead of minutes); the slow suite runs ``python run.py`` with Inductor.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from lra.errors import ConfigError
from tests.helpers.cli import run_cli
from tests.helpers.listops import tiny_listops
from tests.helpers.runs import read_record, resume_args, train_here


@pytest.fixture
def compiles(monkeypatch) -> list[dict]:
    """``nn.Module.compile`` with the aot_eager backend; the list of its calls' arguments."""
    calls: list[dict] = []
    original = torch.nn.Module.compile

    def compile_with_aot_eager(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_with_aot_eager)
    torch._dynamo.reset()
    return calls


def graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def test_a_compiled_run_trains_resumes_and_tests(tmp_path, compiles):
    args = resume_args(tmp_path / "data")
    before = graphs()
    train_here(tmp_path / "first", *args, "model.compile=true", "trainer.max_steps=10")
    assert compiles == [{"mode": None}] and graphs() > before  # the network ran compiled
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]
    assert state and not any("_orig_mod" in key for key in state)  # the eager names

    train_here(tmp_path / "resumed", *args, "model.compile=true", f"ckpt_path={ckpt}")
    record = read_record(tmp_path / "resumed")
    assert record["status"] == "completed" and record["global_step"] == 24
    assert record["test_acc"] is not None and record["config"]["model"]["compile"] is True

    # Compiling is how, not what: an eager run resumes the compiled run's checkpoint.
    train_here(tmp_path / "eager", *args, f"ckpt_path={ckpt}")
    eager = read_record(tmp_path / "eager")
    assert eager["status"] == "completed" and eager["config"]["model"]["compile"] is False


@pytest.mark.parametrize(
    "override, key",
    [("model.compile=yes", "model.compile"), ("model.compile_mode=fast", "model.compile_mode")],
)
def test_bad_compile_settings_name_their_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=rf"^{key} must be"):
        train_here(tmp_path / "run", *tiny_listops(tmp_path / "data"), override)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_run_compiled_by_inductor_completes(tmp_path):
    run_cli(*tiny_listops(tmp_path / "data"), "model.compile=true", run_dir=tmp_path / "run", timeout=1800)
    record = read_record(tmp_path / "run")
    assert record["status"] == "completed" and record["config"]["model"]["compile"] is True
