"""The approximate attentions train end to end through run.py, and spectral shift's delta reaches the logs."""

from __future__ import annotations

import csv
import math

import pytest

from lra import results
from tests.helpers.cli import run_cli


@pytest.mark.parametrize(
    "attention",
    [
        ["attention=nystrom", "attention.num_landmarks=8"],
        [
            "attention=spectral_shift",
            "attention.num_landmarks=8",
            "attention.form=core",
            "attention.delta=trace",
            "attention.rank=2",
        ],
    ],
    ids=["nystrom", "spectral_shift"],
)
def test_approximate_attention_trains_through_the_cli(attention, listops_args, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(*listops_args, *attention, "logger=csv", run_dir=run_dir)
    record = results.read(run_dir).to_dict()
    assert record["status"] == "completed" and record["attention"] == attention[0].split("=")[1]
    assert record["config"]["attention"]["num_landmarks"] == 8
    assert math.isfinite(record["test_acc"]) and record["global_step"] == 8
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses and all(math.isfinite(x) for x in losses)
    if record["attention"] == "spectral_shift":
        for layer in ("layer0", "layer1"):
            deltas = [float(r[f"attention/{layer}/delta"]) for r in rows if r.get(f"attention/{layer}/delta")]
            assert deltas and all(0.0 <= d <= 1.0 for d in deltas)
            assert f"attention/{layer}/delta_h1" in rows[0]
