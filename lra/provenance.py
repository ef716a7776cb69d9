"""Where a result came from: package versions and the project's git commit."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "datasets", "wandb", "torchmetrics", "numpy")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """HEAD of the project checkout, with ``-dirty`` when the tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine(accelerator: str | None) -> str:
    """What a run ran on, for the ledger of runs: the GPU's name, or the CPU's core count."""
    import torch

    if str(accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        count, name = torch.cuda.device_count(), torch.cuda.get_device_name(0)
        return name if count == 1 else f"{count}x {name}"
    return f"{os.cpu_count()}-core CPU"
