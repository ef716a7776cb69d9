"""A run's lifecycle under faults, case by case (docs/reliability.md): stop signals keep every step and
name themselves, a resume is the run it continues or is refused, a checkpoint is used in exactly the
way asked (resumed, fine-tuned from, tested), a crafted checkpoint never runs code, a run directory
holds one run. In this process (signals included) for speed; tests/lra/test_reliability_kill_resume.py
covers SIGKILL and random points through the command line."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lra.train
from lra import checkpointing
from lra.compare.collect import read_curves
from lra.errors import CheckpointError, ConfigError
from lra.interrupts import Stopped, StopSignals
from lra.train import RunInterrupted
from tests.helpers.cli import OFFLINE_ENV, REPO
from tests.helpers.faults import install
from tests.helpers.listops import learnable_listops
from tests.helpers.runs import read_record, train_here, trained_reference

SAME = ("global_step", "best_val_acc", "best_step", "test_acc")
CURVES = ("val/acc", "val/loss", "train/loss", "trainer/lr")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[str]]:
    return trained_reference(tmp_path_factory.mktemp("lifecycle"), learnable_listops, "reference")


@pytest.fixture(autouse=True)
def _restore_sigint():
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def same(a: Path, b: Path) -> bool:
    ra, rb = read_record(a), read_record(b)
    return {k: ra[k] for k in SAME} == {k: rb[k] for k in SAME}


def interrupted(run_dir: Path, *args: str, fault: str, monkeypatch) -> RunInterrupted:
    install(fault, monkeypatch.setattr)
    with pytest.raises(RunInterrupted) as err:
        train_here(run_dir, *args)
    monkeypatch.undo()
    return err.value


# -- stop signals ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_signal_keeps_every_step_made_and_names_itself(reference, tmp_path, monkeypatch, sig, code):
    """Between checkpoints (every 3 steps, validation every 4): the step in progress finishes and is
    saved, the record says which signal it was, and the resumed run ends as the uninterrupted one."""
    ref, args = reference
    err = interrupted(tmp_path / "a", *args, fault=f"{sig}@step:13", monkeypatch=monkeypatch)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert err.exit_code == code and f"Resume with ckpt_path={last}" in str(err)
    assert torch.load(last, weights_only=True)["global_step"] == 14  # nothing after step 12 was lost
    record = read_record(tmp_path / "a")
    assert record["status"] == "interrupted" and record["global_step"] == 14
    assert ("Ctrl-C (SIGINT)" if sig == "SIGINT" else "stopped by SIGTERM") in record["error"]
    train_here(tmp_path / "b", *args, f"ckpt_path={last}")
    assert same(tmp_path / "b", ref)


def test_ctrl_c_inside_a_validation_finishes_it_before_stopping(reference, tmp_path, monkeypatch):
    ref, args = reference
    best = read_record(ref)["best_step"]
    interrupted(tmp_path / "a", *args, fault=f"SIGINT@val:{best}:1", monkeypatch=monkeypatch)
    record = read_record(tmp_path / "a")
    assert record["global_step"] == best and record["best_step"] == best  # the validation counted
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    train_here(tmp_path / "b", *args, f"ckpt_path={last}")
    assert same(tmp_path / "b", ref)


def test_second_ctrl_c_stops_at_once():
    with StopSignals() as stop:
        stop.deferring = True  # as while training on one device
        stop.handle(signal.SIGINT, None)  # the first waits for the step to end
        assert stop.requested
        with pytest.raises(Stopped):
            stop.handle(signal.SIGINT, None)
    with StopSignals() as stop, pytest.raises(Stopped):  # outside training: at once
        stop.handle(signal.SIGTERM, None)


def test_processes_forked_during_a_run_end_quietly_on_sigterm(tmp_path):
    """Data generation forks a pool, which ends its workers with SIGTERM: the run's handler, which they
    inherit, must let them end as they would without it (not raise and print a traceback each)."""
    code = (
        "import multiprocessing as mp, time\n"
        "from lra.interrupts import StopSignals\n"
        "def slow(x):\n"
        "    time.sleep(1)\n"
        "    return x\n"
        "with StopSignals():\n"
        "    with mp.get_context('fork').Pool(2) as pool:\n"
        "        print(next(pool.imap_unordered(slow, range(8))) >= 0)\n"  # ends with workers busy
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "True"
    assert "Stopped" not in proc.stderr and "Traceback" not in proc.stderr


def test_resumed_run_stopped_before_its_first_checkpoint_keeps_the_best_and_says_where_to_resume(
    reference, tmp_path, monkeypatch
):
    ref, args = reference
    train_here(tmp_path / "a", *args, "trainer.max_steps=18")
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    build = lra.train.build_callbacks

    def signal_while_building(cfg, run_dir):
        os.kill(os.getpid(), signal.SIGTERM)
        return build(cfg, run_dir)

    monkeypatch.setattr(lra.train, "build_callbacks", signal_while_building)
    with pytest.raises(RunInterrupted, match=f"resume with ckpt_path={ckpt} as before") as err:
        train_here(tmp_path / "b", *args, f"ckpt_path={ckpt}")
    assert err.value.exit_code == 143
    record, first = read_record(tmp_path / "b"), read_record(tmp_path / "a")
    assert record["status"] == "interrupted" and record["best_val_acc"] == first["best_val_acc"]
    assert record["best_step"] == first["best_step"] and Path(record["best_checkpoint"]).is_file()


# -- checkpoint writes that fail -----------------------------------------------------------------------
def test_failed_best_checkpoint_write_keeps_the_previous_best(reference, tmp_path, monkeypatch):
    """torch's writer reports a full disk as a RuntimeError; the best it was writing never existed, so
    the record names the one before, which does."""
    _, args = reference
    save, bests = checkpointing.AtomicCheckpointIO.save_checkpoint, []

    def torch_out_of_space(f, checkpoint):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    def second_best_fails(self, checkpoint, path, storage_options=None):
        bests.extend([path] if "best-step" in Path(path).name else [])
        with monkeypatch.context() as m:
            if len(bests) == 2 and bests[-1] == path:
                m.setattr(checkpointing, "_write", torch_out_of_space)
            save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(checkpointing.AtomicCheckpointIO, "save_checkpoint", second_best_fails)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*best-step.*file write failed"):
        train_here(tmp_path / "a", *args)
    record = read_record(tmp_path / "a")
    assert record["status"] == "failed" and record["best_step"] == 4
    assert (
        Path(record["best_checkpoint"]).name == "best-step4.ckpt"
        and Path(record["best_checkpoint"]).is_file()
    )
    assert not [p for p in (tmp_path / "a" / "checkpoints").iterdir() if p.name.endswith(".tmp")]


# -- what a resume must match ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, key",
    [
        ("seed=1", "seed=0 vs 1"),
        ("data.batching=bucketed", "data.batching"),
        ("trainer.precision=bf16-mixed", "trainer.precision"),
        ("optim.lr=1e-3", "optim.lr"),
        ("data.generate.num_train=150", "data.fingerprint"),
    ],
    ids=["seed", "batching", "precision", "lr", "other-data"],
)
def test_a_resume_with_other_settings_is_refused(reference, tmp_path, change, key):
    ref, args = reference
    with pytest.raises(ConfigError, match="was trained with other settings") as err:
        train_here(tmp_path / "a", *args, change, f"ckpt_path={ref / 'checkpoints' / 'last.ckpt'}")
    assert key in str(err.value) and "resume_check=false" in str(err.value)


def test_the_same_data_in_another_folder_resumes(reference, tmp_path):
    ref, args = reference
    moved = [*args, f"data_dir={tmp_path / 'elsewhere'}"]  # generated again there: the same content
    record = train_here(tmp_path / "a", *moved, f"ckpt_path={ref / 'checkpoints' / 'last.ckpt'}")
    assert record.status == "completed"


def test_resuming_with_fewer_steps_keeps_the_best_and_tests_it(reference, tmp_path):
    """A checkpoint past the new max_steps trains no further; its best is still the run's."""
    ref, args = reference
    train_here(
        tmp_path / "a", *args, "trainer.max_steps=20", f"ckpt_path={ref / 'checkpoints' / 'last.ckpt'}"
    )
    assert same(tmp_path / "a", ref)


