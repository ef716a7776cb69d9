"""End to end through ``python run.py`` on a tiny generated ListOps, with offline W&B."""

from __future__ import annotations

import csv

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lra import results
from lra.train import build_model
from tests.helpers.cli import run_cli


def read_metrics(run_dir):
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from tests.helpers.listops import tiny_listops

    base = tmp_path_factory.mktemp("cli")
    args = tiny_listops(base / "data")
    run_dir = base / "run"
    proc = run_cli(*args, "attention=softmax", run_dir=run_dir)
    return run_dir, args, proc


def test_run_leaves_results_checkpoints_csv_and_wandb(finished_run):
    run_dir, _, proc = finished_run
    record = results.read(run_dir).to_dict()
    assert record["status"] == "completed" and record["error"] is None
    assert (record["task"], record["attention"], record["seed"]) == ("listops", "softmax", 0)
    assert record["global_step"] == 8
    assert 0.0 <= record["best_val_acc"] <= 1.0 and 0.0 <= record["test_acc"] <= 1.0
    assert record["params_total"] > 0 and record["wall_time_s"] > 0
    assert record["train_steps_per_s"] > 0 and record["peak_memory_bytes"] > 0
    assert record["versions"]["torch"].startswith("2.")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    best = list((run_dir / "checkpoints").glob("best-step*.ckpt"))
    assert len(best) == 1 and str(best[0]) == record["best_checkpoint"]
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    rows = read_metrics(run_dir)
    columns = set(rows[0])
    for name in (
        "train/loss",
        "val/acc",
        "test/acc",
        "trainer/lr",
        "speed/train_steps_per_s",
        "memory/peak_bytes",
    ):
        assert name in columns
    assert [r["val/acc"] for r in rows if r["val/acc"]]  # validated on the step interval
    # The run's last word: its result and where it is.
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("done: listops softmax seed 0: best val ") and str(run_dir) in last
    assert f"test {100 * record['test_acc']:.2f}%" in last


def test_test_accuracy_is_measured_at_the_best_checkpoint(finished_run):
    run_dir, _, _ = finished_run
    record = results.read(run_dir).to_dict()
    cfg = OmegaConf.create(record["config"])
    model = build_model(cfg)
    state = torch.load(record["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    dm = instantiate(cfg.data)
    dm.setup("test")
    correct = total = 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            pred = model(batch["input_ids"], batch["mask"]).argmax(-1)
            correct += int((pred == batch["label"]).sum())
            total += len(batch["label"])
    assert total == 40  # the whole split, nothing dropped
    assert record["test_acc"] == pytest.approx(correct / total, abs=1e-6)


def test_resume_continues_the_step_counter(finished_run, tmp_path):
    run_dir, args, _ = finished_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    resumed = tmp_path / "resumed"
    # Further than it was planned: the schedule stays the one the run was trained with (its length).
    run_cli(
        *args,
        "attention=softmax",
        f"ckpt_path={ckpt}",
        "trainer.max_steps=12",
        "optim.total_steps=8",
        run_dir=resumed,
    )
    record = results.read(resumed).to_dict()
    assert record["global_step"] == 12 and record["resumed_from"] == str(ckpt.resolve())
    steps = [int(r["step"]) for r in read_metrics(resumed) if r["train/loss"]]
    assert steps and min(steps) > 8  # no step was trained twice


def test_missing_release_is_a_one_line_error(tmp_path):
    proc = run_cli(
        "task=listops",
        "data.source=release",
        f"data_dir={tmp_path}",
        "logger=none",
        run_dir=tmp_path / "run",
        check=False,
    )
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert (
        err.startswith("error:") and str(tmp_path / "listops-1000") in err and "data.source=generate" in err
    )
    assert "Traceback" not in proc.stderr
    assert results.read(tmp_path / "run").to_dict()["status"] == "failed"
    assert "Traceback" in (tmp_path / "run" / "run.log").read_text()  # kept for debugging


def test_missing_checkpoint_names_the_key(tmp_path, listops_args):
    proc = run_cli(
        *listops_args, "logger=none", f"ckpt_path={tmp_path}/nope.ckpt", run_dir=tmp_path / "r", check=False
    )
    assert proc.returncode == 1 and "ckpt_path=" in proc.stderr and "does not exist" in proc.stderr
