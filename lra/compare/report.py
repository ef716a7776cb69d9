"""Build the dashboard: collect runs, make the tables and plots, write index.html and results.md."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lra.compare import plots
from lra.compare.bench import load_bench
from lra.compare.collect import collect
from lra.compare.page import build_page
from lra.compare.render import table_markdown
from lra.compare.tables import lra_table, runs_table, speed_table
from lra.compare.variants import assign_variants

TITLE = "Long Range Arena: attention comparison"


@dataclass
class Report:
    html: Path
    markdown: Path
    runs: int
    completed: int
    failed: int


def build(paths: list[Path], out: Path, bench: list[Path] | None = None) -> Report:
    runs = collect([Path(p) for p in paths])
    keys = assign_variants(runs)
    completed = sum(r.ok for r in runs)
    counts = {"runs": len(runs), "completed": completed, "failed": len(runs) - completed}
    lra, speed, all_runs = lra_table(runs), speed_table(runs, keys), runs_table(runs)
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
        ratio_plot=plots.ratio_figure(runs, keys),
        curves=plots.curve_figures(runs),
        bench=bench_results,
    )
    (out / "index.html").write_text(html, encoding="utf-8")

    bench_md = [f"- {b.title}: `{b.path}`" + (f" ({b.note})" if b.note else "") for b in bench_results]
    markdown = "\n".join(
        [
            f"# {TITLE}",
            "",
            f"{meta}. {counts['runs']} runs: {completed} completed, {counts['failed']} failed. "
            "Training curves and plots: index.html.",
            "",
            table_markdown(lra),
            table_markdown(speed),
            *(["### Attention benchmarks", "", *bench_md, ""] if bench_md else []),
            table_markdown(all_runs),
        ]
    )
    (out / "results.md").write_text(markdown, encoding="utf-8")
    return Report(out / "index.html", out / "results.md", len(runs), completed, counts["failed"])
