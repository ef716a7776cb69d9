"""One run, as the experiment reads: claim a run directory, build the pieces named by the config,
fit, test at the best checkpoint.

Whatever happens, the run's ``results.json`` (:class:`lra.results.RunRecord`, its lifecycle in
:func:`recorded`) says what it is: ``completed``, ``failed`` (with the error) or ``interrupted``
(Ctrl-C or SIGTERM, :mod:`lra.interrupts`), with the best validation accuracy and checkpoint reached
so far and, for an interrupted run, the checkpoint to resume from.

A ``ckpt_path`` is used in one of three ways: resumed (the same experiment continued, its best carried
over), as the starting weights of a new run (``resume_check=false``), or tested (``train=false``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks.progress import ProgressBar

from lra import results
from lra.checkpointing import (
    AtomicCheckpointIO,
    BestCheckpoint,
    RollingCheckpoint,
)
from lra.config_checks import check_compatible, check_config, instantiate_checked
from lra.console import quiet_third_party_notices
from lra.errors import CheckpointError, ConfigError, LRAError
from lra.interrupts import EXIT_CODES, StopSignals, describe
from lra.loggers import (
    build_loggers,
    close_loggers,
    describe_data,
    describe_run,
    log_summary,
    logger_callbacks,
)
from lra.metrics import declare, logged_name, logged_values
from lra.module import COMPUTE_KEY, ORIGIN_KEY, LRAModule
from lra.provenance import git_commit, machine, package_versions
from lra.resources import apply_compute, machine_cores, pin_allocator, plan_compute
from lra.results import RunRecord
from lra.resume import check_checkpoint, check_exists, load_checkpoint, run_identity
from lra.run_dir import claim

__all__ = ["ConfigError", "RunInterrupted", "attention_partial", "build_model", "train"]

log = logging.getLogger(__name__)


class RunInterrupted(LRAError):
    """A signal (Ctrl-C, SIGTERM) stopped the run; its results.json says ``interrupted``."""

    def __init__(self, message: str, exit_code: int = EXIT_CODES["SIGINT"]):
        super().__init__(message)
        self.exit_code = exit_code


def train(cfg: DictConfig, run_dir: Path, parallel_runs: int = 1) -> RunRecord:
    """Run one experiment in ``run_dir`` and return its record (also written there as results.json).

    ``parallel_runs``: how many runs a parallel sweep executes at once (they share the cores)."""
    quiet_third_party_notices()
    run_dir = Path(run_dir)
    claim(run_dir, cfg)  # before anything is written into it
    with StopSignals() as stop, recorded(cfg, run_dir, stop) as (record, experiment):
        build_experiment(cfg, run_dir, experiment, record, parallel_runs)
        if cfg.get("train", True):
            fit(cfg, run_dir, experiment)
            stop.raise_if_requested()  # a signal at the very last step: no test after it
        if cfg.get("test", True):
            test(cfg, experiment, record)
        summarise(experiment, record)
    return record


def check_run_mode(cfg: DictConfig) -> None:
    if not cfg.get("train", True) and not cfg.get("ckpt_path"):
        raise ConfigError(
            "train=false tests a trained checkpoint, and none was given: add ckpt_path=<run dir>/checkpoints/"
            "<name>.ckpt (or leave train=true)"
        )
    if not cfg.get("train", True) and not cfg.get("test", True):
        raise ConfigError("train=false with test=false has nothing to do; set one of them to true")


# -- the pieces a run is made of -------------------------------------------------------------------------
@dataclass
class Experiment:
    """What :func:`build_experiment` built; :func:`fit` and :func:`test` use it, :func:`recorded` reads it."""

    datamodule: pl.LightningDataModule | None = None
    module: LRAModule | None = None
    trainer: pl.Trainer | None = None
    loggers: list = field(default_factory=list)
    # (file, score, step) of the best checkpoint of the run this one resumes, until the best-checkpoint
    # callback adopts it when training starts.
    inherited: tuple | None = None

    def callbacks(self) -> list[pl.Callback]:
        return list(self.trainer.callbacks) if self.trainer is not None else []


def attention_partial(cfg_attention: DictConfig) -> partial:
    """The attention partial the model calls once per block with the shape arguments (unlike
    :func:`lra.registry.build_attention`, which builds one module): every key but ``name`` is a knob."""
    knobs = {k: v for k, v in cfg_attention.items() if k != "name"}
    return instantiate(OmegaConf.create(knobs), _partial_=True)


# model.* keys the pipeline reads rather than the network's constructor.
COMPILE_KEYS = ("compile", "compile_mode")
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def build_model(cfg: DictConfig):
    """The network of ``cfg.model`` with its attention; with ``model.compile=true`` compiled in place
    (``nn.Module.compile``: the state_dict keeps its keys, so checkpoints move between compiled and
    eager runs), for training, validation and test alike."""
    node = OmegaConf.masked_copy(cfg.model, [k for k in cfg.model if k not in COMPILE_KEYS])
    model = instantiate_checked(node, "model", attention=attention_partial(cfg.attention))
    enabled, mode = cfg.model.get("compile", False), cfg.model.get("compile_mode")
    if not isinstance(enabled, bool):
        raise ConfigError(f"model.compile must be true or false; got {enabled!r}")
    if mode not in COMPILE_MODES:
        raise ConfigError(
            f"model.compile_mode must be null or one of {'|'.join(COMPILE_MODES[1:])}; got {mode!r}"
        )
    if enabled:
        model.compile(mode=mode)
    return model


def build_data(cfg: DictConfig, workers: int) -> pl.LightningDataModule:
    """The task's data module, its splits loaded (built once, under its lock) and checked: no empty
    split, no truncation that changes the answer."""
    datamodule = instantiate_checked(cfg.data, "data", num_workers=workers)
    check_compatible(cfg, datamodule)
    datamodule.setup("fit")
    datamodule.check_splits()
    return datamodule


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    """The ``callbacks`` config group (``conf/callbacks/``), instantiated in its order. ``dirpath: null``
    means ``<run dir>/checkpoints``; progress bars are left out with ``trainer.enable_progress_bar=false``."""
    show_progress = cfg.trainer.get("enable_progress_bar", True)
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None or "_target_" not in node:
            continue
        where = {"dirpath": str(run_dir / "checkpoints")} if node.get("dirpath", "") is None else {}
        callback = instantiate_checked(node, f"callbacks.{name}", **where)
        declare(getattr(callback, "metrics", ()))  # a callback added for this run only measures too
        if show_progress or not isinstance(callback, ProgressBar):
            callbacks.append(callback)
    return callbacks


def build_trainer(cfg: DictConfig, run_dir: Path, loggers, callbacks) -> pl.Trainer:
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )


def compute_plan(cfg: DictConfig, parallel_runs: int = 1, threads: int | None = None):
    """Threads and loader workers for this run (see :mod:`lra.resources`); ``threads`` when the config
    leaves them open (a resumed run's)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    devices = cfg.trainer.get("devices", 1)
    ddp = "ddp" in str(cfg.trainer.get("strategy", "auto"))
    processes = devices if (ddp and not gpu and isinstance(devices, int)) else 1
    return plan_compute(
        cfg.get("threads") or threads,
        cfg.data.get("num_workers"),
        gpu=gpu,
        parallel_runs=parallel_runs,
        processes=processes,
    )


# -- build -> fit -> test ---------------------------------------------------------------------------------
def build_experiment(
    cfg: DictConfig, run_dir: Path, experiment: Experiment, record: RunRecord, parallel_runs: int = 1
):
    """Check the config, then build data, model, callbacks, loggers and trainer from it; check and
    use the given checkpoint."""
    check_run_mode(cfg)
    check_config(cfg)
    ckpt = None
    if cfg.get("ckpt_path"):  # read once, safely, before anything is built
        check_exists(Path(cfg.ckpt_path))
        ckpt = load_checkpoint(Path(cfg.ckpt_path))
    pl.seed_everything(cfg.seed, workers=True)
    plan = compute_plan(cfg, parallel_runs, resumed_threads(cfg, ckpt))
    apply_compute(plan)
    pin_allocator()
    record.compute = plan.as_record()
    experiment.datamodule = build_data(cfg, plan.workers)
    record.data = experiment.datamodule.data_record()
    model = build_model(cfg)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    identity = run_identity(cfg, record.data.get("fingerprint"))
    experiment.module = LRAModule(model, num_classes=cfg.model.num_classes, run_identity=identity, **optim)
    experiment.module.compute = record.compute
    record.metrics["params_total"] = sum(p.numel() for p in model.parameters())
    if ckpt is not None:
        use_checkpoint(cfg, ckpt, experiment, record)
    callbacks = build_callbacks(cfg, run_dir)
    experiment.loggers = build_loggers(cfg.get("logger"), run_dir, mode(cfg), ckpt)
    callbacks += logger_callbacks(experiment.loggers)  # the W&B run id into every checkpoint
    experiment.trainer = build_trainer(cfg, run_dir, experiment.loggers, callbacks)
    describe_run(experiment.loggers, cfg)
    describe_data(experiment.loggers, record.data)
    log_summary(experiment.loggers, {logged_name("params_total"): record.metrics["params_total"]}, step=0)


def resumed_threads(cfg: DictConfig, ckpt: dict | None) -> int | None:
    """The threads of the run a resume continues (within this machine's cores), when ``threads`` is
    left open: the same steps then sum in the same order, and the resumed run ends bit for bit as the
    uninterrupted one would."""
    if mode(cfg) != "resume" or cfg.get("threads") is not None:
        return None
    saved = (ckpt.get(COMPUTE_KEY) or {}).get("threads")
    return min(int(saved), machine_cores()[0]) if isinstance(saved, int) and saved > 0 else None


def use_checkpoint(cfg: DictConfig, ckpt: dict, experiment: Experiment, record: RunRecord) -> None:
    """Check ``ckpt_path`` against this run and record how it is used (absolute paths, so the
    dashboard finds it from anywhere); a fine-tune loads its weights here (a resume and a test leave
    the loading to Lightning). A resume carries on what the checkpoint's run was: its best, whether it
    was itself a fine-tune, and the wall time spent so far."""
    path = Path(cfg.ckpt_path)
    best = check_checkpoint(ckpt, path, cfg, experiment.module.state_dict(), record.data.get("fingerprint"))
    where = str(path.resolve())
    if mode(cfg) == "resume":
        experiment.inherited = best
        record.resumed_from = where
        origin = ckpt.get(ORIGIN_KEY) or {}
        record.initialized_from = origin.get("initialized_from") if isinstance(origin, dict) else None
        wall = origin.get("wall_time_s") if isinstance(origin, dict) else None
        experiment.module.wall_time_before = (
            float(wall) if isinstance(wall, int | float) and wall > 0 else 0.0
        )
    elif mode(cfg) == "fine-tune":
        experiment.module.load_state_dict(ckpt["state_dict"])
        record.initialized_from = where
    experiment.module.initialized_from = record.initialized_from


def mode(cfg: DictConfig) -> str:
    """How ``ckpt_path`` is used: ``resume``, ``fine-tune`` (resume_check=false), ``test`` (train=false),
    or ``none``."""
    if not cfg.get("ckpt_path"):
        return "none"
    if not cfg.get("train", True):
        return "test"
    return "resume" if cfg.get("resume_check", True) else "fine-tune"


def fit(cfg: DictConfig, run_dir: Path, experiment: Experiment) -> None:
    trainer = experiment.trainer
    resume = str(cfg.ckpt_path) if mode(cfg) == "resume" else None
    trainer.fit(experiment.module, datamodule=experiment.datamodule, ckpt_path=resume, weights_only=True)
    # The final state, whatever the rolling checkpoint's schedule.
    rolling = next((c for c in trainer.callbacks if isinstance(c, RollingCheckpoint)), None)
    if rolling is not None:
        rolling.finish(trainer, resume)
    else:
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")


def test(cfg: DictConfig, experiment: Experiment, record: RunRecord) -> None:
    """Test the best checkpoint by validation (over the whole run, resumes included); a test-only run
    (``train=false``) tests the checkpoint it was given."""
    take_best(record, experiment)
    tested = str(Path(cfg.ckpt_path).resolve()) if mode(cfg) == "test" else best_to_test(record)
    out = experiment.trainer.test(
        experiment.module, datamodule=experiment.datamodule, ckpt_path=tested, verbose=True, weights_only=True
    )
    record.metrics["test_acc"] = float(out[0]["test/acc"]) if out else None
    record.tested_checkpoint = tested or "final weights"


def best_to_test(record: RunRecord) -> str | None:
    best = record.best_checkpoint
    if best is not None and not Path(best).is_file():
        raise CheckpointError(
            f"the best checkpoint {best} (val/acc {record.metrics['best_val_acc']:.4f} at step "
            f"{record.best_step}) no longer exists, so the test accuracy at the best checkpoint cannot be "
            f"measured"
        )
    if best is None:
        log.warning("no validation ran, so there is no best checkpoint: testing the final weights")
    return best


def summarise(experiment: Experiment, record: RunRecord) -> None:
    """What the callbacks measured (their ``summary()``) into the record, and under the metrics'
    logged names to every logger."""
    take_best(record, experiment)
    measured = {}
    for callback in experiment.callbacks():
        if callable(getattr(callback, "summary", None)):
            measured.update(callback.summary())
    record.take(measured)
    log_summary(experiment.loggers, logged_values(measured), step=record.metrics["global_step"])


def take_best(record: RunRecord, experiment: Experiment) -> None:
    """The step reached and the best checkpoint so far (also for failed and interrupted runs)."""
    if experiment.trainer is not None:
        record.metrics["global_step"] = int(experiment.trainer.global_step)
    best = next((c for c in experiment.callbacks() if isinstance(c, BestCheckpoint)), None)
    if best is not None and best.best_model_score is not None:
        found = (best.best_model_path, best.best_model_score, best.best_step)
    else:  # not adopted yet (stopped before training started), or no validation since
        found = experiment.inherited
    if found is None:
        return
    path, score, step = found
    record.best_checkpoint, record.best_step = path or None, step
    record.metrics["best_val_acc"] = float(score)


# -- the record's lifecycle ---------------------------------------------------------------------------
@contextmanager
def recorded(cfg: DictConfig, run_dir: Path, stop: StopSignals) -> Iterator[tuple[RunRecord, Experiment]]:
    """A run's record from start to file: ``failed`` until the block completes; the error of a failed
    run, or ``interrupted`` after a stop signal (with what to resume from); completed with the best
    reached, written to results.json and the loggers closed whatever happens."""
    started = time.time()
    record = start_record(cfg, run_dir, started)
    experiment = Experiment()
    try:
        yield record, experiment
        record.status = "completed"
    except BaseException as exc:
        if _interrupted(exc, experiment.trainer):
            record.status = "interrupted"
            step = experiment.trainer.global_step if experiment.trainer is not None else 0
            record.error = f"{describe(stop.name)} at step {step}"
            raise RunInterrupted(
                f"{record.error}; results.json records it. {resume_hint(cfg, run_dir)}",
                exit_code=EXIT_CODES.get(stop.name or "SIGINT", 130),
            ) from exc
        record.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        finish(record, experiment, started, run_dir)


def resume_hint(cfg: DictConfig, run_dir: Path) -> str:
    """What to run to continue an interrupted run: the checkpoint it wrote, else the one it started
    from, else nothing."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if mode(cfg) == "test":
        return "Nothing was trained; run the same command again to test the checkpoint"
    if last.is_file():
        return f"Resume with ckpt_path={last}"
    if cfg.get("ckpt_path"):
        return f"No checkpoint was written yet; resume with ckpt_path={cfg.ckpt_path} as before"
    return "No checkpoint was written yet; start the run again"


def start_record(cfg: DictConfig, run_dir: Path, started: float) -> RunRecord:
    record = RunRecord(
        task=str(cfg.task.name),
        attention=str(cfg.attention.name),
        seed=int(cfg.seed),
        config=OmegaConf.to_container(cfg, resolve=True),
        started_at=_iso(started),
        finished_at=_iso(started),
        kind="evaluation" if mode(cfg) == "test" else "training",
        run_dir=str(run_dir),
        versions=package_versions(),
        git_commit=git_commit(),
        machine=machine(cfg.trainer.get("accelerator")),
    )
    record.metrics.update(global_step=0, params_total=0, wall_time_s=0.0)
    return record


def finish(record: RunRecord, experiment: Experiment, started: float, run_dir: Path) -> None:
    """Complete and write the record (also for failed and interrupted runs), then close the loggers."""
    try:
        take_best(record, experiment)
        record.finished_at = _iso(time.time())
        before = experiment.module.wall_time_before if experiment.module is not None else 0.0
        record.metrics["wall_time_s"] = before + time.time() - started  # the pieces before a resume too
        if experiment.trainer is None or experiment.trainer.is_global_zero:
            write_record(run_dir, record)
    finally:
        if experiment.trainer is not None:
            close_loggers(experiment.trainer.loggers, ok=record.ok)


def write_record(run_dir: Path, record: RunRecord) -> None:
    """Write results.json; when that fails too (disk full), say so instead of failing silently."""
    try:
        results.write(run_dir, record)
    except OSError as exc:
        message = f"could not write {Path(run_dir) / results.FILENAME}: {exc.strerror or exc}"
        log.error("%s (run status: %s)", message, record.status)
        print(f"error: {message}", file=sys.stderr)
        if record.ok:  # else the run's own error is already on its way
            raise LRAError(message) from exc


def _interrupted(exc: BaseException, trainer: pl.Trainer | None) -> bool:
    # Lightning turns Ctrl-C inside fit/test into SystemExit(1), and stops on SIGTERM with a SystemExit
    # of its own, after marking the trainer interrupted.
    if isinstance(exc, KeyboardInterrupt):
        return True
    return isinstance(exc, SystemExit) and trainer is not None and trainer.interrupted


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")
