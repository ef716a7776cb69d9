"""The tiny sweep shared by the sweep, dashboard and W&B tests: it runs once per test session and leaves
its run directories under pytest's base temporary directory."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import REPO, run_cli
from tests.helpers.listops import tiny_listops


def sweep_attentions() -> list[str]:
    """Softmax plus one other attention whose config exists (the grid a user would sweep)."""
    others = [
        a for a in ("nystrom", "spectral_shift") if (REPO / "conf" / "attention" / f"{a}.yaml").exists()
    ]
    return ["softmax", *others[:1]]


def tiny_sweep(base: Path) -> dict[str, Path]:
    """Two sweeps of tiny ListOps runs, run once per session:

    - ``grid``: attention x seed=0,1 with the joblib launcher (2 parallel jobs);
    - ``mixed``: model.vocab_size=4,16 with 2 training steps, where the first run fails its config
      check and the second must still run (and differs in config from the grid's runs); the sweep
      then exits 1, its stderr saved as ``mixed.stderr``.
    """
    root = base / "tiny-sweep"
    dirs = {"grid": root / "grid", "mixed": root / "mixed", "mixed_stderr": root / "mixed.stderr"}
    if (root / "done").exists():
        return dirs
    args = tiny_listops(base / "listops-data")
    attentions = ",".join(sweep_attentions())
    env = {"LRA_JOBS": "2"}
    run_cli(
        "-m", *args, f"attention={attentions}", "seed=0,1", "hydra/launcher=parallel",
        f"hydra.sweep.dir={dirs['grid']}", cwd=base, env=env,
    )  # fmt: skip
    mixed = run_cli(
        "-m", *args, "model.vocab_size=4,16", "trainer.max_steps=2", "seed=0",
        f"hydra.sweep.dir={dirs['mixed']}", cwd=base, env=env, check=False,
    )  # fmt: skip
    dirs["mixed_stderr"].write_text(f"exit {mixed.returncode}\n{mixed.stderr}")
    (root / "done").write_text("")
    return dirs