def test_a_resume_computes_with_the_threads_of_the_run_it_continues(reference, tmp_path):
    """Another thread count sums in another order; left open, a resume takes the checkpoint's."""
    ref, args = reference
    assert read_record(ref)["compute"]["threads"] == 1
    record = train_here(
        tmp_path / "a", *args, "threads=null", f"ckpt_path={ref / 'checkpoints' / 'last.ckpt'}"
    )
    assert record.compute["threads"] == 1


def test_runs_stopped_by_max_steps_at_a_validation_resume_in_step(reference, tmp_path):
    """Stopped at a validation step twice (8, then 16 of 40), resumed to the end: the same record,
    curves at the same steps, and the wall time of all three pieces."""
    ref, args = reference
    train_here(tmp_path / "a", *args, "trainer.max_steps=8")
    train_here(
        tmp_path / "b", *args, "trainer.max_steps=16", f"ckpt_path={tmp_path / 'a/checkpoints/last.ckpt'}"
    )
    train_here(tmp_path / "c", *args, f"ckpt_path={tmp_path / 'b/checkpoints/last.ckpt'}")
    assert same(tmp_path / "c", ref)
    assert read_curves(tmp_path / "c", CURVES) == read_curves(ref, CURVES)
    walls = [read_record(tmp_path / d)["wall_time_s"] for d in "abc"]
    assert walls[2] > walls[1] > walls[0] > 0


