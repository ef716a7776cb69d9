"""Find run directories and read what each left behind, whatever state it is in.

A run directory is one holding ``results.json`` or Hydra's ``.hydra/config.yaml``. A crashed run
(killed before it could write ``results.json``), an unreadable or partial ``results.json`` and a run
that recorded ``status: failed`` all come back as a failed :class:`Run` with the reason, never as an
exception: one bad run must not hide the others from the dashboard. A results.json written before
some fields existed reads with those fields empty (:mod:`lra.results`).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from lra import results as results_schema
from lra.results import RunRecord

HYDRA_CONFIG = Path(".hydra") / "config.yaml"


@dataclass
class Run:
    run_dir: Path
    status: str  # "completed" or "failed" (failed covers crashed and unreadable runs too)
    task: str
    attention: str
    seed: int | None
    config: dict[str, Any]
    record: RunRecord | None = None  # results.json as read (None if there is none or it is unreadable)
    error: str | None = None
    variant: str = ""  # filled in by lra.compare.variants

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def metric(self, key: str) -> float | None:
        """A measured value of the metrics table, or None when missing or not a finite number."""
        value = self.record.metrics.get(key) if self.record is not None else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value)

    @property
    def stopped_early(self) -> bool:
        """Ended before ``trainer.max_steps`` (a wall-clock limit such as ``trainer.max_time`` or an
        early-stopping callback): its numbers come from fewer steps than its config asks for."""
        steps = self.metric("global_step")
        wanted = (self.config.get("trainer") or {}).get("max_steps")
        return steps is not None and isinstance(wanted, int) and wanted > 0 and steps < wanted

    def qualifier(self, key: str) -> str | None:
        """How a metric was measured (e.g. ``peak_memory_kind``), or None."""
        value = self.record.metrics.get(key) if self.record is not None else None
        return value if isinstance(value, str) else None

    @property
    def label(self) -> str:
        return self.variant or self.attention


def is_run_dir(path: Path) -> bool:
    return (path / results_schema.FILENAME).is_file() or (path / HYDRA_CONFIG).is_file()


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories at or below ``paths`` (a results.json file names its directory)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file() and path.name == results_schema.FILENAME:
            path = path.parent
        if not path.is_dir():
            continue
        if is_run_dir(path):
            found.append(path)
            continue
        for root, dirs, _files in os.walk(path):
            root_path = Path(root)
            dirs.sort()
            for name in list(dirs):
                if name.startswith(".") or name in ("wandb", "checkpoints", "csv"):
                    dirs.remove(name)  # never run directories, and can be large
                elif is_run_dir(root_path / name):
                    found.append(root_path / name)
                    dirs.remove(name)  # a run directory holds no further runs
    return sorted(set(found))


def _hydra_config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config from Hydra's copy; interpolations resolved where they can be."""
    path = run_dir / HYDRA_CONFIG
    if not path.is_file():
        return {}
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(path)
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # e.g. ${oc.env:...} of another machine; keep the raw values
            return OmegaConf.to_container(cfg, resolve=False)
    except Exception:
        return {}


def _name(config: dict, group: str) -> str:
    node = config.get(group)
    if isinstance(node, dict) and node.get("name") is not None:
        return str(node["name"])
    return "unknown"


def read_record(path: Path) -> tuple[RunRecord | None, str | None]:
    """(record, None), or (None, why it cannot be read)."""
    if not path.is_file():
        return None, "no results.json: the run crashed or is still running"
    try:
        return results_schema.read(path), None
    except (OSError, ValueError) as exc:  # not JSON, or a field of the wrong type
        return None, f"unreadable results.json: {exc}"


def read_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    record, error = read_record(run_dir / results_schema.FILENAME)
    config = record.config if record is not None and record.config else _hydra_config(run_dir)
    status = "completed" if record is not None and record.ok else "failed"
    if status == "failed" and error is None:
        error = record.error or f"status {record.status!r}"
    seed = record.seed if record is not None and record.seed is not None else config.get("seed")
    return Run(
        run_dir=run_dir,
        status=status,
        task=str((record and record.task) or _name(config, "task")),
        attention=str((record and record.attention) or _name(config, "attention")),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        config=config,
        record=record,
        error=error,
    )


