"""Resuming: the best checkpoint survives, the data order and random stream continue exactly, and a
checkpoint of another configuration (or no checkpoint at all) is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lra.errors import CheckpointError, ConfigError
from tests.helpers.cli import run_cli
from tests.helpers.runs import (
    read_record,
    resume_args,
    run_killed_at,
    train_here,
    train_losses,
    trained_reference,
)

SAME = ("best_val_acc", "best_step", "test_acc")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, list[str]]:
    """The reference: 24 steps in one go (softmax)."""
    return trained_reference(tmp_path_factory.mktemp("resume"), resume_args, "full")


def assert_same_run(resumed: Path, full: Path, from_step: int) -> None:
    a, b = read_record(full), read_record(resumed)
    assert b["status"] == "completed" and b["global_step"] == a["global_step"]
    assert {k: b[k] for k in SAME} == {k: a[k] for k in SAME}
    # The best checkpoint of the whole run is tested, from the resumed run's own directory.
    assert Path(b["best_checkpoint"]).parent == resumed / "checkpoints"
    assert b["tested_checkpoint"] == b["best_checkpoint"] and Path(b["best_checkpoint"]).is_file()
    # Same batches, same dropout: every step after the resume has exactly the uninterrupted loss.
    full_losses, resumed_losses = train_losses(full), train_losses(resumed)
    assert min(resumed_losses) <= from_step and resumed_losses
    assert all(resumed_losses[s] == full_losses[s] for s in resumed_losses)


def test_resumed_run_equals_the_uninterrupted_one(uninterrupted, tmp_path):
    """Stopped by max_steps two steps after the uninterrupted run's best (between validations, so the
    best must come from the first run's checkpoint), then resumed to 24."""
    full, args = uninterrupted
    best_step = read_record(full)["best_step"]
    assert best_step is not None and best_step <= 20  # validated every 4 of 24 steps
    stop = best_step + 2
    train_here(tmp_path / "first", *args, f"trainer.max_steps={stop}")
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train_here(tmp_path / "resumed", *args, f"ckpt_path={ckpt}")
    assert_same_run(tmp_path / "resumed", full, from_step=stop)
    assert read_record(tmp_path / "resumed")["resumed_from"] == str(ckpt)


def test_run_stopped_at_an_epoch_end_resumes_with_the_whole_next_epoch(uninterrupted, tmp_path):
    """max_steps = 6 is exactly one epoch of 6 batches: Lightning's checkpoint then holds the finished
    epoch's batch counter, and restored as is the next epoch ended after one batch (the resumed run
    skipped five batches and left the uninterrupted run's losses at its second step)."""
    full, args = uninterrupted
    train_here(tmp_path / "first", *args, "trainer.max_steps=6")
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train_here(tmp_path / "resumed", *args, f"ckpt_path={ckpt}")
    assert_same_run(tmp_path / "resumed", full, from_step=6)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(uninterrupted, tmp_path, workers):
    """kill -9 at step 14 (mid-epoch; last.ckpt from step 12, before its validation), then resume."""
    full, args = uninterrupted
    loader = [f"data.num_workers={workers}"]
    if workers:  # the reference with the same loader settings
        full = tmp_path / "full"
        train_here(full, *args, *loader)
    killed = run_killed_at(14, tmp_path / "killed", *args, *loader, cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "killed" / "results.json").exists()  # kill -9 leaves no record
    ckpt = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 12
    run_cli(*args, *loader, f"ckpt_path={ckpt}", run_dir=tmp_path / "resumed")
    assert_same_run(tmp_path / "resumed", full, from_step=12)


