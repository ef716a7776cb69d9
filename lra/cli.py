"""Glue between Hydra's entry point and :func:`lra.train.train`: user-facing errors and sweeps."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lra.errors import LRAError
from lra.module import NonFiniteLossError
from lra.run_dir import RunDirectoryTaken
from lra.sweep import note_refused
from lra.train import RunInterrupted, train

log = logging.getLogger("lra")

# Errors whose message already says what is wrong and how to fix it: no traceback on the console
# for these (it still goes to the run's log file, in case the message is not enough). Any other
# exception, a plain ValueError included, is a bug and keeps its traceback.
USER_ERRORS = (LRAError, FileNotFoundError, NonFiniteLossError)


def _traceback_to_log_file(exc: BaseException) -> None:
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "run failed: %s", (exc,), sys.exc_info())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def parallel_runs(hc) -> int:
    """Runs a sweep executes at once on this machine: the joblib launcher's ``n_jobs`` (negative
    means one per core, as in joblib), else 1."""
    launcher = hc.launcher
    if hc.mode != RunMode.MULTIRUN or "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = int(launcher.get("n_jobs", 1) or 1)
    if n_jobs < 0:
        n_jobs = max((os.cpu_count() or 1) + 1 + n_jobs, 1)
    return n_jobs


def run_from_hydra(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        record = train(cfg, hc.runtime.output_dir, parallel_runs=parallel_runs(hc))
    except RunInterrupted as exc:  # a sweep stops too: Ctrl-C and SIGTERM mean stop
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except RunDirectoryTaken as exc:  # not a word into the other run's folder (its run.log included)
        print(f"error: {exc}", file=sys.stderr)
        if multirun:  # the sweep still exits 1 at its end, listing this run
            note_refused(Path(hc.sweep.dir), Path(hc.runtime.output_dir), str(exc))
            return None
        sys.exit(1)
    except USER_ERRORS as exc:
        _traceback_to_log_file(exc)
        if multirun:  # one failed run must not stop the sweep; results.json records the failure
            log.error("run failed: %s", exc)
            return None
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        if multirun:
            log.exception("run failed")
            return None
        raise
    print(summary_line(record), file=sys.stderr)
    return record.metrics["best_val_acc"]


def _percent(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, int | float) else "n/a"


def summary_line(record) -> str:
    """What a finished run says last: its result and where everything is."""
    m = record.metrics
    if record.kind == "evaluation":
        result = f"test {_percent(m.get('test_acc'))} of {record.tested_checkpoint}"
    else:
        step = f" at step {record.best_step}" if record.best_step is not None else ""
        result = f"best val {_percent(m.get('best_val_acc'))}{step}, test {_percent(m.get('test_acc'))}"
    return (
        f"done: {record.task} {record.attention} seed {record.seed}: {result} "
        f"({m.get('global_step')} steps, {m.get('wall_time_s') or 0:.0f} s, {m.get('params_total') or 0:,} "
        f"parameters); {record.run_dir}"
    )
