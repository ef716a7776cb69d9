"""The LightningModule's schedule and loss guard, and the results.json schema."""

from __future__ import annotations

import copy
import json

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from lra import results
from lra.module import LRAModule, NonFiniteLossError
from lra.schedule import warmup_linear_decay


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


def valid_record():
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


def current_record():
    data = {"source": "generate", "path": "p", "generator": {"seed": 0}, "fingerprint": "f", "splits": {}}
    return {**valid_record(), "data": data, "best_step": 4, "tested_checkpoint": "x.ckpt"}


def test_results_schema_round_trip(tmp_path):
    path = results.write(tmp_path, current_record())
    assert results.read(tmp_path) == {**current_record(), "compute": None}
    assert current_record() == json.loads(path.read_text())


def test_records_written_before_the_optional_fields_still_read(tmp_path):
    """A results.json of the first schema (no data / best_step / tested_checkpoint) stays readable."""
    (tmp_path / "results.json").write_text(json.dumps(valid_record()))
    record = results.read(tmp_path)
    assert record["data"] is None and record["best_step"] is None and record["tested_checkpoint"] is None
    assert record["compute"] is None
    results.validate(valid_record())  # what lra.compare checks


def test_interrupted_is_a_status():
    results.validate({**valid_record(), "status": "interrupted"})


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({"test_acc": 40.0}, "not a fraction"),
        ({"status": "weird"}, "status"),
        ({"seed": "0"}, "'seed'"),
        ({"global_step": True}, "'global_step'"),
        ({"data": "release"}, "'data'"),
        ({"best_step": 1.5}, "'best_step'"),
    ],
)
def test_results_schema_rejects_bad_records(tmp_path, change, complaint):
    with pytest.raises(results.ResultsSchemaError, match=complaint):
        results.write(tmp_path, {**valid_record(), **change})
    assert not (tmp_path / "results.json").exists()


def test_results_schema_rejects_missing_fields():
    record = copy.deepcopy(valid_record())
    del record["test_acc"]
    with pytest.raises(results.ResultsSchemaError, match="missing fields"):
        results.validate(record)
