"""The dashboard's tables as plain data (header + rows of strings), rendered by ``render``.

- LRA accuracy: rows = attention (variant), columns = tasks (Path-X included) + average, mean ± std
  over the completed seeds of the test accuracy at the best-validation checkpoint; below them the
  published rows of the attentions that were run, marked as published (the other published rows are
  a table of their own, shown folded).
- Speed and memory per task and attention, absolute and as ratios to softmax in the same setting.
- Every run, in its state (completed, interrupted, failed, crashed or still running), with the reason.

The measured columns of the last two come from the metrics table (``lra.metrics.table()``): its rows'
labels, formats, directions (a ratio to softmax for those with one) and qualifiers.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lra.compare.collect import STATE_LABELS, Run
from lra.compare.published import LRA_TASKS, PUBLISHED, TASK_COLUMNS, PublishedRow, task_title
from lra.compare.variants import same_setting
from lra.metrics import RUNS, SPEED, Metric, metrics

BASELINE = "softmax"


@dataclass(frozen=True)
class Column:
    header: str
    kind: str = "number"  # "number" (right-aligned) | "text" (left) | "long" (left, wrapped)


def text(*headers: str) -> list[Column]:
    return [Column(h, "text") for h in headers]


def numbers(*headers: str) -> list[Column]:
    return [Column(h) for h in headers]


@dataclass
class Table:
    key: str  # stable id (HTML id, test hook)
    title: str
    columns: list[Column]
    rows: list[list[str]] = field(default_factory=list)
    # per row: "ours" | "published" | "section", or the state of runs without a result ("failed",
    # "interrupted", "crashed")
    kinds: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def header(self) -> list[str]:
        return [c.header for c in self.columns]

    def add(self, cells: list[str], kind: str = "ours") -> None:
        self.rows.append(cells)
        self.kinds.append(kind)


@dataclass
class Group:
    """The runs of one task x attention variant (the seeds of one configuration)."""

    task: str
    attention: str
    label: str
    runs: list[Run]

    @property
    def ok(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def failed(self) -> int:
        """Runs that ended without a result and were not stopped on request: recorded failures and
        runs with no results.json (the cell cannot tell a crash from a run still going)."""
        return sum(r.status in ("failed", "crashed") for r in self.runs)

    @property
    def interrupted(self) -> int:
        return sum(r.status == "interrupted" for r in self.runs)

    @property
    def kind(self) -> str:
        """The row kind of a group: "ours" when a seed completed, else the state of its runs."""
        if self.ok:
            return "ours"
        states = {r.status for r in self.runs}
        return states.pop() if len(states) == 1 else "failed"

    def values(self, key: str) -> list[float]:
        return [v for v in (r.metric(key) for r in self.ok) if v is not None]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        try:
            return statistics.fmean(values) if values else None
        except OverflowError:  # finite values whose sum is not (a hand-made results.json)
            return None

    def std(self, key: str) -> float | None:
        """The sample standard deviation over the completed seeds; None with fewer than two."""
        values = self.values(key)
        if len(values) < 2 or self.mean(key) is None:
            return None
        try:
            std = statistics.stdev(values)
        except (OverflowError, ValueError):
            return None
        return std if math.isfinite(std) else None


def group_runs(runs: list[Run]) -> dict[tuple[str, str], Group]:
    groups: dict[tuple[str, str], Group] = {}
    for run in runs:
        key = (run.task, run.label)
        if key not in groups:
            groups[key] = Group(run.task, run.attention, run.label, [])
        groups[key].runs.append(run)
    return groups


def row_order(labels: list[tuple[str, str]]) -> list[str]:
    """Labels with softmax first, then by attention and label."""
    unique = sorted(set(labels), key=lambda al: (al[0] != BASELINE, al[0], al[1]))
    return list(dict.fromkeys(label for _attention, label in unique))


def task_order(tasks: set[str]) -> list[str]:
    return [t for t in TASK_COLUMNS if t in tasks] + sorted(tasks - set(TASK_COLUMNS))


# -- formatting --------------------------------------------------------------------------------------
def pct(mean: float, std: float | None = None) -> str:
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def accuracy_cell(group: Group | None, key: str = "test_acc") -> str:
    """``mean ± std (n=seeds, ...)`` over the completed seeds; the runs without a result are counted
    by state and never averaged."""
    if group is None:
        return "—"
    values = group.values(key)
    unfinished = [
        f"{n} {state}" for n, state in ((group.failed, "failed"), (group.interrupted, "interrupted")) if n
    ]
    if not values:
        if group.failed and group.interrupted:
            return f"no result ({', '.join(unfinished)})"
        if group.failed or group.interrupted:
            state = "failed" if group.failed else "interrupted"
            return f"{state} ({group.failed or group.interrupted} of {len(group.runs)})"
        return "no test result"
    mean = group.mean(key)
    if mean is None:
        return "—"
    short = sum(r.stopped_early for r in group.ok if r.metric(key) is not None)
    notes = [f"n={len(values)}", *([f"{short} stopped early"] if short else []), *unfinished]
    return f"{pct(mean, group.std(key))} ({', '.join(notes)})"


def number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return "—"
    return f"{value / base:.2f}×"


def mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f}"


# How a metric's value is printed (lra.metrics.Metric.format); None prints as "—".
FORMATS = {
    "percent": pct,
    "number": number,
    "mib": mib,
    "integer": lambda v: f"{v:.0f}",
    "count": lambda v: f"{v:,.0f}",
    "seconds": lambda v: f"{v:.0f}",
}


def formatted(metric: Metric, value: float | None) -> str:
    return "—" if value is None else FORMATS[metric.format](value)


# -- tables ------------------------------------------------------------------------------------------
def table_tasks(tasks: set[str]) -> list[str]:
    """The task columns: every LRA task and Path-X (run or not), then any other task run."""
    return list(TASK_COLUMNS) + sorted(tasks - set(TASK_COLUMNS))


def published_cells(row: PublishedRow, tasks: list[str]) -> list[str]:
    values = [f"{row.accuracy[t]:.2f}" if t in row.accuracy else "—" for t in tasks]
    return [f"{row.label} [published]", *values, f"{row.average:.2f}"]


def attention_order(runs: list[Run]) -> list[str]:
    """The attentions run (softmax first), in the order of the accuracy table's rows."""
    return list(
        dict.fromkeys(r.attention for r in sorted(runs, key=lambda r: (r.attention != BASELINE, r.attention)))
    )


