"""A sweep with a failed run exits non-zero, after all its runs have finished.

Each run of a sweep records its failure in its own ``results.json`` and returns normally, so that one
bad run does not stop the others; Hydra then exits 0 whatever happened. This Hydra callback (enabled
in ``conf/config.yaml``) looks at the runs of the sweep once they are all done and exits 1 when any
did not complete, listing them, so scripts and CI notice.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def unfinished_runs(sweep_dir: Path, since: float) -> tuple[int, list[str]]:
    """(runs of the sweep started at or after ``since``, one line per run that did not complete)."""
    # Imported here: this callback is built for every run, and the dashboard's modules are heavy.
    from lra.compare.collect import HYDRA_CONFIG, find_run_dirs, read_run

    runs, failed = 0, []
    for run_dir in find_run_dirs([sweep_dir]):
        config = run_dir / HYDRA_CONFIG
        if not config.is_file() or config.stat().st_mtime < since:
            continue  # a run of an earlier sweep into the same folder
        runs += 1
        run = read_run(run_dir)
        if not run.ok:
            failed.append(f"{run_dir}: {run.record.status if run.record else 'failed'}: {run.error}")
    return runs, failed


class FailedRunsExit(Callback):
    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time() - 1  # file mtimes may be rounded down to the second

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        runs, failed = unfinished_runs(Path(config.hydra.sweep.dir), self.started)
        if failed:
            lines = "\n  ".join(failed)
            print(
                f"error: {len(failed)} of {runs} runs of the sweep did not complete:\n  {lines}",
                file=sys.stderr,
            )
            sys.exit(1)
