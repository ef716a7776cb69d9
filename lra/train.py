"""One run: compose the pieces named by the config, train, test at the best checkpoint, record."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from data.cache import preparation_lock
from lra import results
from lra.callbacks import AttentionDiagnostics, PeakMemory, Throughput
from lra.callbacks.progress import StepProgressBar
from lra.console import quiet_third_party_notices
from lra.loggers import build_loggers, close_loggers, describe_run, log_summary
from lra.module import LRAModule
from lra.provenance import git_commit, package_versions
from lra.resources import apply_compute, plan_compute

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


def build_attention(cfg_attention: DictConfig) -> partial:
    """The attention partial: every key but ``name`` is a knob of the variant."""
    knobs = {k: v for k, v in cfg_attention.items() if k != "name"}
    return instantiate(OmegaConf.create(knobs), _partial_=True)


def build_model(cfg: DictConfig):
    return instantiate(cfg.model, attention=build_attention(cfg.attention))


def check_compatible(cfg: DictConfig, datamodule) -> None:
    vocab = getattr(datamodule, "vocab_size", None)
    if vocab is not None and cfg.model.get("embedding", "token") == "token" and cfg.model.vocab_size < vocab:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the data's vocabulary "
            f"({vocab} tokens); set model.vocab_size={vocab}"
        )
    classes = getattr(datamodule, "num_classes", None)
    if classes is not None and cfg.model.num_classes != classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the task has {classes} classes")


def build_trainer(cfg: DictConfig, run_dir: Path, loggers, callbacks) -> pl.Trainer:
    return instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(run_dir)
    )


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


def train(cfg: DictConfig, run_dir: Path, parallel_runs: int = 1) -> dict:
    """Run one experiment in ``run_dir`` and return its results record (also written there).

    ``parallel_runs``: how many runs a parallel sweep executes at once (they share the cores)."""
    run_dir = Path(run_dir)
    started = time.time()
    quiet_third_party_notices()
    record = {
        "schema_version": results.SCHEMA_VERSION,
        "status": "failed",
        "error": None,
        "task": str(cfg.task.name),
        "attention": str(cfg.attention.name),
        "seed": int(cfg.seed),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "best_val_acc": None,
        "test_acc": None,
        "best_checkpoint": None,
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
        "compute": None,
    }
    trainer = None
    try:
        if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path} does not exist; point it at <run dir>/checkpoints/last.ckpt"
            )
        pl.seed_everything(cfg.seed, workers=True)
        plan = compute_plan(cfg, parallel_runs)
        apply_compute(plan)
        record["compute"] = plan.as_record()
        datamodule = instantiate(cfg.data, num_workers=plan.workers)
        check_compatible(cfg, datamodule)
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:  # Lightning prepares data on local rank 0 only
            with preparation_lock(cfg.cache_dir):
                datamodule.prepare_data()  # idempotent: fit's own call then finds it done
        model = build_model(cfg)
        module = LRAModule(
            model, num_classes=cfg.model.num_classes, **OmegaConf.to_container(cfg.optim, resolve=True)
        )
        record["params_total"] = sum(p.numel() for p in model.parameters())

        ckpt_dir = run_dir / "checkpoints"
        checkpoint = ModelCheckpoint(
            dirpath=str(ckpt_dir),
            filename="best-step{step}",
            monitor="val/acc",
            mode="max",
            auto_insert_metric_name=False,
        )
        # A rolling last.ckpt on its own schedule: the best-checkpoint callback only refreshes "last"
        # when validation improves, which is useless for resuming a killed run.
        last = ModelCheckpoint(
            dirpath=str(ckpt_dir),
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
            every_n_train_steps=int(cfg.get("checkpoint_every_n_steps") or 500),
        )
        throughput, memory = Throughput(warmup_steps=cfg.get("speed_warmup_steps", 5)), PeakMemory()
        loggers = build_loggers(cfg.get("logger"), run_dir)
        callbacks = [checkpoint, last, throughput, memory, AttentionDiagnostics()]
        if cfg.trainer.get("enable_progress_bar", True):
            callbacks.append(StepProgressBar())
        trainer = build_trainer(cfg, run_dir, loggers, callbacks)
        describe_run(loggers, cfg)
        log_summary(loggers, {"params/total": record["params_total"]}, step=0)

        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            trainer.save_checkpoint(ckpt_dir / "last.ckpt")  # the final state, whatever the schedule
        record["global_step"] = int(trainer.global_step)
        best = checkpoint.best_model_path or None
        record["best_checkpoint"] = best
        if checkpoint.best_model_score is not None:
            record["best_val_acc"] = float(checkpoint.best_model_score)
        if cfg.get("test", True):
            if best is None:
                log.warning("no validation ran, so there is no best checkpoint: testing the final weights")
            tested = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=True)
            record["test_acc"] = float(tested[0]["test/acc"]) if tested else None
        record.update(throughput.summary())
        record["peak_memory_bytes"], record["peak_memory_kind"] = memory.peak_bytes, memory.kind
        log_summary(
            loggers,
            {
                "speed/train_steps_per_s": record["train_steps_per_s"],
                "speed/train_tokens_per_s": record["train_tokens_per_s"],
                "speed/eval_tokens_per_s": record["eval_tokens_per_s"],
                "memory/peak_bytes": record["peak_memory_bytes"],
            },
            step=record["global_step"],
        )
        record["status"] = "completed"
    except BaseException as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if trainer is not None:
            record["global_step"] = int(trainer.global_step)
        record["finished_at"] = _iso(time.time())
        record["wall_time_s"] = time.time() - started
        if trainer is None or trainer.is_global_zero:
            results.write(run_dir, record)
        if trainer is not None:
            close_loggers(trainer.loggers, ok=record["status"] == "completed")
    return record


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")
