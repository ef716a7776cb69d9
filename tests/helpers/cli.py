"""The repository, the offline environment every test runs in, and a runner for the real CLI in a
subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

OFFLINE_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "HYDRA_FULL_ERROR": "0",
}


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