def lra_table(runs: list[Run]) -> Table:
    """Our rows first, then the published rows of the attentions among ``runs`` (the others are in
    :func:`published_table`)."""
    known = [r for r in runs if r.task != "unknown"]
    groups = group_runs(known)
    tasks = table_tasks({task for task, _ in groups})
    blank = [""] * (len(tasks) + 1)
    table = Table(
        "lra-table",
        "LRA accuracy (test %, at the best-validation checkpoint)",
        [*text("Model"), *numbers(*(task_title(t) for t in tasks), "Avg")],
    )
    table.add(["Ours: mean ± std over completed seeds (n = completed seeds)", *blank], "section")
    partial_average = False
    for label in row_order([(g.attention, g.label) for g in groups.values()]):
        cells, means = [], []
        for task in tasks:
            group = groups.get((task, label))
            cells.append(accuracy_cell(group))
            mean = group.mean("test_acc") if group else None
            if task in LRA_TASKS and mean is not None:
                means.append(mean)
        lra_means_complete = len(means) == len(LRA_TASKS)
        partial_average |= bool(means) and not lra_means_complete
        average = pct(statistics.fmean(means)) + ("" if lra_means_complete else "*") if means else "—"
        own = [g for (_t, lab), g in groups.items() if lab == label]
        kinds = {g.kind for g in own}
        kind = "ours" if "ours" in kinds else (kinds.pop() if len(kinds) == 1 else "failed")
        table.add([label, *cells, average], kind)
    attentions = attention_order(known)
    matched = sorted(
        (r for r in PUBLISHED if r.attention in attentions), key=lambda r: attentions.index(r.attention)
    )
    if matched:
        title = "Published, for the attentions above (test %, from the papers; not run here)"
        table.add([title, *blank], "section")
        for row in matched:
            table.add(published_cells(row, tasks), "published")
    if partial_average:
        table.notes.append("* average over the LRA tasks this row was run on, not all five.")
    table.notes.append("Avg: over the five tasks the published averages cover (ListOps to Pathfinder).")
    if any(g.failed or g.interrupted for g in groups.values()):
        table.notes.append(
            "failed: runs that recorded a failure or left no results.json (crashed or still running); "
            "interrupted: stopped on request, to be resumed. Neither enters a mean; the run counts by "
            "state are at the top of the page."
        )
    if any(r.stopped_early for r in runs if r.ok):
        table.notes.append(
            "stopped early: a run that ended before its trainer.max_steps (e.g. at trainer.max_time); its "
            "test accuracy is from the best checkpoint of the steps it ran."
        )
    table.notes.append(
        "Published rows come from the papers' own tables (LRA, Nyströmformer, xformers, Skyformer) with "
        "the published settings; rows of ours trained with other settings (e.g. short CPU presets) are "
        "not comparable to them."
    )
    return table


