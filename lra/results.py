"""``results.json``: the one record of a run, typed as :class:`RunRecord`; ``lra.compare`` reads it.

Every run directory gets one, also when the run fails (``status: "failed"`` with the error) or is
interrupted (``status: "interrupted"``), so a sweep's dashboard shows crashed runs instead of silently
missing them. The file is flat JSON: the record's fields and, beside them, the measured values of the
metrics table (:mod:`lra.metrics`). A field a record lacks (one written before the field existed)
reads as empty, so every results.json ever written stays readable; a record is failed only when it
says so or cannot be read (not JSON, a field of the wrong type, an unknown status).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from data.cache import atomic_write_text
from lra import metrics as metrics_table

SCHEMA_VERSION = 1
FILENAME = "results.json"
STATUSES = ("completed", "failed", "interrupted")


class ResultsSchemaError(ValueError):
    pass


@dataclass
class RunRecord:
    status: str = "failed"  # one of STATUSES; a run is "failed" until it completes
    error: str | None = None  # "<ExceptionType>: message" of a failed or interrupted run
    task: str | None = None
    attention: str | None = None
    seed: int | None = None
    config: dict = field(default_factory=dict)  # the resolved config
    best_step: int | None = None  # the step of the best-validation checkpoint
    best_checkpoint: str | None = None
    tested_checkpoint: str | None = None  # the file test_acc was measured on ("final weights" if none)
    started_at: str | None = None
    finished_at: str | None = None
    # A checkpoint of the same run that this one continues (its best carries over); the dashboard shows
    # the last piece of such a chain for the whole run.
    resumed_from: str | None = None
    # A checkpoint whose weights started this run (resume_check=false, fine-tuning): a new run, not a
    # continuation; it inherits no best and does not stand for the run that wrote the checkpoint.
    initialized_from: str | None = None
    # "training" (fit, then test at the best checkpoint) or "evaluation" (train=false: the given
    # checkpoint tested, nothing trained); records without it are training runs.
    kind: str | None = None
    run_dir: str | None = None
    versions: dict = field(default_factory=dict)  # package versions
    git_commit: str | None = None
    # Where the data came from: source, path, generator settings, content fingerprint, per-split
    # examples and truncations.
    data: dict | None = None
    compute: dict | None = None  # cores, threads and loader workers the run used (lra.resources)
    machine: str | None = None  # what ran it: the GPU's name, or "<n>-core CPU" (lra.provenance)
    schema_version: int = SCHEMA_VERSION
    # The metrics table's fields (and their qualifiers) -> measured value, None where not measured.
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in sorted(metrics_table.fields()):
            self.metrics.setdefault(name, None)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def take(self, values: dict[str, Any]) -> None:
        """Set record fields and metrics (e.g. a callback's ``summary()``); a key that is neither is a
        metric missing from the table."""
        own = _record_fields()
        for key, value in values.items():
            if key in own:
                setattr(self, key, value)
            elif key in metrics_table.fields():
                self.metrics[key] = value
            else:
                raise ValueError(
                    f"{key!r} is neither a results.json field nor a metric: declare its row in the "
                    "metrics of the callback that measures it (lra.metrics)"
                )

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object of results.json."""
        record = asdict(self)
        return {**record.pop("metrics"), **record}

    @classmethod
    def from_dict(cls, record: Any, where: str = FILENAME) -> RunRecord:
        """A record from results.json's object; missing fields are empty, wrong ones an error."""
        validate(record, where)
        own = _record_fields()
        known = metrics_table.fields()
        return cls(
            **{k: v for k, v in record.items() if k in own and k != "metrics"},
            metrics={k: v for k, v in record.items() if k in known},
        )


@cache
def _record_fields() -> dict[str, tuple[type, ...]]:
    """Field name -> the types its value may have (from the annotations)."""
    hints = typing.get_type_hints(RunRecord)
    return {f.name: _types(hints[f.name]) for f in fields(RunRecord) if f.name != "metrics"}


def _types(hint) -> tuple[type, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _types(arg))
    return (typing.get_origin(hint) or hint,)


def _check_type(key: str, value: Any, accepted: tuple[type, ...], where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, accepted):
        names = "/".join("None" if t is type(None) else t.__name__ for t in accepted)
        raise ResultsSchemaError(f"{where}: field {key!r} has {type(value).__name__}, expected {names}")


def _metric_types(m: metrics_table.Metric) -> tuple[type, ...]:
    return (int, type(None)) if m.integer else (int, float, type(None))


def validate(record: Any, where: str = FILENAME) -> dict[str, Any]:
    """Check a results.json object: a status, and every present field of the right type. Fields a
    record lacks are fine (older records); fields this version does not know are ignored."""
    if not isinstance(record, dict):
        raise ResultsSchemaError(f"{where}: not a JSON object")
    if "status" not in record:
        raise ResultsSchemaError(f"{where}: no status")
    for key, accepted in _record_fields().items():
        if key in record:
            _check_type(key, record[key], accepted, where)
    for m in metrics_table.metrics():
        value = record.get(m.field)
        _check_type(m.field, value, _metric_types(m), where)
        if m.qualifier:
            _check_type(m.qualifier, record.get(m.qualifier), (str, type(None)), where)
        if m.format == "percent" and value is not None and not 0.0 <= value <= 1.0:
            raise ResultsSchemaError(f"{where}: {m.field}={value} is not a fraction in [0, 1]")
    if record["status"] not in STATUSES:
        raise ResultsSchemaError(f"{where}: status {record['status']!r} is not one of {STATUSES}")
    if record.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ResultsSchemaError(f"{where}: schema_version {record['schema_version']} != {SCHEMA_VERSION}")
    return record


def write(run_dir: Path, record: RunRecord) -> Path:
    data = record.to_dict()
    validate(data)
    path = Path(run_dir) / FILENAME
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read(path: Path) -> RunRecord:
    """The record in ``path`` (a run directory or its results.json); ResultsSchemaError when it is
    unreadable (ValueError for text that is not JSON)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    return RunRecord.from_dict(json.loads(path.read_text()), where=str(path))
