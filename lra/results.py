"""``results.json``: the one record of a run that ``lra.compare`` reads.

Every run directory gets one, also when the run fails (``status: "failed"`` with the error) or is
interrupted (``status: "interrupted"``), so a sweep's dashboard shows crashed runs instead of silently
missing them. Fields added after the first version (``OPTIONAL``) may be absent from older files:
reading fills them with None, so every results.json ever written stays readable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data.cache import atomic_write_text

SCHEMA_VERSION = 1
FILENAME = "results.json"

_num = (int, float)
_opt_num = (int, float, type(None))
_opt_str = (str, type(None))

# field -> accepted types. Speed and memory may be None when they could not be measured.
SCHEMA: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "status": (str,),  # "completed" | "failed"
    "error": _opt_str,
    "task": (str,),
    "attention": (str,),
    "seed": (int,),
    "config": (dict,),
    "best_val_acc": _opt_num,
    "test_acc": _opt_num,  # measured at the best-validation checkpoint
    "best_checkpoint": _opt_str,
    "global_step": (int,),
    "train_steps_per_s": _opt_num,
    "train_tokens_per_s": _opt_num,
    "eval_tokens_per_s": _opt_num,
    "peak_memory_bytes": _opt_num,
    "peak_memory_kind": _opt_str,  # "cuda_max_allocated" | "rss"
    "params_total": (int,),
    "wall_time_s": _num,
    "started_at": (str,),
    "finished_at": (str,),
    "resumed_from": _opt_str,
    "run_dir": (str,),
    "versions": (dict,),
    "git_commit": _opt_str,
}
# Added later; absent from older records. data: where the data came from (source, path, generator
# settings, content fingerprint, per-split examples and truncations); best_step: the step of the best
# checkpoint; tested_checkpoint: the file test_acc was measured on ("final weights" if none);
# compute: cores, threads and loader workers the run used (lra.resources).
OPTIONAL: dict[str, tuple[type, ...]] = {
    "data": (dict, type(None)),
    "best_step": (int, type(None)),
    "tested_checkpoint": _opt_str,
    "compute": (dict, type(None)),
}
STATUSES = ("completed", "failed", "interrupted")


class ResultsSchemaError(ValueError):
    pass


def validate(record: dict[str, Any], where: str = FILENAME) -> dict[str, Any]:
    missing = [k for k in SCHEMA if k not in record]
    if missing:
        raise ResultsSchemaError(f"{where}: missing fields {missing}")
    present = {**SCHEMA, **{k: t for k, t in OPTIONAL.items() if k in record}}
    for key, types in present.items():
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ResultsSchemaError(
                f"{where}: field {key!r} has {type(value).__name__}, expected "
                f"{'/'.join(t.__name__ for t in types)}"
            )
    if record["status"] not in STATUSES:
        raise ResultsSchemaError(f"{where}: status {record['status']!r} is not one of {STATUSES}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise ResultsSchemaError(f"{where}: schema_version {record['schema_version']} != {SCHEMA_VERSION}")
    for key in ("best_val_acc", "test_acc"):
        if record[key] is not None and not 0.0 <= record[key] <= 1.0:
            raise ResultsSchemaError(f"{where}: {key}={record[key]} is not a fraction in [0, 1]")
    return record


def write(run_dir: Path, record: dict[str, Any]) -> Path:
    validate(record)
    path = Path(run_dir) / FILENAME
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    record = validate(json.loads(path.read_text()), where=str(path))
    return {**dict.fromkeys(OPTIONAL), **record}