def published_table(runs: list[Run]) -> Table:
    """The published rows of attentions not among ``runs``."""
    known = [r for r in runs if r.task != "unknown"]
    tasks = table_tasks({r.task for r in known})
    attentions = set(attention_order(known))
    table = Table(
        "published-table",
        "Other published results (test %, attentions not run here)",
        [*text("Model"), *numbers(*(task_title(t) for t in tasks), "Avg")],
    )
    for row in PUBLISHED:
        if row.attention not in attentions:
            table.add(published_cells(row, tasks), "published")
    return table


def baseline_for(group: Group, groups: dict[tuple[str, str], Group], keys: dict[str, list[str]]):
    """The softmax group of the same task and setting, if there is exactly one."""
    if group.attention == BASELINE:
        return group
    candidates = [
        g
        for (task, _), g in groups.items()
        if task == group.task and g.attention == BASELINE and g.runs and group.runs
    ]
    matching = [g for g in candidates if same_setting(group.runs[0], g.runs[0], keys.get(BASELINE, []))]
    return matching[0] if len(matching) == 1 else None


def speed_columns() -> list[Column]:
    columns = [*text("Task", "Model"), *numbers("n")]
    for m in metrics(SPEED):
        columns.append(Column(m.label))
        if m.higher_is_better is not None:
            columns.append(Column("× softmax"))
        if m.qualifier_label:
            columns += text(m.qualifier_label)
    return columns


def qualifiers(group: Group | None, metric: Metric) -> set[str]:
    """How the group's completed runs measured ``metric`` (e.g. {"rss"})."""
    if group is None or not metric.qualifier:
        return set()
    return {r.qualifier(metric.qualifier) for r in group.ok} - {None}


def baseline_mean(group: Group, base: Group | None, metric: Metric) -> float | None:
    """The softmax group's mean of ``metric``, where a ratio to it means something: measured the same
    way (one kind of measurement, the same in both groups)."""
    if base is None:
        return None
    if metric.qualifier:
        kinds = qualifiers(group, metric)
        if len(kinds) != 1 or kinds != qualifiers(base, metric):
            return None
    return base.mean(metric.field)


def speed_cells(group: Group, base: Group | None) -> list[str]:
    cells = []
    for m in metrics(SPEED):
        value = group.mean(m.field)
        cells.append(formatted(m, value))
        if m.higher_is_better is not None:
            cells.append(ratio(value, baseline_mean(group, base, m)))
        if m.qualifier_label:
            cells.append("/".join(sorted(qualifiers(group, m))) or "—")
    return cells


def speed_table(runs: list[Run], keys: dict[str, list[str]]) -> Table:
    groups = group_runs([r for r in runs if r.task != "unknown"])
    title = "Speed and memory (mean over completed seeds; ratios to softmax)"
    table = Table("speed-table", title, speed_columns())
    labels = row_order([(g.attention, g.label) for g in groups.values()])
    for task in task_order({t for t, _ in groups}):
        for label in labels:
            group = groups.get((task, label))
            if group is None:
                continue
            base = baseline_for(group, groups, keys)
            cells = [task_title(task), label, str(len(group.ok)), *speed_cells(group, base)]
            table.add(cells, group.kind)
    table.notes += [
        "Training speed excludes the first warm-up steps and all evaluation and checkpointing time; "
        "tokens are real (unpadded) tokens. Evaluation speed covers validation and test.",
        "Speed ratios > 1 are faster than softmax; memory ratios < 1 use less. A ratio needs a softmax "
        "run of the same task and setting (and, for memory, the same kind of measurement).",
        "rss = peak resident memory of the training process on CPU (includes the Python/PyTorch "
        "baseline of a few hundred MiB, so it separates attentions less than the GPU number); "
        "cuda_max_allocated = torch.cuda.max_memory_allocated.",
    ]
    return table


