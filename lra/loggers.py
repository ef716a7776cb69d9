"""Experiment loggers from the ``logger`` config group (W&B offline by default, CSV alongside)."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from lra.metrics import metrics


def build_loggers(cfg_logger: DictConfig | None, save_dir: Path) -> list[Logger]:
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
        logger = instantiate(lcfg, **overrides)
        if isinstance(logger, WandbLogger):
            # Lightning always passes `anonymous`, which this W&B version warns about on every run.
            getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        loggers.append(logger)
    return loggers


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
