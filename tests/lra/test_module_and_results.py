"""The LightningModule's schedule and loss guard, and the results.json schema."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from lra import results
from lra.module import LRAModule, NonFiniteLossError
from lra.schedule import warmup_linear_decay
from tests.helpers.runs import valid_record


def test_warmup_then_linear_decay():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_linear_decay(opt, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(13):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[8] == pytest.approx(0.5) and lrs[12] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))


class Poisoned(nn.Module):
    """Classifier whose logits turn to NaN from the third call on."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, input_ids, mask=None):
        self.calls += 1
        out = self.lin(input_ids.float())
        return out * float("nan") if self.calls >= 3 else out


def batches(n):
    return [
        {
            "input_ids": torch.randn(2, 4),
            "mask": torch.ones(2, 4, dtype=torch.bool),
            "label": torch.tensor([0, 1]),
        }
        for _ in range(n)
    ]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    module = LRAModule(Poisoned(), num_classes=3, lr=1e-3, warmup_steps=0, total_steps=10)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True)
    trainer = pl.Trainer(
        max_steps=10,
        logger=False,
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 2"):
        trainer.fit(module, train_dataloaders=DataLoader(batches(10), batch_size=None))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())


def first_schema() -> dict:
    """A results.json as the first schema wrote it (before data, best_step, tested_checkpoint, compute)."""
    return {
        "schema_version": 1,
        "status": "completed",
        "error": None,
        "task": "listops",
        "attention": "softmax",
        "seed": 0,
        "config": {},
        "best_val_acc": 0.5,
        "test_acc": 0.4,
        "best_checkpoint": "x.ckpt",
        "global_step": 10,
        "train_steps_per_s": 3.0,
        "train_tokens_per_s": 100.0,
        "eval_tokens_per_s": None,
        "peak_memory_bytes": 1e6,
        "peak_memory_kind": "rss",
        "params_total": 10,
        "wall_time_s": 1.0,
        "started_at": "t",
        "finished_at": "t",
        "resumed_from": None,
        "run_dir": "d",
        "versions": {},
        "git_commit": None,
    }


def test_results_round_trip(tmp_path):
    path = results.write(tmp_path, valid_record())
    assert results.read(tmp_path) == valid_record()
    assert json.loads(path.read_text()) == valid_record().to_dict()
    # Flat JSON: the metrics table's fields beside the record's own.
    assert json.loads(path.read_text())["test_acc"] == 0.4


def test_records_written_before_later_fields_still_read(tmp_path):
    """A results.json of the first schema (no data / best_step / tested_checkpoint) stays readable."""
    (tmp_path / "results.json").write_text(json.dumps(first_schema()))
    record = results.read(tmp_path)
    assert record.ok and record.metrics["test_acc"] == 0.4 and record.metrics["peak_memory_kind"] == "rss"
    assert record.data is None and record.best_step is None and record.tested_checkpoint is None
    assert record.compute is None


def test_a_record_missing_fields_is_not_failed(tmp_path):
    """Failed only when it says so or is unreadable: missing fields read as empty."""
    (tmp_path / "results.json").write_text(json.dumps({"status": "completed", "task": "listops"}))
    record = results.read(tmp_path)
    assert record.ok and record.task == "listops" and record.attention is None
    assert record.metrics["test_acc"] is None and record.config == {}


def test_interrupted_is_a_status():
    results.validate({**first_schema(), "status": "interrupted"})


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({"test_acc": 40.0}, "not a fraction"),
        ({"status": "weird"}, "status"),
        ({"seed": "0"}, "'seed'"),
        ({"global_step": True}, "'global_step'"),
        ({"data": "release"}, "'data'"),
        ({"best_step": 1.5}, "'best_step'"),
        ({"peak_memory_kind": 3}, "'peak_memory_kind'"),
    ],
)
def test_results_schema_rejects_bad_records(change, complaint):
    with pytest.raises(results.ResultsSchemaError, match=complaint):
        results.validate({**first_schema(), **change})


def test_a_bad_record_is_not_written(tmp_path):
    with pytest.raises(results.ResultsSchemaError, match="status"):
        results.write(tmp_path, results.RunRecord(status="weird"))
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(results.ResultsSchemaError, match="no status"):
        results.validate({"task": "listops"})


def test_an_unknown_field_is_a_missing_metric_row():
    with pytest.raises(ValueError, match=r"metrics of the callback .*\(lra\.metrics\)"):
        results.RunRecord().take({"grad_norm": 1.0})
