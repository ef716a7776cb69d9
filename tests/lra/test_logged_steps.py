"""A value written to the loggers at step s is the one measured at step s, whatever log_every_n_steps."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.helpers.listops import tiny_listops
from tests.helpers.runs import train_here


def logged(run_dir: Path, key: str) -> dict[int, str]:
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        return {int(r["step"]): r[key] for r in csv.DictReader(f) if r.get(key)}


def test_sparse_logging_writes_the_values_of_the_written_steps(tmp_path):
    """The loss and learning rate are logged only on the steps Lightning writes (a cost on every
    step otherwise); they must be that step's, not those of the step where logging last happened."""
    args = [*tiny_listops(tmp_path / "data"), "logger=csv", "trainer.val_check_interval=8"]
    train_here(tmp_path / "every", *args, "trainer.log_every_n_steps=1")
    train_here(tmp_path / "sparse", *args, "trainer.log_every_n_steps=4")
    for key in ("train/loss", "trainer/lr"):
        every, sparse = logged(tmp_path / "every", key), logged(tmp_path / "sparse", key)
        assert sorted(sparse) == [3, 7] and len(every) == 8
        assert {s: every[s] for s in sparse} == sparse
