"""Build the dashboard: collect runs, make the tables and plots, write index.html and results.md."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lra.compare import plots
from lra.compare.bench import load_bench
from lra.compare.collect import STATE_LABELS, collect, state_counts
from lra.compare.page import build_page
from lra.compare.render import md_text, table_markdown
from lra.compare.tables import (
    evaluations_table,
    lra_table,
    published_table,
    runs_table,
    speed_table,
)
from lra.compare.variants import assign_variants

TITLE = "Long Range Arena: attention comparison"


@dataclass
class Report:
    html: Path
    markdown: Path
    runs: int
    completed: int
    failed: int  # recorded a failure, or an unreadable results.json
    interrupted: int = 0  # stopped on request (status: interrupted)
    crashed: int = 0  # no results.json: crashed or still running

    def summary(self) -> str:
        """``N runs (A completed, B interrupted, C failed, D crashed or still running)``."""
        counts = {"completed": self.completed, "interrupted": self.interrupted, "failed": self.failed,
                  "crashed": self.crashed}  # fmt: skip
        return f"{self.runs} runs ({', '.join(f'{n} {STATE_LABELS[s]}' for s, n in counts.items())})"


def build(paths: list[Path], out: Path, bench: list[Path] | None = None) -> Report:
    runs = collect([Path(p) for p in paths])
    # Evaluations (train=false runs) trained nothing: listed apart, never averaged with training runs.
    trained = [r for r in runs if not r.evaluation]
    evaluated = [r for r in runs if r.evaluation]
    keys = assign_variants(trained)
    counts = {"runs": len(runs), **state_counts(runs)}
    lra, speed, all_runs = lra_table(trained), speed_table(trained, keys), runs_table(trained)
    published = published_table(trained)
    evaluations = evaluations_table(evaluated) if evaluated else None
    bench_results = [load_bench(Path(p)) for p in bench or []]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"Generated {now} from {', '.join(str(p) for p in paths)}"

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    html = build_page(
        title=TITLE,
        meta=meta,
        counts=counts,
        lra=lra,
        speed=speed,
        runs=all_runs,
        evaluations=evaluations,
        published=published,
        tradeoffs=plots.tradeoff_figures(trained),
        ratio_plot=plots.ratio_figure(trained, keys),
        curves=plots.curve_figures(trained),
        bench=bench_results,
    )
    (out / "index.html").write_text(html, encoding="utf-8")
    report = Report(
        out / "index.html",
        out / "results.md",
        len(runs),
        counts["completed"],
        counts["failed"],
        counts["interrupted"],
        counts["crashed"],
    )
    header = md_text(f"{meta}. {report.summary()}. Training curves and plots: index.html.")
    tables = [lra, speed, all_runs, evaluations, published]
    (out / "results.md").write_text(results_markdown(header, tables, bench_results), encoding="utf-8")
    return report


def results_markdown(header: str, tables: list, bench_results: list) -> str:
    """results.md: the header line, then the LRA, speed and runs tables, evaluations (or None) and
    the published rows of attentions not run here (last and folded: GitHub renders <details>)."""
    lra, speed, all_runs, evaluations, published = tables
    bench_md = [
        "- " + md_text(f"{b.title}: {b.path}" + (f" ({b.note})" if b.note else "")) for b in bench_results
    ]
    other_published = (
        ["<details><summary>Other published results (attentions not run here)</summary>", "",
         table_markdown(published), "</details>", ""]
        if published.rows
        else []
    )  # fmt: skip
    return "\n".join(
        [
            f"# {TITLE}",
            "",
            header,
            "",
            table_markdown(lra),
            table_markdown(speed),
            *(["### Attention benchmarks", "", *bench_md, ""] if bench_md else []),
            table_markdown(all_runs),
            *([table_markdown(evaluations)] if evaluations is not None else []),
            *other_published,
        ]
    )
