"""Lightning DDP with two CPU processes (gloo): metrics are synchronised over ranks and only rank 0
writes results.json."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lra.train import build_model
from tests.helpers.cli import OFFLINE_ENV, REPO
from tests.helpers.listops import tiny_listops

# Runs run.py's Hydra entry point with results.write wrapped to record which rank calls it. Lightning
# starts rank 1 by running this same script again, so both ranks are instrumented.
WRAPPER = textwrap.dedent(
    f"""
    import os, runpy, sys
    sys.path.insert(0, {str(REPO)!r})
    import torch.distributed as dist
    import lra.results

    _write = lra.results.write

    def write(run_dir, record):
        rank = dist.get_rank() if dist.is_initialized() else "none"
        with open(os.path.join(run_dir, "writers.log"), "a") as f:
            f.write(f"{{rank}} {{os.environ.get('LOCAL_RANK', '0')}}\\n")
        return _write(run_dir, record)

    lra.results.write = write
    runpy.run_path({str(REPO / "run.py")!r}, run_name="__main__")
    """
)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, listops_args):
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "ddp_entry.py"
    script.write_text(WRAPPER)
    run_dir = tmp / "run"
    args = [*listops_args, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    cmd = [sys.executable, str(script), *args, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, **OFFLINE_ENV, "WANDB_DIR": str(run_dir)}
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return run_dir


@pytest.fixture(scope="module")
def listops_args(tmp_path_factory) -> list[str]:
    return tiny_listops(tmp_path_factory.getbasetemp() / "listops-data")


def evaluate_single_process(run_dir, split: str) -> tuple[float, float]:
    """Accuracy and mean loss over the whole split in this process, from the best checkpoint."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    record = json.loads((run_dir / "results.json").read_text())
    model = build_model(cfg)
    state = torch.load(record["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    correct = total = 0
    loss_sum = 0.0
    with torch.no_grad():
        for batch in getattr(datamodule, f"{split}_dataloader")():
            logits = model(**{k: v for k, v in batch.items() if k != "label"})
            loss_sum += F.cross_entropy(logits, batch["label"], reduction="sum").item()
            correct += int((logits.argmax(-1) == batch["label"]).sum())
            total += len(batch["label"])
    return correct / total, loss_sum / total


def test_only_rank_zero_writes_results(ddp_run):
    writers = (ddp_run / "writers.log").read_text().splitlines()
    assert len(writers) == 1, f"results.json written by ranks: {writers}"
    rank, local_rank = writers[0].split()
    assert rank in ("0", "none") and local_rank == "0"
    record = json.loads((ddp_run / "results.json").read_text())
    assert record["status"] == "completed" and record["global_step"] == 8
    assert record["config"]["trainer"]["strategy"] == "ddp"


def test_metrics_are_synchronised_over_ranks(ddp_run):
    """Each rank evaluates half of the test split; the logged numbers must be over all of it."""
    record = json.loads((ddp_run / "results.json").read_text())
    acc, loss = evaluate_single_process(ddp_run, "test")
    assert record["test_acc"] == pytest.approx(acc, abs=1e-6)
    with open(ddp_run / "csv" / "version_0" / "metrics.csv") as f:
        logged = [float(r["test/loss"]) for r in csv.DictReader(f) if r["test/loss"]]
    assert logged[-1] == pytest.approx(loss, rel=1e-4)
    # Tokens are summed over both ranks: at least one real token per example of both ranks' batches.
    assert record["train_tokens_per_s"] >= record["train_steps_per_s"] * 2 * 16
