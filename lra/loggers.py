"""Experiment loggers from the ``logger`` config group (W&B offline by default, CSV alongside).

A run's W&B run id is kept in its checkpoints (:class:`WandbRunId`, under :data:`WANDB_RUN_KEY`), so that
a run resumed from one of them continues that W&B run (same id, ``resume="allow"``); a fine-tune
(``resume_check=false``) and a test of a checkpoint (``train=false``, job type ``evaluation``) are W&B
runs of their own."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from lra.metrics import metrics

log = logging.getLogger(__name__)

# Checkpoint key of the W&B run id of the run that wrote the checkpoint (a plain string: checkpoints are
# read with weights_only=True).
WANDB_RUN_KEY = "lra_wandb_run_id"
# What W&B accepts as a run id; anything else in a checkpoint is ignored (a new W&B run is started).
_RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# WandbLogger arguments that are Lightning's own, not wandb.init's.
_LIGHTNING_ONLY = {
    "_target_", "save_dir", "dir", "version", "id", "offline", "anonymous", "log_model", "prefix",
    "experiment", "checkpoint_name", "add_file_policy",
}  # fmt: skip


def build_loggers(
    cfg_logger: DictConfig | None, save_dir: Path, mode: str = "none", ckpt: dict | None = None
) -> list[Logger]:
    """The configured loggers, writing under ``save_dir``. ``mode`` is how the run uses its
    ``ckpt_path`` (:func:`lra.train.mode`) and ``ckpt`` that checkpoint's content: a resume continues the
    W&B run recorded in it, a test (``train=false``) is a W&B run of job type ``evaluation``."""
    loggers: list[Logger] = []
    for name, lcfg in (cfg_logger or {}).items():
        if lcfg is None or "_target_" not in lcfg:
            continue
        overrides = {"save_dir": str(save_dir)}
        if name == "wandb" or lcfg._target_.endswith("WandbLogger"):
            # WANDB_MODE=online is the documented switch; the config's offline flag is the other.
            overrides["offline"] = (
                bool(lcfg.get("offline", True)) and os.environ.get("WANDB_MODE") != "online"
            )
            os.environ.setdefault("WANDB_SILENT", "true")
            # The W&B run is started here rather than by Lightning, which passes wandb.init an
            # `anonymous` argument that this W&B version warns about on every run.
            overrides["experiment"] = start_wandb_run(lcfg, save_dir, overrides["offline"], mode, ckpt)
        loggers.append(instantiate(lcfg, **overrides))
    return loggers


def continued_run_id(ckpt: dict | None) -> str | None:
    """The W&B run id a checkpoint records, if it records a usable one."""
    run_id = (ckpt or {}).get(WANDB_RUN_KEY)
    if run_id is None:
        log.info("the checkpoint records no W&B run id (written by an earlier version): a new W&B run")
        return None
    if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id):
        return run_id
    log.warning("the checkpoint's W&B run id %r is not one; the resumed run starts a new W&B run", run_id)
    return None


def start_wandb_run(lcfg: DictConfig, save_dir: Path, offline: bool, mode: str, ckpt: dict | None):
    """``wandb.init`` with the logger config's W&B arguments, as Lightning's WandbLogger would call it
    (the run in ``<save_dir>/wandb``, ``trainer/global_step`` as the x-axis), on rank 0 only (other DDP
    ranks get Lightning's dummy experiment); ``None`` elsewhere."""
    if rank_zero_only.rank != 0:
        return None
    import wandb

    cfg = OmegaConf.to_container(lcfg, resolve=True)
    init = {k: v for k, v in cfg.items() if k not in _LIGHTNING_ONLY}
    init["dir"] = str(save_dir)
    init["project"] = cfg.get("project") or os.environ.get("WANDB_PROJECT", "lightning_logs")
    init["id"] = cfg.get("id") or cfg.get("version")  # an id set in the config wins
    if init["id"] is None and mode == "resume":
        init["id"] = continued_run_id(ckpt)
    init.setdefault("resume", "allow")  # continue the run with this id if there is one, else start it
    if mode == "test" and init.get("job_type") in (None, "train"):
        init["job_type"] = "evaluation"
    if offline:
        init["mode"] = "offline"
    # Each harness run is its own W&B run, even where an earlier one in this process was left open.
    init.setdefault("reinit", "finish_previous")
    run = wandb.init(**init)
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return run


class WandbRunId(pl.Callback):
    """Writes the W&B run id of the run into every checkpoint (:data:`WANDB_RUN_KEY`), for a resume to
    continue that W&B run."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and isinstance(logger.version, str):
                checkpoint[WANDB_RUN_KEY] = str(logger.version)
                return


def logger_callbacks(loggers: list[Logger]) -> list[pl.Callback]:
    """The callbacks the loggers need: :class:`WandbRunId` with a W&B logger."""
    return [WandbRunId()] if any(isinstance(lg, WandbLogger) for lg in loggers) else []


def describe_run(loggers: list[Logger], config: DictConfig) -> None:
    """Attach the resolved config to every logger and declare W&B summaries."""
    resolved = OmegaConf.to_container(config, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(resolved)
        if isinstance(logger, WandbLogger):
            exp = logger.experiment
            if hasattr(exp, "define_metric"):
                # Keep Lightning's x-axis (trainer/global_step) for the metrics given summaries.
                for m in metrics():
                    if m.logged and m.wandb_summary:
                        exp.define_metric(
                            m.logged, step_metric="trainer/global_step", summary=m.wandb_summary
                        )


def describe_data(loggers: list[Logger], data: dict | None) -> None:
    """Where the data came from (results.json's ``data`` field): in every logger's config, and as W&B
    summary fields so the runs table can show and filter them."""
    if not data:
        return
    for logger in loggers:
        logger.log_hyperparams({"data_source": data})
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            summary = {f"data/{k}": data.get(k) for k in ("source", "path", "fingerprint")}
            logger.experiment.summary.update({k: v for k, v in summary.items() if v is not None})


def log_summary(loggers: list[Logger], metrics: dict[str, float], step: int) -> None:
    metrics = {k: float(v) for k, v in metrics.items() if v is not None}
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        # Under DDP, other ranks hold a dummy W&B experiment without a real summary.
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            logger.experiment.summary.update(metrics)


def close_loggers(loggers: list[Logger], ok: bool) -> None:
    """Finalize every logger and end the W&B run. Without ``wandb.finish``, the next run of a sweep in
    the same process (the basic launcher, or a reused joblib worker) would log into this run."""
    for logger in loggers:
        logger.finalize("success" if ok else "failed")
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=0 if ok else 1)