def test_a_crafted_best_path_is_never_copied(reference, tmp_path):
    """A checkpoint naming any file as its best (a private key, say) must not get it copied."""
    ref, args = reference
    secret = tmp_path / "secret" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE")
    for named, score in ((secret, 0.9), (ref / "checkpoints" / "last.ckpt", "high")):
        ckpt = torch.load(ref / "checkpoints" / "last.ckpt", weights_only=True)
        state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
        state["best_model_path"], state["best_model_score"] = str(named), score
        (tmp_path / "crafted" / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, tmp_path / "crafted" / "checkpoints" / "last.ckpt")
        with pytest.raises(CheckpointError):
            train_here(
                tmp_path / f"run-{score}", *args, f"ckpt_path={tmp_path / 'crafted/checkpoints/last.ckpt'}"
            )
    assert not [p for p in tmp_path.rglob("id_rsa") if p != secret]


def test_a_link_to_a_moved_checkpoint_finds_its_best(reference, tmp_path):
    ref, args = reference
    train_here(tmp_path / "a", *args, "trainer.max_steps=18")
    (tmp_path / "link.ckpt").symlink_to(tmp_path / "a" / "checkpoints" / "last.ckpt")
    train_here(tmp_path / "b", *args, f"ckpt_path={tmp_path / 'link.ckpt'}")
    assert same(tmp_path / "b", ref)


@pytest.mark.parametrize(
    "harm, complaint",
    [("deleted", "neither beside it nor at"), ("truncated", "best checkpoint .* cannot be used")],
)
def test_a_missing_or_damaged_best_checkpoint_is_refused_before_training(
    reference, tmp_path, harm, complaint
):
    """Deleted, or cut short (a move that stopped half-way): refused before any step is trained."""
    _, args = reference
    train_here(tmp_path / "a", *args, "trainer.max_steps=18")
    best = Path(read_record(tmp_path / "a")["best_checkpoint"])
    if harm == "deleted":
        best.unlink()
    else:
        best.write_bytes(best.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=complaint):
        train_here(tmp_path / "b", *args, f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}")
    assert read_record(tmp_path / "b")["global_step"] == 0


@pytest.mark.parametrize("resumed_in", ["b", "a"], ids=["new-folder", "old-name"])
def test_a_moved_run_directory_resumes(reference, tmp_path, resumed_in):
    """Run ``a`` moved away, then resumed in a new folder or under its old name."""
    ref, args = reference
    train_here(tmp_path / "a", *args, "trainer.max_steps=18")
    (tmp_path / "a").rename(tmp_path / "moved")
    resumed = tmp_path / resumed_in
    train_here(resumed, *args, f"ckpt_path={tmp_path / 'moved' / 'checkpoints' / 'last.ckpt'}")
    assert same(resumed, ref)
    assert Path(read_record(resumed)["tested_checkpoint"]).parent == resumed / "checkpoints"


# -- the three uses of a checkpoint ------------------------------------------------------------------
def test_train_false_needs_a_checkpoint_and_tests_exactly_it(reference, tmp_path):
    ref, args = reference
    with pytest.raises(ConfigError, match="train=false tests a trained checkpoint"):
        train_here(tmp_path / "a", *args, "train=false")
    last = ref / "checkpoints" / "last.ckpt"
    record = train_here(tmp_path / "b", *args, "train=false", f"ckpt_path={last}")
    assert record.kind == "evaluation" and record.resumed_from is None
    assert record.tested_checkpoint == str(last) and record.metrics["best_val_acc"] is None


