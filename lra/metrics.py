"""The one table of what a run measures: its results.json field, the name it is logged under (W&B,
CSV), its dashboard label and format, whether higher is better, and where the dashboard shows it.

Logging, ``results.json`` (:mod:`lra.results`), the dashboard's speed and runs tables and its
ratio-to-softmax plot all read this table (:func:`table`). Its rows are the pipeline's own
measurements (accuracy, steps, parameters, wall time) and the rows each callback of the
``callbacks`` config group declares as ``metrics = (Metric(...), ...)``. So a new metric is its
callback (which declares its row, logs it under ``logged`` and returns ``{field: value}`` from
``summary()``) and the callback's entry in ``conf/callbacks/default.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from hydra.utils import get_class

# Where the dashboard shows a metric: "speed" (per task x attention, mean over seeds, with a ratio to
# softmax when the metric has a direction), "runs" (one column per run).
SPEED, RUNS = "speed", "runs"


@dataclass(frozen=True)
class Metric:
    field: str  # key in results.json
    logged: str | None  # name in W&B and CSV (None: not logged as a series)
    label: str  # dashboard column header
    format: str  # how the dashboard prints it: a key of lra.compare.tables.FORMATS
    higher_is_better: bool | None = None  # None: no direction (no ratio to softmax)
    plotted: bool = False  # a bar of the dashboard's ratio-to-softmax plot
    shown: tuple[str, ...] = ()  # dashboard tables: SPEED, RUNS
    qualifier: str | None = None  # results.json field saying how it was measured; ratios need equal ones
    qualifier_label: str | None = None  # its dashboard column (after the metric's)
    wandb_summary: str | None = None  # W&B summary of the logged series ("max", "last")
    integer: bool = False  # results.json holds an int


UP, DOWN = True, False  # higher is better / lower is better

# The pipeline's own measurements: the table's first rows and its last.
OWN_FIRST: tuple[Metric, ...] = (
    Metric("best_val_acc", "val/acc", "best val %", "percent", UP, shown=(RUNS,), wandb_summary="max"),
    Metric("test_acc", "test/acc", "test %", "percent", UP, shown=(RUNS,), wandb_summary="last"),
    Metric("global_step", None, "steps", "integer", shown=(RUNS,), integer=True),
)  # fmt: skip
OWN_LAST: tuple[Metric, ...] = (
    Metric("params_total", "params/total", "params", "count", shown=(SPEED,), integer=True),
    Metric("wall_time_s", None, "wall s", "seconds", shown=(RUNS,)),
)


@cache
def _callback_rows(callbacks_dir: Path) -> tuple[Metric, ...]:
    rows: dict[str, Metric] = {}
    for path in sorted(callbacks_dir.glob("*.yaml")):
        for node in (yaml.safe_load(path.read_text()) or {}).values():
            target = node.get("_target_") if isinstance(node, dict) else None
            if isinstance(target, str):
                for row in getattr(get_class(target), "metrics", ()):
                    rows.setdefault(row.field, row)
    return tuple(rows.values())


# Rows of callbacks a run was given beyond conf/callbacks/ (``+callbacks.<name>._target_=...``).
_declared: dict[str, Metric] = {}


def declare(rows) -> None:
    """Add the rows of a callback this process runs (:func:`lra.train.build_callbacks` does), so a
    callback added for one run logs and records its metric; the dashboard shows only the table's."""
    for row in rows:
        _declared.setdefault(row.field, row)


def table() -> tuple[Metric, ...]:
    """Every row: the pipeline's own, those the callbacks of ``conf/callbacks/*.yaml`` declare, and
    those of callbacks declared in this process."""
    from lra.registry import CONF_ROOT  # read at call time, so a test can point it at a copy

    configured = _callback_rows(CONF_ROOT / "callbacks")
    known = {m.field for m in (*OWN_FIRST, *configured, *OWN_LAST)}
    extra = tuple(row for field, row in _declared.items() if field not in known)
    return (*OWN_FIRST, *configured, *extra, *OWN_LAST)


def metrics(shown: str | None = None) -> list[Metric]:
    """The table's rows, optionally those shown in dashboard table ``shown``."""
    return [m for m in table() if shown is None or shown in m.shown]


def metric(field: str) -> Metric:
    for m in table():
        if m.field == field:
            return m
    raise KeyError(f"no metric {field!r} in the metrics table (lra.metrics.table)")


def logged_name(field: str) -> str:
    """The name a metric is logged under (for callbacks)."""
    name = metric(field).logged
    if name is None:
        raise KeyError(f"metric {field!r} is not logged")
    return name


def fields() -> set[str]:
    """Every results.json field the table owns: the metrics and their qualifiers."""
    rows = table()
    return {m.field for m in rows} | {m.qualifier for m in rows if m.qualifier}


def logged_values(values: dict) -> dict[str, float]:
    """``{logged name: value}`` of the table's logged metrics among ``values`` (field -> value), in
    the table's order; unmeasured (None) values are left out."""
    return {
        m.logged: values[m.field]
        for m in table()
        if m.logged and m.field in values and values[m.field] is not None
    }