def collect(paths: list[Path]) -> list[Run]:
    """Every run found, except the pieces of a resumed run that a later run continued: the run that
    continues them stands for the whole (its curves include theirs, :func:`read_curves`)."""
    dirs = find_run_dirs(paths)
    continued = {p.resolve() for d in dirs for p in resume_chain(d)[:-1]}
    return [read_run(d) for d in dirs if d.resolve() not in continued]


def _checkpoint_run_dir(run_dir: Path, ckpt: str) -> Path | None:
    """The run directory holding ``ckpt`` (``<run>/checkpoints/<name>.ckpt``). A relative path was
    relative to where that run was started, usually a folder above ``outputs/``: tried as given, then
    against each folder above ``run_dir``."""
    path = Path(ckpt)
    candidates = (
        [path] if path.is_absolute() else [path, *(a / path for a in Path(run_dir).resolve().parents)]
    )
    for candidate in candidates:
        parent = candidate.parent.parent
        if candidate.parent.name == "checkpoints" and is_run_dir(parent):
            return parent
    return None


def resume_chain(run_dir: Path, limit: int = 100) -> list[Path]:
    """The run directories a resumed run continues, earliest first, ending with ``run_dir``: each one's
    ``resumed_from`` (results.json, or ``ckpt_path`` in Hydra's config for a run that was killed
    before writing one) names a checkpoint of the one before."""
    chain = [Path(run_dir)]
    while len(chain) < limit:
        record, _ = read_record(chain[0] / results_schema.FILENAME)
        ckpt = record.resumed_from if record is not None else None
        ckpt = ckpt or _hydra_config(chain[0]).get("ckpt_path")
        parent = _checkpoint_run_dir(chain[0], str(ckpt)) if ckpt else None
        if parent is None or any(parent.resolve() == c.resolve() for c in chain):
            break
        chain.insert(0, parent)
    return chain


def _csv_curves(run_dir: Path, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Points of every CSV column named by ``keys``; a key may be an fnmatch pattern
    (``attention/*/delta_h*``), which stands for every column it matches."""
    curves: dict[str, list[tuple[int, float]]] = {k: [] for k in keys if not _is_pattern(k)}
    for path in sorted(Path(run_dir).glob("csv/version_*/metrics.csv")):
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                columns = [c for c in reader.fieldnames or [] if any(fnmatchcase(c, k) for k in keys)]
                for row in reader:
                    step = row.get("step")
                    for key in columns:
                        value = row.get(key)
                        if value and step:
                            try:
                                curves.setdefault(key, []).append((int(float(step)), float(value)))
                            except ValueError:
                                continue
        except (OSError, csv.Error):
            continue
    return curves


def _is_pattern(key: str) -> bool:
    return any(c in key for c in "*?[")


def read_curves(run_dir: Path, keys: tuple[str, ...] = ("val/acc", "train/loss")) -> dict[str, list]:
    """``{column: [(step, value), ...]}`` from the run's CSV logs (``csv/version_*/metrics.csv``), with
    those of the runs it was resumed from (:func:`resume_chain`) up to the step where each was taken
    over: the curve of the whole run, not only of its last piece. A plain key is always in the result
    (empty when never logged); a pattern key brings the columns it matches."""
    merged: dict[str, list[tuple[int, float]]] = {k: [] for k in keys if not _is_pattern(k)}
    later_start = None
    for segment in reversed(resume_chain(run_dir)):
        curves = _csv_curves(segment, keys)
        for key, points in curves.items():
            merged.setdefault(key, []).extend(p for p in points if later_start is None or p[0] < later_start)
        steps = [p[0] for points in curves.values() for p in points]
        if steps:
            later_start = min(steps) if later_start is None else min(min(steps), later_start)
    return {k: sorted(v) for k, v in merged.items()}
