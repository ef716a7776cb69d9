"""A new metric is its callback, which declares its row of the metrics table, and the callback's entry
in ``conf/callbacks/default.yaml``.

``GradNorm`` stands for the callback (in ``lra/callbacks/``). Nothing else changes: the run logs it,
results.json holds it, the dashboard shows it, and records written before it existed still read.
"""

from __future__ import annotations

import csv
import shutil

import pytorch_lightning as pl
import torch

import lra.metrics
from lra import registry, results
from lra.compare import build
from lra.metrics import RUNS, Metric, logged_name, table


# -- the callback, with its row of the table -------------------------------------------------------------
class GradNorm(pl.Callback):
    """The gradient norm before each optimiser step, logged per step; the last one goes to results.json."""

    metrics = (Metric("grad_norm", "train/grad_norm", "grad norm", "number", shown=(RUNS,)),)

    def __init__(self):
        self.last: float | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
        self.last = float(torch.stack(grads).norm())
        pl_module.log(logged_name("grad_norm"), self.last, on_step=True, on_epoch=False)

    def summary(self) -> dict:
        return {"grad_norm": self.last}


def test_a_new_metric_is_its_callback_and_its_config_entry(tmp_path, monkeypatch):
    from tests.helpers.listops import tiny_listops
    from tests.helpers.runs import train_here

    conf = tmp_path / "conf"
    shutil.copytree(registry.CONF_ROOT, conf)
    with open(conf / "callbacks" / "default.yaml", "a") as f:  # -- its entry in the callbacks group
        f.write(f"grad_norm:\n  _target_: {__name__}.GradNorm\n")
    monkeypatch.setattr(registry, "CONF_ROOT", conf)
    monkeypatch.setattr(lra.metrics, "_declared", {})  # undone below: this process forgets the run
    assert "grad_norm" in [m.field for m in table()]

    run_dir = tmp_path / "run"
    train_here(run_dir, *tiny_listops(tmp_path / "data"), "logger=csv")
    record = results.read(run_dir)
    assert record.ok and record.metrics["grad_norm"] > 0
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        logged = [float(r["train/grad_norm"]) for r in csv.DictReader(f) if r.get("train/grad_norm")]
    assert len(logged) > 1 and logged[-1] == record.metrics["grad_norm"]  # the run's summary comes last

    build([run_dir], tmp_path / "compare")
    page = (tmp_path / "compare" / "results.md").read_text()
    header = next(line for line in page.splitlines() if line.startswith("| Task | Model | Seed"))
    assert "| grad norm |" in header

    # Without the callback, the record still reads (the field is ignored); older records lack it.
    monkeypatch.undo()
    assert "grad_norm" not in [m.field for m in table()]
    assert results.read(run_dir).ok and "grad_norm" not in results.read(run_dir).metrics


def test_a_callback_added_to_one_run_records_its_metric(tmp_path, monkeypatch):
    monkeypatch.setattr(lra.metrics, "_declared", {})
    from tests.helpers.listops import tiny_listops
    from tests.helpers.runs import train_here

    run_dir = tmp_path / "run"
    train_here(
        run_dir, *tiny_listops(tmp_path / "data"), f"+callbacks.grad_norm._target_={__name__}.GradNorm"
    )
    assert results.read(run_dir).metrics["grad_norm"] > 0
