"""The ledger of runs: ``docs/runs.csv``, one committed row per finished run, and the results tables
of the README and ``docs/results.md`` rendered from it.

Numbers in those tables are never typed by hand: ``python -m lra.ledger add RUN_DIR ...`` appends
rows read from the runs' ``results.json``, ``python -m lra.ledger render`` rewrites every block
between ``<!-- ledger:NAME [column=value ...] -->`` and ``<!-- /ledger:NAME -->`` in the documents,
and a test fails when a committed block differs from what the ledger renders.

Rows whose ``source`` is ``log`` were transcribed from the dated log in ``docs/results.md`` for runs
whose run folders were not kept; every other row says which ``results.json`` it came from.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from lra.compare.published import PUBLISHED, TASK_TITLES
from lra.provenance import PROJECT_ROOT

LEDGER = PROJECT_ROOT / "docs" / "runs.csv"
DOCUMENTS = (PROJECT_ROOT / "README.md", PROJECT_ROOT / "docs" / "results.md")
COLUMNS = (
    "task", "attention", "settings", "pooling", "seed", "machine", "precision", "commit", "date",
    "steps", "best_val_acc", "best_step", "test_acc", "train_steps_per_s", "peak_memory_mib",
    "memory_kind", "wall_min", "source", "note",
)  # fmt: skip
# How a run was executed rather than what it computes: shown per run, never a different setting.
EXECUTION = (
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_nodes",
    "trainer.precision",
)
# Filters are column=value; an empty value selects rows where the column is empty (settings=: defaults).
BLOCK = re.compile(r"(<!-- ledger:(\w+)((?: [\w.]+=[^\s>]*)*) -->\n)(.*?)(<!-- /ledger:\2 -->)", re.S)


class LedgerError(ValueError):
    pass


def read(path: Path = LEDGER) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for line, row in enumerate(rows, start=2):
        if list(row) != list(COLUMNS) or None in row.values():
            raise LedgerError(f"{path}:{line}: expected the columns {','.join(COLUMNS)}")
    return rows


def write(rows: list[dict[str, str]], path: Path = LEDGER) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")


# -- rows from runs --------------------------------------------------------------------------------
def default_config(task: str, attention: str) -> dict:
    """The config ``python run.py task=TASK attention=ATTENTION`` composes today, resolved."""
    from omegaconf import OmegaConf

    from lra.registry import compose

    cfg = compose([f"task={task}", f"attention={attention}"])
    return OmegaConf.to_container(cfg, resolve=False)


def settings(config: dict, default: dict) -> str:
    """The run's settings that differ from today's defaults for its task and attention, as overrides."""
    from lra.compare.variants import relevant

    ran, now = relevant(config), relevant(default)
    skip = (*EXECUTION, "model.pooling")
    keys = sorted(k for k in set(ran) | set(now) if k not in skip and ran.get(k) != now.get(k))
    keys = [k for k in keys if k in ran and "${" not in now.get(k, "")]  # interpolations resolve per run
    return " ".join(f"{k}={_plain(ran[k])}" for k in keys)


def _plain(encoded: str) -> str:
    value = json.loads(encoded)
    return value if isinstance(value, str) else json.dumps(value)


def row_of(run_dir: Path, machine: str | None = None, note: str = "") -> dict[str, str]:
    """A ledger row from a finished run's results.json (the last piece of a resumed run)."""
    from lra.compare.collect import read_run

    run = read_run(run_dir)
    record = run.record
    if record is None or not run.ok or run.evaluation:
        raise LedgerError(
            f"{run_dir}: not a completed training run ({run.error or run.status}); nothing added"
        )
    machine = machine or record.machine
    if not machine:
        raise LedgerError(f"{run_dir}/results.json names no machine; give it with --machine")
    m = record.metrics
    config = run.config
    trainer = config.get("trainer", {})
    peak = m.get("peak_memory_bytes")
    return {
        "task": run.task,
        "attention": run.attention,
        "settings": settings(config, default_config(run.task, run.attention)),
        "pooling": str(config.get("model", {}).get("pooling", "")),
        "seed": str(run.seed),
        "machine": machine,
        "precision": str(trainer.get("precision", "32-true")),
        "commit": (record.git_commit or "")[:7]
        + ("-dirty" if (record.git_commit or "").endswith("-dirty") else ""),
        "date": (record.started_at or "")[:10],
        "steps": str(m.get("global_step") or ""),
        "best_val_acc": _pct(m.get("best_val_acc")),
        "best_step": str(record.best_step if record.best_step is not None else ""),
        "test_acc": _pct(m.get("test_acc")),
        "train_steps_per_s": f"{m['train_steps_per_s']:.2f}" if m.get("train_steps_per_s") else "",
        "peak_memory_mib": f"{peak / 2**20:.0f}" if peak else "",
        "memory_kind": str(m.get("peak_memory_kind") or ""),
        "wall_min": f"{m['wall_time_s'] / 60:.0f}" if m.get("wall_time_s") else "",
        "source": f"results.json of {Path(record.run_dir or run_dir).name}",
        "note": note,
    }


