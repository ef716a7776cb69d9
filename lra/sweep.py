"""A sweep with a failed run exits non-zero, after all its runs have finished.

Each run of a sweep records its failure in its own ``results.json`` and returns normally, so that one
bad run does not stop the others; Hydra then exits 0 whatever happened. This Hydra callback (enabled
in ``conf/config.yaml``) looks at the runs of the sweep once they are all done and exits 1 when any
did not complete, listing them, so scripts and CI notice.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# Runs of a sweep that were refused before they could write a record in their own folder (a folder
# that belongs to another run) are listed here, one line each: "<time> <run dir>: <error>".
REFUSED = ".lra-refused-runs.txt"


def note_refused(sweep_dir: Path, run_dir: Path, error: str) -> None:
    """Add a refused run to the sweep's list (one short append: the parallel jobs do not mix lines)."""
    line = f"{time.time():.3f} {run_dir}: {' '.join(error.split())}\n"
    fd = os.open(Path(sweep_dir) / REFUSED, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def refused_runs(sweep_dir: Path, since: float) -> list[str]:
    try:
        lines = (Path(sweep_dir) / REFUSED).read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        stamp, _, rest = line.partition(" ")
        try:
            if float(stamp) >= since:
                out.append(f"{rest.split(': ', 1)[0]}: refused: {rest.split(': ', 1)[-1]}")
        except ValueError:
            continue
    return out


def sweep_runs(sweep_dir: Path, since: float) -> list:
    """The runs (:class:`lra.compare.collect.Run`) of the sweep started at or after ``since``; a run of
    an earlier sweep into the same folder is older."""
    # Imported here: this callback is built for every run, and the dashboard's modules are heavy.
    from lra.compare.collect import HYDRA_CONFIG, find_run_dirs, read_run

    return [
        read_run(run_dir)
        for run_dir in find_run_dirs([sweep_dir])
        if (run_dir / HYDRA_CONFIG).is_file() and (run_dir / HYDRA_CONFIG).stat().st_mtime >= since
    ]


def unfinished_runs(sweep_dir: Path, since: float, runs: list | None = None) -> tuple[int, list[str]]:
    """(runs of the sweep started at or after ``since``, one line per run that did not complete),
    refused runs included."""
    runs = sweep_runs(sweep_dir, since) if runs is None else runs
    failed = [
        f"{run.run_dir}: {run.record.status if run.record else 'failed'}: {run.error}"
        for run in runs
        if not run.ok
    ]
    refused = refused_runs(sweep_dir, since)
    return len(runs) + len(refused), failed + refused


def results_table(sweep_dir: Path, runs: list) -> str:
    """The sweep's runs, one line each: task, attention, seed, status, best validation and test accuracy
    (the dashboard, ``python -m lra.compare <sweep dir>``, shows them in full)."""
    rows = []
    for run in runs:
        best, test = (run.metric(k) for k in ("best_val_acc", "test_acc"))
        rows.append(
            (
                run.task,
                run.label,
                "" if run.seed is None else str(run.seed),
                run.status,
                "" if best is None else f"{100 * best:.2f}",
                "" if test is None else f"{100 * test:.2f}",
                run.run_dir.name,
            )
        )
    if not rows:
        return ""
    head = ("task", "attention", "seed", "status", "best val %", "test %", "run")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in (head, *rows)]
    return f"sweep {sweep_dir}: {len(rows)} runs\n" + "\n".join(lines)


class FailedRunsExit(Callback):
    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time() - 1  # file mtimes may be rounded down to the second

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        found = sweep_runs(sweep_dir, self.started)
        table = results_table(sweep_dir, found)
        if table:
            print(table, file=sys.stderr)
        runs, failed = unfinished_runs(sweep_dir, self.started, found)
        if failed:
            lines = "\n  ".join(failed)
            print(
                f"error: {len(failed)} of {runs} runs of the sweep did not complete:\n  {lines}",
                file=sys.stderr,
            )
            sys.exit(1)
