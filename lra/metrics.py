"""The one table of what a run measures: its results.json field, the name it is logged under (W&B,
CSV), its dashboard label and format, whether higher is better, and where the dashboard shows it.

Logging, ``results.json`` (:mod:`lra.results`), the dashboard's speed and runs tables and its
ratio-to-softmax plot all read this table. A new metric is its callback (which logs it under
``logged`` and returns ``{field: value}`` from ``summary()``) and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

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

METRICS: tuple[Metric, ...] = (
    Metric("best_val_acc", "val/acc", "best val %", "percent", UP, shown=(RUNS,), wandb_summary="max"),
    Metric("test_acc", "test/acc", "test %", "percent", UP, shown=(RUNS,), wandb_summary="last"),
    Metric("global_step", None, "steps", "integer", shown=(RUNS,), integer=True),
    Metric("train_steps_per_s", "speed/train_steps_per_s", "train steps/s", "number", UP, shown=(SPEED, RUNS)),
    Metric("train_tokens_per_s", "speed/train_tokens_per_s", "train tokens/s", "number", UP, plotted=True, shown=(SPEED,)),
    Metric("eval_tokens_per_s", "speed/eval_tokens_per_s", "eval tokens/s", "number", UP, plotted=True, shown=(SPEED,)),
    Metric("peak_memory_bytes", "memory/peak_bytes", "peak memory (MiB)", "mib", DOWN, plotted=True, shown=(SPEED, RUNS),
           qualifier="peak_memory_kind", qualifier_label="memory kind"),  # kind: "cuda_max_allocated" | "rss"
    Metric("params_total", "params/total", "params", "count", shown=(SPEED,), integer=True),
    Metric("wall_time_s", None, "wall s", "seconds", shown=(RUNS,)),
)  # fmt: skip


def metrics(shown: str | None = None) -> list[Metric]:
    """The table's rows (read at call time, so a test can add a row), optionally those shown in
    dashboard table ``shown``."""
    return [m for m in METRICS if shown is None or shown in m.shown]


def metric(field: str) -> Metric:
    for m in METRICS:
        if m.field == field:
            return m
    raise KeyError(f"no metric {field!r} in lra.metrics.METRICS")


def logged_name(field: str) -> str:
    """The name a metric is logged under (for callbacks)."""
    name = metric(field).logged
    if name is None:
        raise KeyError(f"metric {field!r} is not logged")
    return name


def fields() -> set[str]:
    """Every results.json field the table owns: the metrics and their qualifiers."""
    return {m.field for m in METRICS} | {m.qualifier for m in METRICS if m.qualifier}


def logged_values(values: dict) -> dict[str, float]:
    """``{logged name: value}`` of the table's logged metrics among ``values`` (field -> value), in
    the table's order; unmeasured (None) values are left out."""
    return {
        m.logged: values[m.field]
        for m in METRICS
        if m.logged and m.field in values and values[m.field] is not None
    }
