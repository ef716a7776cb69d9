"""Find run directories and read what each left behind, whatever state it is in.

A run directory is one holding ``results.json`` or Hydra's ``.hydra/config.yaml``. A crashed run
(no ``results.json``: killed before it could write one, or still running), an interrupted run
(``status: interrupted``), an unreadable or partial ``results.json`` and a run that recorded
``status: failed`` each come back as a :class:`Run` in its own state (:data:`STATES`) with the reason,
never as an exception: one bad run must not hide the others from the dashboard. A results.json written before
some fields existed reads with those fields empty (:mod:`lra.results`).

Everything in a run directory is input from whoever made it, read as such (:mod:`lra.run_files`):
Hydra's config is read raw (``${oc.env:...}`` stays text, never the reader's environment), sizes and
depths are bounded, and a file that cannot be used (a CSV log with bad bytes or bad rows, an unreadable
config) costs that file or those rows and a one-line warning (logger ``lra.compare``), never the
dashboard.

What a run is (:func:`role`): a *training* run, possibly the continuation of an earlier one
(``resumed_from``: the earlier pieces are shown through the last one), a *fine-tune* (``initialized_from``:
a new run that started from another run's weights; it hides nothing), or an *evaluation*
(``kind: evaluation``, a ``train=false`` run that tested a checkpoint; listed apart, never averaged).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from lra import results as results_schema
from lra.results import RunRecord
from lra.run_files import MAX_DEPTH, load_yaml, read_text, resolve_references, too_deep

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
log = logging.getLogger("lra.compare")
_warned: set[str] = set()


def warn_once(path: Path, problem: str) -> None:
    """A one-line warning naming ``path``, once per file and dashboard (a run's curves are read more
    than once)."""
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning("%s", problem if str(path) in problem else f"{path}: {problem}")


def own_file(run_dir: Path, path: Path) -> bool:
    """Whether ``path`` is a regular file of ``run_dir`` itself: a link that leads out of the run
    directory is not read (a run folder must not make the dashboard show another file's content)."""
    try:
        inside = Path(os.path.realpath(path)).is_relative_to(os.path.realpath(run_dir))
    except (OSError, ValueError):
        return False
    if not inside:
        warn_once(path, "a link out of its run directory; not read")
        return False
    return path.is_file()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


@dataclass
class Run:
    run_dir: Path
    status: str  # one of STATES: "completed", "interrupted", "failed" (unreadable too), "crashed"
    task: str
    attention: str
    seed: int | None
    config: dict[str, Any]
    record: RunRecord | None = None  # results.json as read (None if there is none or it is unreadable)
    error: str | None = None
    variant: str = ""  # filled in by lra.compare.variants
    role: str = "training"  # "training" | "fine-tune" | "evaluation" (:func:`role`)
    checkpoint: str | None = None  # the checkpoint a fine-tune started from or an evaluation tested

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def evaluation(self) -> bool:
        return self.role == "evaluation"

    def metric(self, key: str) -> float | None:
        """A measured value of the metrics table, or None when missing or not a finite number."""
        value = self.record.metrics.get(key) if self.record is not None else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        try:
            value = float(value)  # an integer beyond float's range is no measurement either
        except OverflowError:
            return None
        return value if math.isfinite(value) else None

    @property
    def stopped_early(self) -> bool:
        """Ended before ``trainer.max_steps`` (a wall-clock limit such as ``trainer.max_time`` or an
        early-stopping callback): its numbers come from fewer steps than its config asks for."""
        steps = self.metric("global_step")
        trainer = self.config.get("trainer")
        wanted = trainer.get("max_steps") if isinstance(trainer, dict) else None
        return steps is not None and isinstance(wanted, int) and wanted > 0 and steps < wanted

    def qualifier(self, key: str) -> str | None:
        """How a metric was measured (e.g. ``peak_memory_kind``), or None."""
        value = self.record.metrics.get(key) if self.record is not None else None
        return value if isinstance(value, str) else None

    @property
    def label(self) -> str:
        return self.variant or self.attention


# What a run directory says about how its run ended. Only completed runs have results that count;
# an interrupted run was stopped on request (Ctrl-C, SIGTERM) and may be resumed, which is no failure;
# a folder without results.json cannot tell a crash from a run still going.
STATES = ("completed", "interrupted", "failed", "crashed")
STATE_LABELS = {
    "completed": "completed",
    "interrupted": "interrupted",
    "failed": "failed",
    "crashed": "crashed or still running",
}


def state_counts(runs: list[Run]) -> dict[str, int]:
    """state -> number of runs, every state present (zero included), in STATES order."""
    return {state: sum(r.status == state for r in runs) for state in STATES}


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
    unique: dict[Path, Path] = {}  # one run named twice (a path and its absolute form) is one run
    for path in sorted(found):
        unique.setdefault(path.resolve(), path)
    return sorted(unique.values())


def _hydra_config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config from Hydra's copy, as written: only references between its own keys
    are looked up (:func:`lra.run_files.resolve_references`); a resolver call such as
    ``${oc.env:...}`` stays text (it would read this machine's environment into the dashboard)."""
    path = run_dir / HYDRA_CONFIG
    if not own_file(run_dir, path):
        return {}
    try:
        config = load_yaml(path)
    except (OSError, ValueError) as exc:
        warn_once(path, f"{_first_line(exc)}; the run is shown without its config")
        return {}
    if not isinstance(config, dict):
        warn_once(path, "not a mapping; the run is shown without its config")
        return {}
    return resolve_references(config)


def _name(config: dict, group: str) -> str:
    node = config.get(group)
    if isinstance(node, dict) and node.get("name") is not None:
        return str(node["name"])
    return "unknown"


def read_record(path: Path) -> tuple[RunRecord | None, str | None]:
    """(record, None), or (None, why it cannot be read)."""
    if path.is_dir():
        return None, "results.json is a directory, not a file"
    if not path.is_file():
        return None, "no results.json: the run crashed or is still running"
    if not own_file(path.parent, path):
        return None, "results.json is a link out of its run directory; not read"
    try:
        record = RunRecord.from_dict(json.loads(read_text(path)), where=str(path))
    except (OSError, ValueError, RecursionError) as exc:  # not JSON, too large, a field of the wrong type
        return None, f"unreadable results.json: {_first_line(exc)}"
    if too_deep(record.config) or too_deep(record.data):
        return None, f"unreadable results.json: config nested deeper than {MAX_DEPTH} levels"
    return record, None


def _false(config: dict, key: str) -> bool:
    return config.get(key) is False


def role(record: RunRecord | None, config: dict) -> tuple[str, str | None]:
    """(what the run is, the checkpoint it continues, started from or tested):

    - ``("evaluation", ckpt)``: ``kind: evaluation``; for records older than ``kind`` or runs that
      wrote none, a config with ``train: false``;
    - ``("fine-tune", ckpt)``: ``initialized_from``; for older records or none, a ``ckpt_path`` with
      ``resume_check: false``;
    - ``("resume", ckpt)``: ``resumed_from`` (with no results.json: Hydra's ``ckpt_path``);
    - ``("training", None)``: none of these."""
    if record is not None:
        if record.kind == "evaluation" or (record.kind is None and _false(config, "train")):
            tested = record.tested_checkpoint or record.resumed_from or config.get("ckpt_path")
            return "evaluation", str(tested) if tested else None
        if record.resumed_from and not _false(config, "resume_check"):
            # A resumed fine-tune is a resume too (its record also names the fine-tune's origin).
            return "resume", record.resumed_from
        if record.initialized_from:
            return "fine-tune", record.initialized_from
        if record.resumed_from:  # records written before initialized_from existed
            return "fine-tune", record.resumed_from
        return "training", None
    ckpt = config.get("ckpt_path")
    ckpt = str(ckpt) if ckpt else None
    if _false(config, "train"):
        return "evaluation", ckpt
    if ckpt is None:
        return "training", None
    return ("fine-tune" if _false(config, "resume_check") else "resume"), ckpt


def read_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    path = run_dir / results_schema.FILENAME
    record, error = read_record(path)
    config = record.config if record is not None and record.config else _hydra_config(run_dir)
    if record is not None:
        status = record.status if record.status in STATES else "failed"
        if status != "completed" and error is None:
            error = record.error or f"status {record.status!r}"
    else:
        # No results.json at all (not even a link or a folder of that name): nothing says it ended.
        status = "crashed" if not (path.exists() or path.is_symlink()) else "failed"
    seed = record.seed if record is not None and record.seed is not None else config.get("seed")
    kind, ckpt = role(record, config)
    if kind == "resume":  # what the whole run is: a fine-tune if its first piece was one
        first = resume_chain(run_dir)[0]
        if first != run_dir:
            first_record, _ = read_record(first / results_schema.FILENAME)
            first_config = (
                first_record.config
                if first_record is not None and first_record.config
                else _hydra_config(first)
            )
            origin, origin_ckpt = role(first_record, first_config)
            if origin == "fine-tune":
                kind, ckpt = origin, origin_ckpt
    return Run(
        run_dir=run_dir,
        status=status,
        task=str((record and record.task) or _name(config, "task")),
        attention=str((record and record.attention) or _name(config, "attention")),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        config=config,
        record=record,
        error=error,
        role="training" if kind == "resume" else kind,
        checkpoint=ckpt if kind in ("fine-tune", "evaluation") else None,
    )


def collect(paths: list[Path]) -> list[Run]:
    """Every run found, except the pieces of a resumed run that a later run continued: the later run
    stands for the whole (its curves include theirs, :func:`read_curves`). A continuation that failed
    (a resume refused, say) hides nothing, and one that has not completed (interrupted, or crashed or
    still running) hides no completed piece. Two completed runs that continue the same piece are one
    run resumed twice: the later one stands for it."""
    _warned.clear()
    dirs = find_run_dirs(paths)
    runs = {d: read_run(d) for d in dirs}
    chains = {d: resume_chain(d) for d in dirs if runs[d].status != "failed"}
    found = {d.resolve(): runs[d] for d in dirs}
    hidden = set()
    for d, chain in chains.items():
        for piece in chain[:-1]:
            known = found.get(piece.resolve())
            if runs[d].ok or known is None or not known.ok:
                hidden.add(piece.resolve())
    by_piece: dict[Path, list[Path]] = {}
    for d, chain in chains.items():
        if len(chain) > 1 and runs[d].ok:
            by_piece.setdefault(chain[-2].resolve(), []).append(d)
    for piece, forks in by_piece.items():
        if len(forks) > 1:
            forks.sort(key=lambda d: (runs[d].record.finished_at or "") if runs[d].record else "")
            for d in forks[:-1]:
                hidden.add(d.resolve())
                warn_once(d, f"continues {piece} as {forks[-1]} also does; the later one is shown")
    return [runs[d] for d in dirs if d.resolve() not in hidden]


def _checkpoint_run_dir(run_dir: Path, ckpt: str) -> Path | None:
    """The run directory holding ``ckpt`` (``<run>/checkpoints/<name>.ckpt``). A relative path was
    relative to where that run was started, usually a folder above ``outputs/``: tried as given, then
    against each folder above ``run_dir``. A path that no longer exists (the runs were moved or copied
    together) is looked for by its last parts (``<run folder>/checkpoints/<name>.ckpt``, then with
    more folders above) under each folder above ``run_dir``."""
    path = Path(ckpt)
    ancestors = list(Path(run_dir).resolve().parents)
    candidates = [path] if path.is_absolute() else [path, *(a / path for a in ancestors)]
    parts = path.parts
    for k in range(3, len(parts)):
        tail = Path(*parts[-k:])
        candidates += [a / tail for a in ancestors]
    for candidate in candidates:
        parent = candidate.parent.parent
        if (
            candidate.parent.name == "checkpoints"
            and is_run_dir(parent)
            and parent.resolve() != Path(run_dir).resolve()
        ):
            return parent
    return None


def resume_chain(run_dir: Path, limit: int = 100) -> list[Path]:
    """The run directories a resumed run continues, earliest first, ending with ``run_dir``: each one
    continues (:func:`role` ``resume``) a checkpoint of the one before. An evaluation or a fine-tune
    continues nothing: it neither hides the run that wrote its checkpoint nor takes over its curves."""
    chain = [Path(run_dir)]
    while len(chain) < limit:
        record, _ = read_record(chain[0] / results_schema.FILENAME)
        config = record.config if record is not None and record.config else _hydra_config(chain[0])
        kind, ckpt = role(record, config)
        parent = _checkpoint_run_dir(chain[0], ckpt) if kind == "resume" and ckpt else None
        if parent is None or any(parent.resolve() == c.resolve() for c in chain):
            break
        chain.insert(0, parent)
    return chain


# A CSV log is read up to this size (a long run's log is a few MiB), one line up to MAX_LINE bytes.
MAX_CSV_BYTES = 256 * 2**20
MAX_LINE = 2**20


def _csv_lines(f, problems: list[str]):
    """The file's lines as text; a line that is not UTF-8 or is longer than MAX_LINE is left out
    (and counted in ``problems``), and reading stops at MAX_CSV_BYTES."""
    read = 0
    while True:
        raw = f.readline(MAX_LINE + 1)
        if not raw:
            return
        read += len(raw)
        if read > MAX_CSV_BYTES:
            problems.append(f"only its first {MAX_CSV_BYTES >> 20} MiB are read")
            return
        if len(raw) > MAX_LINE:
            problems.append("a line longer than 1 MiB")
            while raw and not raw.endswith(b"\n"):  # the rest of that line
                raw = f.readline(MAX_LINE + 1)
                read += len(raw)
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append("a line that is not UTF-8")


def _number(text: str | None) -> float | None:
    """A finite number, or None (also for an empty cell)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read_csv(path: Path, keys: tuple[str, ...], curves: dict[str, list[tuple[int, float]]]) -> None:
    """Add the points of one CSV log to ``curves``. A malformed row (bad bytes, a step or value that is
    no finite number, a broken CSV line) is skipped; a log without a header is skipped whole. Either
    way one warning names the file."""
    problems: list[str] = []
    skipped = 0
    try:
        with open(path, "rb") as f:
            reader = csv.reader(_csv_lines(f, problems))
            header = next(reader, None)
            if header is None:  # an empty log: the run stopped before its first logged step
                return
            if "step" not in header:
                warn_once(path, "no step column in its header; its curves are skipped")
                return
            step_at = header.index("step")
            columns = [(i, c) for i, c in enumerate(header) if any(fnmatchcase(c, k) for k in keys)]
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:  # e.g. a NUL byte, a field over csv's size limit
                    problems.append(f"a broken line ({_first_line(exc)})")
                    continue
                cells = {c: row[i] for i, c in columns if i < len(row) and row[i]}
                if not cells:
                    continue
                step = _number(row[step_at]) if step_at < len(row) else None
                values = {c: _number(v) for c, v in cells.items()}
                if step is None or step < 0 or None in values.values():
                    skipped += 1
                    continue
                for column, value in values.items():
                    curves.setdefault(column, []).append((int(step), value))
    except OSError as exc:
        warn_once(path, f"unreadable ({_first_line(exc)}); its curves are skipped")
        return
    if skipped:
        problems.append(f"{skipped} row{'s' * (skipped != 1)} whose step or value is not a finite number")
    if problems:
        warn_once(path, f"skipped {', '.join(dict.fromkeys(problems))}; the other rows are drawn")


def _csv_curves(run_dir: Path, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Points of every CSV column named by ``keys``; a key may be an fnmatch pattern
    (``attention/*/delta_h*``), which stands for every column it matches."""
    curves: dict[str, list[tuple[int, float]]] = {k: [] for k in keys if not _is_pattern(k)}
    for path in sorted(Path(run_dir).glob("csv/version_*/metrics.csv")):
        if own_file(run_dir, path):  # (a FIFO is no regular file: never opened, it would block)
            _read_csv(path, keys, curves)
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
