"""Runs for the tests: in this process (fast, and faults can be injected with monkeypatch), and through
``python run.py`` killing themselves with SIGKILL at a given step; their records, read or made by hand."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from lra import results
from lra.registry import compose
from tests.helpers.cli import OFFLINE_ENV, REPO
from tests.helpers.listops import tiny_listops

# run.py with one extra callback that sends the process SIGKILL when a training batch starts at
# global step KILL_AT_STEP: everything up to that step (checkpoints included) is done, nothing after.
KILLER = textwrap.dedent(
    f"""
    import os, runpy, signal, sys
    sys.path.insert(0, {str(REPO)!r})
    import pytorch_lightning as pl
    import lra.train

    KILL_AT = int(os.environ["KILL_AT_STEP"])

    class Kill(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step >= KILL_AT:
                os.kill(os.getpid(), signal.SIGKILL)

    _build = lra.train.build_trainer
    lra.train.build_trainer = lambda cfg, run_dir, loggers, callbacks: _build(
        cfg, run_dir, loggers, [*callbacks, Kill()]
    )
    runpy.run_path({str(REPO / "run.py")!r}, run_name="__main__")
    """
)


def resume_args(data_dir: Path) -> list[str]:
    """A tiny ListOps run of 24 steps (4 epochs of 6 batches), validated and checkpointed every 4.
    ``optim.total_steps`` is fixed so that a run stopped early by ``trainer.max_steps`` follows the
    same learning-rate schedule as the full one."""
    return [
        *tiny_listops(data_dir),
        "trainer.max_steps=24",
        "optim.total_steps=24",
        "optim.lr=3e-3",
        "trainer.log_every_n_steps=1",
        "logger=csv",
    ]


def compose_run(*overrides: str) -> DictConfig:
    return compose(list(overrides))


def train_here(run_dir: Path, *overrides: str) -> dict:
    """``lra.train.train`` in this process on the composed config; returns the record."""
    from lra.train import train

    return train(compose_run("trainer.enable_progress_bar=false", *overrides), Path(run_dir))


def trained_reference(
    base: Path, overrides_for: Callable[[Path], list[str]], name: str
) -> tuple[Path, list[str]]:
    """A run trained in ``base / name`` on the overrides ``overrides_for(base / "data")`` (the run the
    tests compare theirs with), and those overrides."""
    args = overrides_for(base / "data")
    train_here(base / name, *args)
    return base / name, args


def read_record(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def train_losses(run_dir: Path) -> dict[int, str]:
    """step -> logged train/loss (as text: compared exactly)."""
    with open(Path(run_dir) / "csv" / "version_0" / "metrics.csv") as f:
        return {int(r["step"]): r["train/loss"] for r in csv.DictReader(f) if r.get("train/loss")}


def run_killed_at(step: int, run_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` that dies by SIGKILL when training reaches ``step``."""
    script = Path(cwd) / "kill_at_step.py"
    script.write_text(KILLER)
    env = {**os.environ, **OFFLINE_ENV, "WANDB_DIR": str(run_dir), "KILL_AT_STEP": str(step)}
    cmd = [sys.executable, str(script), *args, f"hydra.run.dir={run_dir}"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def valid_record() -> results.RunRecord:
    """A completed run's record with every required field, as ``results.json`` holds it."""
    data = {"source": "generate", "path": "p", "generator": {"seed": 0}, "fingerprint": "f", "splits": {}}
    record = results.RunRecord(status="completed", task="listops", attention="softmax", seed=0, data=data)
    record.take({"best_val_acc": 0.5, "best_step": 4, "test_acc": 0.4, "global_step": 10})
    return record
