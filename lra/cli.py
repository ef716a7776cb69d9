"""Glue between Hydra's entry point and :func:`lra.train.train`: user-facing errors and sweeps."""

from __future__ import annotations

import logging
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lra.module import NonFiniteLossError
from lra.train import ConfigError, train

log = logging.getLogger("lra")

# Errors whose message already says what is wrong and how to fix it: no traceback for these.
USER_ERRORS = (ConfigError, FileNotFoundError, NonFiniteLossError, ValueError)


def run_from_hydra(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        record = train(cfg, hc.runtime.output_dir)
    except USER_ERRORS as exc:
        if multirun:  # one failed run must not stop the sweep; results.json records the failure
            log.error("run failed: %s", exc)
            return None
        log.debug("traceback of the error below", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        if multirun:
            log.exception("run failed")
            return None
        raise
    return record["best_val_acc"]