def _display_dir(run_dir: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return os.path.relpath(run_dir, root)
        except ValueError:
            pass
    return str(run_dir)


def data_cell(data) -> str:
    """Where a run's data came from: source kind, generator seed, content fingerprint."""
    if not isinstance(data, dict) or not data.get("source"):
        return "—"
    generator = data.get("generator")
    seed = (
        f" (seed {str(generator['seed'])[:20]})"
        if isinstance(generator, dict) and "seed" in generator
        else ""
    )
    fingerprint = f" · {str(data['fingerprint'])[:10]}" if data.get("fingerprint") else ""
    return f"{str(data['source'])[:40]}{seed}{fingerprint}"


def common_root(runs: list[Run]) -> Path | None:
    """The folder run directories are shown relative to."""
    if not runs:
        return None
    try:
        root = Path(os.path.commonpath([str(r.run_dir) for r in runs]))
    except ValueError:  # relative and absolute paths mixed
        return None
    return root.parent if len(runs) == 1 else root


def runs_columns() -> list[Column]:
    measured = [Column(m.label) for m in metrics(RUNS)]
    return [*text("Task", "Model"), *numbers("Seed"), *text("Status"), *measured,
            Column("Data", "long"), Column("Run directory", "long"), Column("Error", "long")]  # fmt: skip


def runs_table(runs: list[Run]) -> Table:
    table = Table("runs-table", "All runs", runs_columns())
    root = common_root(runs)
    by_task = defaultdict(list)
    for run in runs:
        by_task[run.task].append(run)
    for task in task_order(set(by_task)):
        for run in sorted(by_task[task], key=lambda r: (r.label, r.seed if r.seed is not None else -1)):
            cells = [
                task_title(task),
                run.label,
                "—" if run.seed is None else str(run.seed),
                STATE_LABELS[run.status],
                *(formatted(m, run.metric(m.field)) for m in metrics(RUNS)),
                data_cell(run.record.data if run.record is not None else None),
            ]
            _add_run(table, run, cells, root)
    note = (
        "Data: the source a run read (release, generate, local, hub), the generator's seed, and a hash "
        "of the tokenised splits (equal hashes = the same examples); — for runs recorded before."
    )
    return _with_notes(table, note, root)


def _add_run(table: Table, run: Run, cells: list[str], root: Path | None) -> None:
    """A row of ``cells`` followed by the run's directory and error, styled by the run's status."""
    row = [*cells, _display_dir(run.run_dir, root), (run.error or "")[:300]]
    table.add(row, "ours" if run.ok else run.status)


def _with_notes(table: Table, note: str, root: Path | None) -> Table:
    """``table`` with ``note``, and what its run directories are relative to."""
    table.notes.append(note)
    if root is not None:
        table.notes.append(f"Run directories relative to {root}.")
    return table


def evaluations_table(runs: list[Run]) -> Table:
    """Runs that tested a given checkpoint (``train=false``): what they measured, apart from the
    training runs (they trained nothing, so they are no seeds of any row)."""
    table = Table(
        "evaluations-table",
        "Checkpoint evaluations",
        [
            *text("Task", "Model", "Status"),
            *numbers("Test acc (%)"),
            Column("Checkpoint tested", "long"),
            Column("Run directory", "long"),
            Column("Error", "long"),
        ],
    )
    root = common_root(runs)
    for run in sorted(runs, key=lambda r: (task_order({r.task}), r.label, str(r.run_dir))):
        acc = run.metric("test_acc")
        cells = [
            task_title(run.task),
            run.label,
            STATE_LABELS[run.status],
            "—" if acc is None else pct(acc),
            run.checkpoint or "—",
        ]
        _add_run(table, run, cells, root)
    note = (
        "train=false runs: each tested the checkpoint named, and trained nothing; they are not part of "
        "the accuracy table's means."
    )
    return _with_notes(table, note, root)