# -- refusing checkpoints that do not belong to this run ----------------------------------------------
def test_checkpoint_of_another_attention_is_refused(uninterrupted, tmp_path):
    full, args = uninterrupted
    ckpt = full / "checkpoints" / "last.ckpt"
    # Nyström without its convolution has exactly softmax's parameter names.
    nystrom = ["attention=nystrom", "attention.conv_kernel=0", "attention.num_landmarks=8"]
    with pytest.raises(ConfigError) as err:
        train_here(tmp_path / "r", *args, *nystrom, f"ckpt_path={ckpt}")
    msg = str(err.value)
    assert "attention.name" in msg and "softmax" in msg and "nystrom" in msg and "resume_check=false" in msg
    assert read_record(tmp_path / "r")["status"] == "failed"
    # The documented override loads the weights anyway (fine-tuning).
    record = train_here(tmp_path / "ft", *args, *nystrom, f"ckpt_path={ckpt}", "resume_check=false")
    assert record.status == "completed" and record.attention == "nystrom"


def test_mismatch_is_one_line_on_the_command_line(uninterrupted, tmp_path):
    full, args = uninterrupted
    ckpt = full / "checkpoints" / "last.ckpt"
    proc = run_cli(*args, "model.dim=32", f"ckpt_path={ckpt}", run_dir=tmp_path / "r", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "model.dim=64 vs 32" in last
    # Forced past the config check, the shapes still cannot fit: one line, not a page of mismatches.
    proc = run_cli(
        *args, "model.dim=32", f"ckpt_path={ckpt}", "resume_check=false", run_dir=tmp_path / "r2", check=False
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert lines[-1].startswith("error: ") and "does not fit this model" in lines[-1]
    assert "size mismatch" not in proc.stderr


@pytest.mark.parametrize(
    "content, complaint",
    [
        (b"not a checkpoint at all", "is not a checkpoint this harness can read"),
        (None, "not a training checkpoint"),
    ],
    ids=["garbage", "other-pickle"],
)
def test_a_file_that_is_not_a_checkpoint_is_refused(uninterrupted, tmp_path, content, complaint):
    _, args = uninterrupted
    bogus = tmp_path / "bogus.ckpt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, bogus)
    else:
        bogus.write_bytes(content)
    with pytest.raises(CheckpointError, match=complaint):
        train_here(tmp_path / "r", *args, f"ckpt_path={bogus}")


def test_checkpoint_without_a_record_is_checked_against_its_runs_hydra_config(uninterrupted, tmp_path):
    """Checkpoints written before runs recorded their identity: the config Hydra saved beside them."""
    from omegaconf import OmegaConf

    from lra.module import RUN_IDENTITY_KEY
    from lra.resume import check_identity
    from tests.helpers.runs import compose_run

    full, args = uninterrupted
    ckpt = torch.load(full / "checkpoints" / "last.ckpt", weights_only=False)
    del ckpt[RUN_IDENTITY_KEY]
    old_run = tmp_path / "old"
    (old_run / "checkpoints").mkdir(parents=True)
    (old_run / ".hydra").mkdir()
    OmegaConf.save(compose_run(*args), old_run / ".hydra" / "config.yaml")
    path = old_run / "checkpoints" / "last.ckpt"
    check_identity(ckpt, path, compose_run(*args))  # the same configuration passes
    with pytest.raises(ConfigError, match="model.depth=2 vs 3"):
        check_identity(ckpt, path, compose_run(*args, "model.depth=3"))
    with pytest.raises(CheckpointError, match="records no task/attention/model config"):
        check_identity(ckpt, tmp_path / "elsewhere" / "last.ckpt", compose_run(*args))


def test_how_an_attention_computes_is_not_part_of_what_a_checkpoint_must_match(tmp_path):
    """``attention.conv_impl`` changes how the conv skip is computed, not what: a checkpoint resumes
    across it, and one written before the key existed still resumes."""
    from lra.resume import differences, run_identity
    from tests.helpers.listops import tiny_listops
    from tests.helpers.runs import compose_run

    base = [*tiny_listops(tmp_path / "data"), "attention=nystrom"]
    gemm = run_identity(compose_run(*base))
    native = run_identity(compose_run(*base, "attention.conv_impl=native"))
    assert differences(gemm, native) == []
    other = run_identity(compose_run(*base, "attention.conv_kernel=5"))
    assert differences(gemm, other) == ["attention.conv_kernel=35 vs 5"]
