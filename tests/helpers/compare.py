"""Hand-made run directories (one run, or a whole showcase sweep of five tasks and attentions) and
readers of the dashboard's tables and plots, for the dashboard's tests."""

from __future__ import annotations

import json
import random
import re
from html.parser import HTMLParser
from pathlib import Path

from lra import results
from lra.results import RunRecord


def config(task: str, attention: str, seed: int, dim: int = 64) -> dict:
    return {
        "seed": seed,
        "data_dir": f"/data/{seed}",
        "task": {"name": task},
        "attention": {"name": attention, "num_landmarks": 64}
        if attention != "softmax"
        else {"name": attention},
        "model": {"dim": dim, "vocab_size": 16 if task == "listops" else 256},
        "trainer": {"max_steps": 100},
        "data": {"seed": seed, "path": f"/data/{task}"},
        "logger": {"wandb": {"name": f"{task}/{attention}/{seed}"}},
    }


def write_run(
    root: Path, task: str, attention: str, seed: int, test_acc: float, speed: float = 10.0, **kw
) -> Path:
    run_dir = root / f"{task}_{attention}_{seed}_{kw.get('dim', 64)}"
    run_dir.mkdir(parents=True)
    record = RunRecord(
        status=kw.get("status", "completed"),
        error=kw.get("error"),
        task=task,
        attention=attention,
        seed=seed,
        config=config(task, attention, seed, kw.get("dim", 64)),
        best_checkpoint=str(run_dir / "checkpoints" / "best.ckpt"),
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:00:12+00:00",
        run_dir=str(run_dir),
        data=kw.get("data"),
    )
    record.take(
        {
            "best_val_acc": test_acc + 0.01,
            "test_acc": test_acc,
            "global_step": 100,
            "train_steps_per_s": speed,
            "train_tokens_per_s": speed * kw.get("length", 1000),
            "eval_tokens_per_s": speed * 3000,
            "peak_memory_bytes": kw.get("memory", 2**30),
            "peak_memory_kind": "cuda_max_allocated",
            "params_total": 1000,
            "wall_time_s": 12.0,
        }
    )
    results.write(run_dir, record)
    csv_dir = run_dir / "csv" / "version_0"
    csv_dir.mkdir(parents=True)
    (csv_dir / "metrics.csv").write_text(
        kw.get("csv")
        or f"epoch,step,train/loss,val/acc\n0,9,2.3,\n0,49,,0.2\n0,59,2.0,\n0,99,,{test_acc + 0.01:.2f}\n"
    )
    return run_dir


def crashed_run(run_dir: Path, task: str, attention: str, seed: int) -> Path:
    """A run killed before it wrote results.json (or one still running): Hydra's config only."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        json.dumps(config(task, attention, seed))
    )  # (JSON is YAML)
    return run_dir


# A hand-written sweep for looking at the dashboard (docs/img/dashboard.png): five tasks, five
# attentions, three seeds, and one run in each state that has no result. The numbers are made up to
# look like LRA runs; they are no measurement.
SHOWCASE_TASKS = {  # task -> (softmax test accuracy, its training steps/s, its peak memory in GiB, length)
    "listops": (0.372, 6.0, 3.1, 2000),
    "text": (0.641, 3.4, 5.6, 4000),
    "retrieval": (0.785, 2.9, 6.2, 8000),
    "image": (0.402, 9.1, 1.7, 1024),
    "pathfinder": (0.712, 9.6, 1.6, 1024),
}
SHOWCASE_ATTENTIONS = {  # attention -> (accuracy difference, speed factor, memory factor)
    "softmax": (0.0, 1.0, 1.0),
    "nystrom": (0.004, 2.1, 0.36),
    "linformer": (-0.035, 2.7, 0.31),
    "performer": (-0.022, 1.8, 0.42),
    "spectral_shift": (0.009, 1.7, 0.39),
}


def showcase_runs(root: Path) -> Path:
    for task, (acc, speed, gib, length) in SHOWCASE_TASKS.items():
        for attention, (d_acc, f_speed, f_mem) in SHOWCASE_ATTENTIONS.items():
            for seed in range(3):
                wobble = random.Random(f"{task} {attention} {seed}").uniform(-1, 1)  # the same every time
                final = acc + d_acc + 0.012 * wobble
                steps = [100 * (i + 1) for i in range(10)]
                rows = [
                    f"0,{s - 50},{2.3 - (2.3 - 2.3 * (1 - final)) * (i / 9) ** 0.5 + 0.03 * wobble:.4f},\n"
                    f"0,{s},,{0.1 + (final - 0.1) * (1 - 0.8 ** (i + 1)) / (1 - 0.8**10):.4f}\n"
                    for i, s in enumerate(steps)
                ]
                write_run(
                    root, task, attention, seed, round(final, 4), speed=speed * f_speed * (1 + 0.03 * wobble),
                    memory=int(gib * f_mem * 2**30 * (1 + 0.01 * wobble)), length=length,
                    csv="epoch,step,train/loss,val/acc\n" + "".join(rows),
                )  # fmt: skip
    write_run(root, "listops", "performer", 3, 0.2, status="interrupted", error="KeyboardInterrupt: Ctrl-C")
    write_run(
        root, "text", "linformer", 3, 0.1, status="failed", error="NonFiniteLossError: loss nan at step 412"
    )
    crashed_run(root / "pathfinder_nystrom_3", "pathfinder", "nystrom", 3)
    return root


class Tables(HTMLParser):
    """Rows of every <table id=...> in a page, as lists of cell texts, plus their row classes."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = (attrs.get("class") or "", [])
            self.tables[self._table].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row[1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_tables(html: str) -> dict[str, list[tuple[str, list[str]]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def row(table, first_cell: str, column: int | None = None):
    matches = [cells for _, cells in table if cells and cells[column or 0] == first_cell]
    assert matches, f"no row {first_cell!r} in {[c[:2] for _, c in table]}"
    return matches


def plotly_figures(html: str) -> list[dict]:
    """Every plot of a page as ``{"data": [...], "layout": {...}}``, read from its Plotly.newPlot call
    (after <body>: plotly.js itself, in the head, is no figure)."""
    body = html[html.index("<body>") :]
    decoder = json.JSONDecoder()
    figures = []
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', body):
        data, end = decoder.raw_decode(body, match.end())
        layout, _ = decoder.raw_decode(body, end + re.match(r"\s*,\s*", body[end:]).end())
        figures.append({"data": data, "layout": layout})
    return figures