def _pct(value) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else ""


# -- tables ----------------------------------------------------------------------------------------
def _select(rows: list[dict[str, str]], where: dict[str, str]) -> list[dict[str, str]]:
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _published(task: str, attention: str) -> str:
    shown = [
        f"{p.accuracy[task]:.2f} ({p.source.split()[0].rstrip(',')})"
        for p in PUBLISHED
        if p.attention == attention and task in p.accuracy
    ]
    return ", ".join(shown) or "–"


def _setting(row: dict[str, str]) -> str:
    parts = [f"model.pooling={row['pooling']}"] if row["pooling"] != "mean" else []
    return " ".join(parts + ([row["settings"]] if row["settings"] else [])) or "defaults"


def summary(rows: list[dict[str, str]]) -> str:
    """Task × attention × setting: test accuracy's mean ± std over runs, the runs, the published rows."""
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["test_acc"]:
            groups[(row["task"], row["attention"], _setting(row))].append(row)
    lines = [
        "| task | attention | setting | test % (mean ± std) | runs | published |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (task, attention, setting), group in groups.items():
        seeds = sorted({r["seed"] for r in group}, key=int)
        seeds = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"
        machines = ", ".join(sorted({r["machine"] for r in group}))
        test = _mean_std([float(r["test_acc"]) for r in group])
        shown = f"`{setting}`" if setting != "defaults" else setting
        lines.append(
            f"| {TASK_TITLES.get(task, task)} | {attention} | {shown} | {test} | {len(group)}: {seeds}; "
            f"{machines} | {_published(task, attention)} |"
        )
    return "\n".join(lines) + "\n"


def runs(rows: list[dict[str, str]]) -> str:
    """One line per run, as the ledger holds it."""
    lines = [
        "| attention | setting | seed | machine | test % | best val % (step) | steps | steps/s | wall | "
        "peak memory | commit | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        memory = f"{r['peak_memory_mib']} MiB ({r['memory_kind']})" if r["peak_memory_mib"] else "–"
        wall = f"{r['wall_min']} min" if r["wall_min"] else "–"
        precision = "" if r["precision"] in ("32-true", "32") else f", {r['precision']}"
        lines.append(
            f"| {r['attention']} | `{_setting(r)}` | {r['seed']} | {r['machine']}{precision} | {r['test_acc']} | "
            f"{r['best_val_acc']} ({r['best_step']}) | {r['steps']} | {r['train_steps_per_s'] or '–'} | {wall} | "
            f"{memory} | {r['commit'] or '–'} | {r['note']} |"
        )
    return "\n".join(lines) + "\n"


TABLES = {"summary": summary, "runs": runs}


def render_text(text: str, rows: list[dict[str, str]], where: str = "document") -> str:
    def one(match: re.Match) -> str:
        opening, name, filters, _old, closing = match.groups()
        if name not in TABLES:
            raise LedgerError(f"{where}: unknown ledger table {name!r}; one of {sorted(TABLES)}")
        selected = dict(f.split("=", 1) for f in filters.split())
        unknown = set(selected) - set(COLUMNS)
        if unknown:
            raise LedgerError(f"{where}: ledger:{name} filters on {sorted(unknown)}, not ledger columns")
        return opening + TABLES[name](_select(rows, selected)) + closing

    return BLOCK.sub(one, text)


def render(documents: Iterable[Path] = DOCUMENTS, ledger: Path = LEDGER, check: bool = False) -> list[Path]:
    """Rewrite the ledger blocks of ``documents``; returns those that were (or, with ``check``, would
    be) changed."""
    rows = read(ledger)
    stale = []
    for path in documents:
        text = path.read_text(encoding="utf-8")
        new = render_text(text, rows, str(path))
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lra.ledger", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="append finished runs to docs/runs.csv, then render")
    add.add_argument("run_dirs", nargs="+", type=Path)
    add.add_argument("--machine", help="what ran them, where results.json does not say")
    add.add_argument("--note", default="")
    add.add_argument("--ledger", type=Path, default=LEDGER)
    show = sub.add_parser("render", help="rewrite the ledger tables of README.md and docs/results.md")
    show.add_argument("--check", action="store_true", help="only report stale tables (exit 1 if any)")
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            rows = read(args.ledger)
            new = [row_of(d, args.machine, args.note) for d in args.run_dirs]
            known = {(r["source"], r["task"]) for r in rows}
            added = [r for r in new if (r["source"], r["task"]) not in known]
            write(rows + added, args.ledger)
            print(f"{len(added)} run(s) added to {args.ledger} ({len(new) - len(added)} already there)")
            if args.ledger != LEDGER:
                return 0
        stale = render(check=args.command == "render" and args.check)
    except (LedgerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "stale" if args.command == "render" and args.check else "rendered"
    print(f"{verb}: {', '.join(str(p.relative_to(PROJECT_ROOT)) for p in stale) or 'nothing'}")
    return 1 if stale and args.command == "render" and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
