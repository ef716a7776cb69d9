"""Faults during a run (disk full, Ctrl-C, NaN) and bad config values: a clear error or a correct
record, never a half-written file or a traceback for a user's mistake."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lra.errors import CheckpointError
from lra.module import LRAModule, NonFiniteLossError
from lra.train import RunInterrupted
from tests.helpers.cli import OFFLINE_ENV, REPO, run_cli
from tests.helpers.listops import tiny_listops
from tests.helpers.runs import read_record, train_here


@pytest.fixture
def args(tmp_path_factory) -> list[str]:
    """Tiny ListOps, 12 steps, validation and checkpoints every 4 (data shared by the module's tests)."""
    data = tmp_path_factory.getbasetemp() / "faults-data"
    return [*tiny_listops(data), "trainer.max_steps=12", "logger=none"]


def no_partial_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".partial-" in p.name]


# -- item 4: disk full while checkpointing -------------------------------------------------------------
def full_disk_at_write(monkeypatch, n: int) -> None:
    """The checkpoint writer fills the disk halfway through its ``n``-th file."""
    from lra import checkpointing

    write, calls = checkpointing._write, []

    def writer(f, checkpoint):
        calls.append(f.name)
        if len(calls) == n:
            f.write(b"\0" * 1000)  # part of the file is on disk when the space runs out
            raise OSError(errno.ENOSPC, "No space left on device")
        write(f, checkpoint)

    monkeypatch.setattr(checkpointing, "_write", writer)


def test_failed_checkpoint_write_leaves_nothing_partial(tmp_path, monkeypatch):
    from lra.checkpointing import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 4}, tmp_path / "best-step4.ckpt")
    io.save_checkpoint({"step": 4}, tmp_path / "last.ckpt")
    full_disk_at_write(monkeypatch, 1)
    with pytest.raises(CheckpointError, match="best-step8.ckpt: No space left on device"):
        io.save_checkpoint({"step": 8}, tmp_path / "best-step8.ckpt")
    full_disk_at_write(monkeypatch, 1)
    with pytest.raises(CheckpointError):
        io.save_checkpoint({"step": 8}, tmp_path / "last.ckpt")  # replacing a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-step4.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt")["step"] == 4  # the earlier file, intact


def test_disk_full_in_a_run_records_the_failure_and_keeps_the_best(tmp_path, args, monkeypatch):
    # Writes: last.ckpt and best-step4.ckpt at step 4, then last.ckpt at step 8 runs out of space.
    full_disk_at_write(monkeypatch, 3)
    with pytest.raises(CheckpointError, match="No space left on device"):
        train_here(tmp_path / "run", *args)
    record = read_record(tmp_path / "run")
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert "last.ckpt" in record["error"]  # names the file it could not write
    assert no_partial_files(tmp_path / "run")
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):  # what is there is whole
        torch.load(ckpt, weights_only=False)
    assert record["best_step"] == 4 and Path(record["best_checkpoint"]).is_file()


def test_results_json_that_cannot_be_written_is_said_clearly(tmp_path, args, monkeypatch, capsys):
    from lra import results

    def no_space(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "atomic_write_text", no_space)
    with pytest.raises(Exception, match="could not write .*results.json: No space left on device"):
        train_here(tmp_path / "run", *args, "trainer.max_steps=2")
    assert "could not write" in capsys.readouterr().err


# -- Ctrl-C and NaN keep the best so far --------------------------------------------------------------
def fail_at_step(monkeypatch, step: int, exc: BaseException) -> None:
    original = LRAModule.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step >= step:
            raise exc
        return original(self, batch, batch_idx)

    monkeypatch.setattr(LRAModule, "training_step", training_step)


def test_ctrl_c_records_interrupted_and_keeps_the_best(tmp_path, args, monkeypatch):
    fail_at_step(monkeypatch, 6, KeyboardInterrupt())
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(RunInterrupted, match="at step 6.*ckpt_path="):
            train_here(tmp_path / "run", *args)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while shutting down
    record = read_record(tmp_path / "run")
    assert record["status"] == "interrupted" and "SystemExit" not in record["error"]
    assert record["best_val_acc"] is not None and record["best_step"] == 4
    assert Path(record["best_checkpoint"]).is_file()


def test_nan_stop_keeps_the_best(tmp_path, args, monkeypatch):
    fail_at_step(monkeypatch, 6, NonFiniteLossError("training loss became nan at step 6"))
    with pytest.raises(NonFiniteLossError):
        train_here(tmp_path / "run", *args)
    record = read_record(tmp_path / "run")
    assert record["status"] == "failed" and "nan" in record["error"]
    assert record["best_val_acc"] is not None and record["best_step"] == 4
    assert Path(record["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_real_ctrl_c_on_the_command_line(tmp_path, args):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        str(REPO / "run.py"),
        *args,
        "trainer.max_steps=100000",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, **OFFLINE_ENV}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not list((run_dir / "checkpoints").glob("best-step*.ckpt")) and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    record = read_record(run_dir)
    assert record["status"] == "interrupted" and Path(record["best_checkpoint"]).is_file()


# -- clear one-line errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["trainer.max_steps=-1"], ["trainer.max_steps=-1"]),
        (["model.num_heads=0"], ["model.num_heads=0"]),
        (["attention=spectral_shift", "attention.form=bogus"], ["attention.form must be one of"]),
        # The unknown key, and our words around Python's own (whose wording is not ours to test).
        (["+attention.bogus=1"], ["bogus", "check the keys given on the command line"]),
    ],
    ids=["endless", "no-heads", "attention-value", "attention-key"],
)
def test_bad_config_values_are_one_line_errors(tmp_path, args, overrides, expected):
    proc = run_cli(*args, *overrides, run_dir=tmp_path / "run", check=False)
    lines = proc.stderr.strip().splitlines()
    assert (
        proc.returncode == 1
        and "Traceback" not in proc.stderr
        and "InstantiationException" not in proc.stderr
    )
    assert lines[-1].startswith("error: ") and all(part in lines[-1] for part in expected), lines[-1]
    assert read_record(tmp_path / "run")["status"] == "failed"


def test_bad_listops_release_is_a_one_line_error(tmp_path, args):
    from tests.helpers.listops import write_release

    write_release(tmp_path / "lra" / "listops-1000")
    (tmp_path / "lra" / "listops-1000" / "basic_val.tsv").write_bytes(b"Source\tTarget\n[MAX 1 \xff ]\t1\n")
    proc = run_cli(
        *args, f"data_dir={tmp_path / 'lra'}", "data.source=release", run_dir=tmp_path / "run", check=False
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'lra' / 'listops-1000' / 'basic_val.tsv'}:2: not UTF-8" in last
