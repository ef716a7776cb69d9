"""``python run.py task=<task>`` end to end on tiny inputs in each task's real format (written here)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, run_cli
from tests.fixtures_lra import write_aan, write_cifar, write_imdb, write_pathfinder

TINY = [
    "data.num_workers=0",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=1",
    "logger=csv",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One LRA data folder as the release and local HF copies lay it out."""
    root = tmp_path_factory.mktemp("lra-data")
    write_imdb(root / "imdb")
    write_cifar(root / "cifar10")
    write_aan(root)
    write_pathfinder(root / "pathfinder32" / "curv_contour_length_14", n=40)
    return root


def run_task(tmp_path, data_dir, *overrides, steps=3, warmup=1):
    run_dir = tmp_path / "run"
    speed = [
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"speed_warmup_steps={warmup}",
    ]
    run_cli(*overrides, f"data_dir={data_dir}", *TINY, *speed, run_dir=run_dir)
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed", record["error"]
    assert (
        record["global_step"] == steps
        and record["test_acc"] is not None
        and record["best_val_acc"] is not None
    )
    assert record["train_steps_per_s"] > 0
    return record


def test_text(tmp_path, data_dir):
    record = run_task(tmp_path, data_dir, "task=text", "attention=softmax", "model.max_len=64")
    assert record["task"] == "text" and record["config"]["data"]["path"] == str(data_dir / "imdb")


def test_retrieval_uses_two_towers(tmp_path, data_dir):
    record = run_task(tmp_path, data_dir, "task=retrieval", "attention=softmax", "model.max_len=64")
    assert record["config"]["model"]["two_towers"] is True


def test_image(tmp_path, data_dir):
    record = run_task(tmp_path, data_dir, "task=image", "attention=softmax", "model.embedding=pixel_linear")
    assert record["config"]["model"]["max_len"] == 1024


def test_pathfinder_release_layout(tmp_path, data_dir):
    record = run_task(tmp_path, data_dir, "task=pathfinder", "attention=softmax", "data.workers=1")
    assert record["config"]["data"]["difficulty"] == "curv_contour_length_14"


@pytest.mark.skipif(
    not (REPO / "conf/attention/nystrom.yaml").exists(), reason="attention=nystrom not built yet"
)
def test_pathx_generated_with_nystrom(tmp_path):
    # Path-X at 16K tokens: Nyström keeps a CPU step to seconds; the generator supplies the data.
    record = run_task(
        tmp_path,
        tmp_path / "data",
        "task=pathx",
        "attention=nystrom",
        "data.source=generate",
        "data.generate.num_images=10",
        "data.workers=1",
        "data.batch_size=1",
        "data.eval_batch_size=1",
        steps=2,
        warmup=0,
    )
    assert record["config"]["model"]["max_len"] == 16384
    assert (
        tmp_path / "data" / "generated" / "pathfinder128" / "curv_contour_length_14" / "metadata"
    ).is_dir()


@pytest.mark.slow
def test_pathx_generated_with_softmax(tmp_path):
    # Exact attention over 16,384 pixels: about 25 s per training step of 2 images on a 2-core CPU.
    run_task(
        tmp_path,
        tmp_path / "data",
        "task=pathx",
        "attention=softmax",
        "data.source=generate",
        "data.generate.num_images=20",
        "data.workers=1",
        "data.batch_size=2",
        "data.eval_batch_size=2",
    )


def test_missing_data_is_a_one_line_error(tmp_path):
    proc = run_cli("task=pathfinder", f"data_dir={tmp_path}", *TINY, run_dir=tmp_path / "run", check=False)
    assert proc.returncode == 1
    assert "data.source=generate" in proc.stderr and "Traceback" not in proc.stderr
