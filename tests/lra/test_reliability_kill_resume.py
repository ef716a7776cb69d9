"""Randomized kill-and-resume: a tiny run is stopped by SIGKILL, SIGINT or SIGTERM at random points (a
training step, mid-step, inside a validation, during a checkpoint write, during the final test, or at
a random time), resumed from whatever it says to resume from (``last.ckpt`` after a SIGKILL, as the
README says), possibly several times; its final record and curves must equal the uninterrupted run's.

A few trials run in the default suite; ``pytest -m slow`` runs ``LRA_FAULT_TRIALS`` (default 200),
``LRA_FAULT_JOBS`` at a time (default 2).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lra.compare.collect import read_curves
from tests.helpers.cli import OFFLINE_ENV, REPO
from tests.helpers.listops import STEPS, TEST_BATCHES, VAL_BATCHES, VAL_EVERY, learnable_listops
from tests.helpers.runs import read_record

CURVES = ("val/acc", "val/loss", "train/loss", "trainer/lr")
RECORD = ("status", "global_step", "best_val_acc", "best_step", "test_acc")
EXIT = {"SIGKILL": -signal.SIGKILL, "SIGINT": 130, "SIGTERM": 143}


def launch(args: list[str], run_dir: Path, fault: str | None) -> subprocess.CompletedProcess:
    script = REPO / ("tests/helpers/faults.py" if fault else "run.py")
    env = {**os.environ, **OFFLINE_ENV, "WANDB_DIR": str(run_dir)}
    if fault:
        env["LRA_FAULT"] = fault
    cmd = [sys.executable, str(script), *args, f"hydra.run.dir={run_dir}"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("kill-resume")
    args = learnable_listops(base / "data")
    proc = launch(args, base / "reference", None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(base / "reference")
    assert record["best_step"] > VAL_EVERY  # the best moved: there is a best to lose
    return base / "reference", args


def random_fault(rng: random.Random, start: int) -> str:
    """``<signal>@<where>`` for tests/helpers/faults.py, at or after global step ``start``."""
    sig = rng.choice(["SIGKILL", "SIGINT", "SIGTERM"])
    kind = rng.choice(["step", "backward", "val", "ckpt", "test", "time"])
    step = rng.randrange(min(start, STEPS - 1), STEPS)
    if kind == "val":
        val_steps = [s for s in range(VAL_EVERY, STEPS + 1, VAL_EVERY) if s >= start] or [STEPS]
        where = f"val:{rng.choice(val_steps)}:{rng.randrange(VAL_BATCHES)}"
    elif kind == "ckpt":
        where = f"ckpt:{rng.randint(1, 12)}"
    elif kind == "test":
        where = f"test:{rng.randrange(TEST_BATCHES)}"
    elif kind == "time":
        where = f"time:{rng.uniform(0.0, 3.0):.3f}"
    else:
        where = f"{kind}:{step}"
    return f"{sig}@{where}"


@dataclass
class Trial:
    faults: list[str]
    final: Path


def resume_target(proc: subprocess.CompletedProcess, run_dir: Path, fault: str, before: Path | None):
    """What the stopped run says to resume from (after SIGKILL it says nothing: ``last.ckpt`` if it
    wrote one, else what it was itself resumed from)."""
    sig = fault.split("@")[0]
    assert proc.returncode == EXIT[sig], f"{fault}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    if sig == "SIGKILL":
        last = run_dir / "checkpoints" / "last.ckpt"
        return last if last.is_file() else before
    record = read_record(run_dir)
    assert record["status"] == "interrupted" and sig in record["error"], record["error"]
    said = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    found = re.search(r"ckpt_path=(\S+)", said)
    if "start the run again" in said:
        assert before is None
        return None
    assert found, said
    target = Path(found.group(1))
    assert target.is_file(), said
    return target


def finished(proc: subprocess.CompletedProcess, run_dir: Path) -> bool:
    """The run completed (a timed signal may still have hit the process as it exited)."""
    done = (run_dir / "results.json").is_file() and read_record(run_dir)["status"] == "completed"
    return proc.returncode == 0 or (done and proc.returncode < 0)


def run_trial(seed: int, args: list[str], folder: Path) -> Trial:
    """Up to three faulty attempts, each resumed from what the one before says, then a clean one."""
    rng = random.Random(seed)
    ckpt, faults = None, []
    for attempt in range(rng.randint(1, 3)):
        run_dir = folder / f"attempt{attempt}"
        start = torch.load(ckpt, weights_only=True)["global_step"] if ckpt else 0
        fault = random_fault(rng, start)
        proc = launch([*args, *([f"ckpt_path={ckpt}"] if ckpt else [])], run_dir, fault)
        if finished(proc, run_dir):  # the fault's point never came, or came once the run had ended
            return Trial(faults, run_dir)
        faults.append(fault)
        ckpt = resume_target(proc, run_dir, fault, ckpt)
    run_dir = folder / "final"
    proc = launch([*args, *([f"ckpt_path={ckpt}"] if ckpt else [])], run_dir, None)
    assert proc.returncode == 0, f"faults {faults}\n{proc.stderr[-3000:]}"
    return Trial(faults, run_dir)


def weights(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_as_reference(trial: Trial, reference: Path) -> None:
    want, got = read_record(reference), read_record(trial.final)
    what = f"faults {trial.faults}, final run {trial.final}"
    assert {k: got[k] for k in RECORD} == {k: want[k] for k in RECORD}, what
    tested, expected = got["tested_checkpoint"], want["tested_checkpoint"]
    assert Path(tested).name == Path(expected).name and Path(tested).parent == trial.final / "checkpoints", (
        what
    )
    assert all(
        torch.equal(a, b) for a, b in zip(weights(tested).values(), weights(expected).values(), strict=True)
    )
    # The whole run's curves, read through its resumes, are the uninterrupted run's, step for step.
    assert read_curves(trial.final, CURVES) == read_curves(reference, CURVES), what


@pytest.mark.parametrize("seed", [3, 11, 25])
def test_killed_and_resumed_runs_end_as_the_uninterrupted_run(reference, tmp_path, seed):
    ref, args = reference
    assert_same_as_reference(run_trial(seed, args, tmp_path), ref)


@pytest.mark.slow
def test_many_random_kills_and_resumes(reference, tmp_path):
    ref, args = reference
    trials = int(os.environ.get("LRA_FAULT_TRIALS", "200"))
    jobs = int(os.environ.get("LRA_FAULT_JOBS", "2"))
    failures: list[str] = []

    def one(seed: int) -> Trial | None:
        try:
            trial = run_trial(1000 + seed, args, tmp_path / f"trial{seed}")
            assert_same_as_reference(trial, ref)
            return trial
        except AssertionError as exc:
            failures.append(f"seed {1000 + seed}: {str(exc)[:2000]}")
            return None

    with ThreadPoolExecutor(jobs) as pool:
        done = [t for t in pool.map(one, range(trials)) if t is not None]
    faults = sum(len(t.faults) for t in done)
    print(f"{len(done)} of {trials} trials ended as the uninterrupted run ({faults} faults injected)")
    assert not failures, "\n\n".join(failures)
