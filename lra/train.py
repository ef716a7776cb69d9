"""One run: compose the pieces named by the config, train, test at the best checkpoint, record.

Whatever happens, the run's ``results.json`` says what it is: ``completed``, ``failed`` (with the
error) or ``interrupted`` (Ctrl-C), with the best validation accuracy and checkpoint reached so far.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lra import results
from lra.callbacks import AttentionDiagnostics, PeakMemory, RandomState, Throughput
from lra.callbacks.progress import StepProgressBar
from lra.checkpointing import AtomicCheckpointIO, BestCheckpoint, RollingCheckpoint
from lra.config_checks import check_compatible, check_config, instantiate_checked
from lra.console import quiet_third_party_notices
from lra.errors import CheckpointError, ConfigError, LRAError
from lra.loggers import build_loggers, close_loggers, describe_data, describe_run, log_summary
from lra.module import LRAModule
from lra.provenance import git_commit, package_versions
from lra.resources import apply_compute, plan_compute
from lra.resume import check_exists, check_resume, run_identity

__all__ = ["ConfigError", "RunInterrupted", "build_attention", "build_model", "train"]

log = logging.getLogger(__name__)


class RunInterrupted(LRAError):
    """The user stopped the run (Ctrl-C); its results.json says ``interrupted``."""


def build_attention(cfg_attention: DictConfig) -> partial:
    """The attention partial: every key but ``name`` is a knob of the variant."""
    knobs = {k: v for k, v in cfg_attention.items() if k != "name"}
    return instantiate(OmegaConf.create(knobs), _partial_=True)


def build_model(cfg: DictConfig):
    return instantiate_checked(cfg.model, "model", attention=build_attention(cfg.attention))


def build_trainer(cfg: DictConfig, run_dir: Path, loggers, callbacks) -> pl.Trainer:
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )


@dataclass
class Parts:
    """What a run has built so far (for the record written whatever happens)."""

    trainer: pl.Trainer | None = None
    best: BestCheckpoint | None = None
    throughput: Throughput | None = None
    memory: PeakMemory | None = None
    loggers: list = field(default_factory=list)


def new_record(cfg: DictConfig, run_dir: Path, started: float) -> dict:
    return {
        "schema_version": results.SCHEMA_VERSION,
        "status": "failed",
        "error": None,
        "task": str(cfg.task.name),
        "attention": str(cfg.attention.name),
        "seed": int(cfg.seed),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "best_val_acc": None,
        "best_step": None,
        "test_acc": None,
        "best_checkpoint": None,
        "tested_checkpoint": None,
        "global_step": 0,
        "train_steps_per_s": None,
        "train_tokens_per_s": None,
        "eval_tokens_per_s": None,
        "peak_memory_bytes": None,
        "peak_memory_kind": None,
        "params_total": 0,
        "wall_time_s": 0.0,
        "started_at": _iso(started),
        "finished_at": _iso(started),
        "resumed_from": str(cfg.ckpt_path) if cfg.get("ckpt_path") else None,
        "run_dir": str(run_dir),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "data": None,
        "compute": None,
    }


def prepare_data(cfg: DictConfig, datamodule) -> None:
    """Build the data (the data module does it once, under a lock shared by runs with the same
    cache_dir), load the splits and refuse empty or wrongly truncated ones."""
    datamodule.setup("fit")
    datamodule.check_splits()


def build_callbacks(cfg: DictConfig, run_dir: Path, parts: Parts) -> list:
    ckpt_dir = run_dir / "checkpoints"
    parts.best = BestCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best-step{step}",
        monitor="val/acc",
        mode="max",
        auto_insert_metric_name=False,
    )
    # A rolling last.ckpt on its own schedule: the best-checkpoint callback only refreshes "last"
    # when validation improves, which is useless for resuming a killed run.
    last = RollingCheckpoint(
        dirpath=str(ckpt_dir),
        filename="last",
        save_top_k=1,
        enable_version_counter=False,
        every_n_train_steps=int(cfg.get("checkpoint_every_n_steps") or 500),
    )
    parts.throughput = Throughput(warmup_steps=cfg.get("speed_warmup_steps", 5))
    parts.memory = PeakMemory()
    callbacks = [parts.best, last, parts.throughput, parts.memory, AttentionDiagnostics(), RandomState()]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(StepProgressBar())
    return callbacks


def compute_plan(cfg: DictConfig, parallel_runs: int = 1):
    """Threads and loader workers for this run (see :mod:`lra.resources`)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    devices = cfg.trainer.get("devices", 1)
    ddp = "ddp" in str(cfg.trainer.get("strategy", "auto"))
    processes = devices if (ddp and not gpu and isinstance(devices, int)) else 1
    return plan_compute(
        cfg.get("threads"),
        cfg.data.get("num_workers"),
        gpu=gpu,
        parallel_runs=parallel_runs,
        processes=processes,
    )