def test_fine_tuning_starts_a_new_run_from_the_weights(reference, tmp_path):
    ref, args = reference
    last = ref / "checkpoints" / "last.ckpt"
    record = train_here(tmp_path / "a", *args, "optim.lr=1e-3", "resume_check=false", f"ckpt_path={last}")
    assert record.initialized_from == str(last) and record.resumed_from is None
    assert record.metrics["global_step"] == read_record(ref)["global_step"]  # all its own steps
    assert Path(record.best_checkpoint).parent == tmp_path / "a" / "checkpoints"  # no inherited best


class Payload:
    def __reduce__(self):
        return (os.makedirs, (os.environ["LRA_TEST_PAYLOAD"],))


@pytest.mark.parametrize(
    "use", [[], ["train=false"], ["resume_check=false"]], ids=["resume", "test", "fine-tune"]
)
def test_a_crafted_checkpoint_never_runs_code(reference, tmp_path, monkeypatch, use):
    ref, args = reference
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("LRA_TEST_PAYLOAD", str(marker))
    ckpt = torch.load(ref / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["callbacks"]["extra"] = Payload()
    torch.save(ckpt, tmp_path / "crafted.ckpt")
    with pytest.raises(CheckpointError, match="could run code, so it was not loaded"):
        train_here(tmp_path / "a", *args, *use, f"ckpt_path={tmp_path / 'crafted.ckpt'}")
    assert not marker.exists()


# -- one run per run directory -----------------------------------------------------------------------
def test_a_finished_runs_directory_is_refused_and_left_as_it_was(reference, tmp_path):
    ref, args = reference
    before = {p: p.read_bytes() for p in (ref / "results.json", ref / ".hydra" / "config.yaml")}
    with pytest.raises(ConfigError, match="already belongs to another run"):
        train_here(ref, *args)
    assert {p: p.read_bytes() for p in before} == before


def test_a_requeued_slurm_job_is_told_how_to_resume(reference, tmp_path, monkeypatch):
    """SLURM (or submitit) starts a requeued job again with the same command, in the same folder."""
    ref, args = reference
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(
        ConfigError, match=f"requeued SLURM job: start it again with ckpt_path={ref}/checkpoints"
    ):
        train_here(ref, *args)


def test_runs_started_together_get_folders_of_their_own(reference, tmp_path):
    _, args = reference
    env = {**os.environ, **OFFLINE_ENV, "WANDB_DIR": str(tmp_path)}
    cmd = [sys.executable, str(REPO / "run.py"), *args, "trainer.max_steps=2", "test=false"]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    runs = sorted((tmp_path / "outputs" / "runs").glob("*/*/*/*/results.json"))
    assert len(runs) == 2 and all(read_record(r.parent)["status"] == "completed" for r in runs)


@pytest.mark.parametrize("where", ["folder-of-runs", "inside-a-run"])
def test_a_folder_holding_other_things_or_inside_a_run_is_refused(reference, tmp_path, where):
    ref, args = reference
    if where == "folder-of-runs":
        (tmp_path / "project" / "a-run").mkdir(parents=True)
        target, match = tmp_path / "project", "is not empty"
    else:
        target, match = ref / "nested run", "inside the folder of another run"
    with pytest.raises(ConfigError, match=match):
        train_here(target, *args)
    assert not (target / ".hydra").exists() and not (target / "results.json").exists()


def test_a_claimed_folder_is_refused(tmp_path):
    from lra.run_dir import claim
    from tests.helpers.runs import compose_run

    cfg = compose_run()
    claim(tmp_path / "run", cfg)
    with pytest.raises(ConfigError, match=r"already belongs to another run \(it holds .hydra\)"):
        claim(tmp_path / "run", cfg)


def test_enospc_is_named(tmp_path):
    from lra.checkpointing import AtomicCheckpointIO

    def no_space(f, checkpoint):
        raise OSError(errno.ENOSPC, "No space left on device")

    io = AtomicCheckpointIO()
    original, checkpointing._write = checkpointing._write, no_space
    try:
        with pytest.raises(CheckpointError, match="No space left on device"):
            io.save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    finally:
        checkpointing._write = original
