"""Experiment loggers from the ``logger`` config group (W&B offline by default, CSV alongside)."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger


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
        loggers.append(instantiate(lcfg, **overrides))
    return loggers


def describe_run(loggers: list[Logger], config: DictConfig) -> None:
    """Attach the resolved config to every logger and declare W&B summaries."""
    resolved = OmegaConf.to_container(config, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(resolved)
        if isinstance(logger, WandbLogger):
            exp = logger.experiment
            if hasattr(exp, "define_metric"):
                exp.define_metric("val/acc", summary="max")
                exp.define_metric("test/acc", summary="last")


def log_summary(loggers: list[Logger], metrics: dict[str, float], step: int) -> None:
    metrics = {k: float(v) for k, v in metrics.items() if v is not None}
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        if isinstance(logger, WandbLogger) and hasattr(logger.experiment, "summary"):
            logger.experiment.summary.update(metrics)