def setup_run(cfg: DictConfig, run_dir: Path, record: dict, parts: Parts, parallel_runs: int = 1):
    """Check the config, build data, model and trainer; returns (module, datamodule)."""
    check_config(cfg)
    if cfg.get("ckpt_path"):
        check_exists(Path(cfg.ckpt_path))
    pl.seed_everything(cfg.seed, workers=True)
    plan = compute_plan(cfg, parallel_runs)
    apply_compute(plan)
    record["compute"] = plan.as_record()
    datamodule = instantiate_checked(cfg.data, "data", num_workers=plan.workers)
    check_compatible(cfg, datamodule)
    prepare_data(cfg, datamodule)
    record["data"] = datamodule.data_record()
    model = build_model(cfg)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    module = LRAModule(model, num_classes=cfg.model.num_classes, run_identity=run_identity(cfg), **optim)
    record["params_total"] = sum(p.numel() for p in model.parameters())
    if cfg.get("ckpt_path"):
        check_resume(Path(cfg.ckpt_path), cfg, module.state_dict())
    callbacks = build_callbacks(cfg, run_dir, parts)
    parts.loggers = build_loggers(cfg.get("logger"), run_dir)
    parts.trainer = build_trainer(cfg, run_dir, parts.loggers, callbacks)
    describe_run(parts.loggers, cfg)
    describe_data(parts.loggers, record["data"])
    log_summary(parts.loggers, {"params/total": record["params_total"]}, step=0)
    return module, datamodule


def fit_and_test(cfg: DictConfig, run_dir: Path, record: dict, parts: Parts, module, datamodule) -> None:
    trainer = parts.trainer
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        trainer.save_checkpoint(
            run_dir / "checkpoints" / "last.ckpt"
        )  # the final state, whatever the schedule
    record_best(record, parts)
    if cfg.get("test", True):
        tested = tested_checkpoint(cfg, record)
        out = trainer.test(module, datamodule=datamodule, ckpt_path=tested, verbose=True)
        record["test_acc"] = float(out[0]["test/acc"]) if out else None
        record["tested_checkpoint"] = tested or "final weights"
    record.update(parts.throughput.summary())
    record["peak_memory_bytes"], record["peak_memory_kind"] = parts.memory.peak_bytes, parts.memory.kind
    log_summary(
        parts.loggers,
        {
            "speed/train_steps_per_s": record["train_steps_per_s"],
            "speed/train_tokens_per_s": record["train_tokens_per_s"],
            "speed/eval_tokens_per_s": record["eval_tokens_per_s"],
            "memory/peak_bytes": record["peak_memory_bytes"],
        },
        step=record["global_step"],
    )


def tested_checkpoint(cfg: DictConfig, record: dict) -> str | None:
    """The checkpoint to test: the best by validation (over the whole run, resumes included)."""
    best = record["best_checkpoint"]
    if best is not None and not Path(best).is_file():
        raise CheckpointError(
            f"the best checkpoint {best} (val/acc {record['best_val_acc']:.4f} at step {record['best_step']}) "
            f"no longer exists, so the test accuracy at the best checkpoint cannot be measured"
        )
    if best is None and not cfg.get("train", True) and cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)  # test-only run of a given checkpoint
    if best is None:
        log.warning("no validation ran, so there is no best checkpoint: testing the final weights")
    return best


def record_best(record: dict, parts: Parts) -> None:
    if parts.trainer is not None:
        record["global_step"] = int(parts.trainer.global_step)
    best = parts.best
    if best is None:
        return
    record["best_checkpoint"] = best.best_model_path or None
    record["best_step"] = best.best_step
    if best.best_model_score is not None:
        record["best_val_acc"] = float(best.best_model_score)


def train(cfg: DictConfig, run_dir: Path, parallel_runs: int = 1) -> dict:
    """Run one experiment in ``run_dir`` and return its results record (also written there).

    ``parallel_runs``: how many runs a parallel sweep executes at once (they share the cores)."""
    run_dir = Path(run_dir)
    started = time.time()
    quiet_third_party_notices()
    record = new_record(cfg, run_dir, started)
    parts = Parts()
    try:
        module, datamodule = setup_run(cfg, run_dir, record, parts, parallel_runs)
        fit_and_test(cfg, run_dir, record, parts, module, datamodule)
        record["status"] = "completed"
    except BaseException as exc:
        if _interrupted(exc, parts.trainer):
            record["status"] = "interrupted"
            record["error"] = f"interrupted by the user (Ctrl-C) at step {_step(parts)}"
            raise RunInterrupted(
                f"{record['error']}; results.json records it and the checkpoints written so far are kept: "
                f"resume with ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
            ) from exc
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        finish(record, parts, started, run_dir)
    return record


def finish(record: dict, parts: Parts, started: float, run_dir: Path) -> None:
    """Complete and write the record (also for failed and interrupted runs), then close the loggers."""
    try:
        record_best(record, parts)
        record["finished_at"] = _iso(time.time())
        record["wall_time_s"] = time.time() - started
        if parts.trainer is None or parts.trainer.is_global_zero:
            write_record(run_dir, record)
    finally:
        if parts.trainer is not None:
            close_loggers(parts.trainer.loggers, ok=record["status"] == "completed")


def write_record(run_dir: Path, record: dict) -> None:
    """Write results.json; when that fails too (disk full), say so instead of failing silently."""
    try:
        results.write(run_dir, record)
    except OSError as exc:
        message = f"could not write {Path(run_dir) / results.FILENAME}: {exc.strerror or exc}"
        log.error("%s (run status: %s)", message, record["status"])
        print(f"error: {message}", file=sys.stderr)
        if record["status"] == "completed":  # else the run's own error is already on its way
            raise LRAError(message) from exc


def _interrupted(exc: BaseException, trainer: pl.Trainer | None) -> bool:
    # Lightning turns Ctrl-C inside fit/test into SystemExit(1) after marking the trainer interrupted.
    if isinstance(exc, KeyboardInterrupt):
        return True
    return isinstance(exc, SystemExit) and trainer is not None and trainer.interrupted


def _step(parts: Parts) -> int:
    return int(parts.trainer.global_step) if parts.trainer is not None else 0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")
