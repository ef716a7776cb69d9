"""Shared test helpers: offline W&B / HF, and a runner for the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

OFFLINE_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "HYDRA_FULL_ERROR": "0",
}
for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)

# In-process tests compute on small tensors, where a second intra-op thread gains little on an idle
# machine and, on a busy one, makes every small kernel wait for a core (measured in
# docs/results.md, "Training speed"). Subprocess runs choose their own threads (lra/resources.py).
torch.set_num_threads(int(os.environ.get("LRA_TEST_THREADS", "1")))


# A tiny ListOps set made by the real generator (seconds), shared by every test that trains on one.
TINY_LISTOPS_DATA = (
    "data.generate.num_train=96",
    "data.generate.num_val=40",
    "data.generate.num_test=40",
    "data.generate.min_length=10",
    "data.generate.max_length=120",
    "data.generate.max_depth=5",
    "data.workers=1",
)


def tiny_listops(data_dir: Path) -> list[str]:
    """Overrides for a seconds-long ListOps run on a tiny generated set (the real generator and loader)."""
    return [
        "task=listops",
        "experiment=quick",
        f"data_dir={data_dir}",
        *TINY_LISTOPS_DATA,
        "data.batch_size=16",
        "model.max_len=128",
        "trainer.max_steps=8",
        "trainer.val_check_interval=4",
        "trainer.log_every_n_steps=2",
        "optim.warmup_steps=2",
        "speed_warmup_steps=1",
    ]


def run_cli(
    *args: str,
    run_dir: Path | None = None,
    env: dict | None = None,
    timeout: int = 600,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` as a user would type it; ``run_dir`` pins Hydra's output directory."""
    cmd = [sys.executable, str(REPO / "run.py"), *args]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    full_env = {**os.environ, **OFFLINE_ENV, "WANDB_DIR": str(run_dir or cwd or REPO), **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"run.py {' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
            f"--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture
def listops_args(tmp_path_factory) -> list[str]:
    """Tiny ListOps overrides sharing one generated data folder per test session."""
    return tiny_listops(tmp_path_factory.getbasetemp() / "listops-data")
