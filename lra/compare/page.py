"""The self-contained ``index.html``: inline CSS, plotly.js inline once, PNGs as data URIs."""

from __future__ import annotations

from html import escape

from lra.compare import plots
from lra.compare.bench import BenchResult
from lra.compare.published import task_title
from lra.compare.render import table_html
from lra.compare.tables import Table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1320px;
       padding: 0 16px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #666; font-size: 13px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; }
td.text, th.text, td.long, th.long { text-align: left; }
td.long { white-space: normal; max-width: 480px; }
tr.section td { background: #eef3fb; font-weight: 600; text-align: left; }
tr.published td { color: #555; font-style: italic; background: #fafafa; }
tr.failed td { background: #fdecea; color: #8a1c12; }
.note { color: #555; font-size: 12px; margin: 2px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
.bench img { max-width: 100%; border: 1px solid #eee; }
.counts span { margin-right: 14px; }
.failed-count { color: #8a1c12; font-weight: 600; }
"""


def _section(title: str, body: str, section_id: str) -> str:
    return f'<section id="{section_id}"><h2>{escape(title)}</h2>{body}</section>'


def _bench_html(results: list[BenchResult]) -> str:
    if not results:
        return '<p class="note">No benchmark JSON given (pass --bench outputs/bench/*/*.json).</p>'
    parts = []
    for result in results:
        facts = ", ".join(f"{k}: {v}" for k, v in result.facts.items() if k not in ("benchmark",))
        block = [f"<h3>{escape(result.title)}</h3>", f'<p class="note">{escape(str(result.path))}</p>']
        if facts:
            block.append(f'<p class="note">{escape(facts)}</p>')
        if result.png_base64:
            block.append(
                f'<img alt="{escape(result.title)}" src="data:image/png;base64,{result.png_base64}">'
            )
        if result.figures:
            block.append('<div class="grid">' + "".join(result.figures) + "</div>")
        if result.note:
            block.append(f'<p class="note">{escape(result.note)}</p>')
        parts.append('<div class="bench">' + "".join(block) + "</div>")
    return "".join(parts)


def build_page(
    *,
    title: str,
    meta: str,
    counts: dict[str, int],
    lra: Table,
    speed: Table,
    runs: Table,
    ratio_plot: str | None,
    evaluations: Table | None = None,
    curves: dict[str, list[tuple[str, str]]],
    bench: list[BenchResult],
) -> str:
    no_plotly = (
        ""
        if plots.available()
        else '<p class="note">Plots need plotly (pip install plotly); the tables are complete.</p>'
    )
    failed = counts.get("failed", 0)
    count_html = (
        f'<p class="counts"><span>{counts.get("runs", 0)} runs</span>'
        f"<span>{counts.get('completed', 0)} completed</span>"
        f'<span class="{"failed-count" if failed else ""}">{failed} failed</span></p>'
    )
    curve_html = (
        "".join(
            f'<h3>{escape(task_title(task))}</h3><div class="grid">{"".join(html for _, html in figs)}</div>'
            for task, figs in curves.items()
        )
        or '<p class="note">No CSV curves found (runs need logger=csv or the default loggers).</p>'
    )
    body = "".join(
        [
            f"<h1>{escape(title)}</h1>",
            f'<p class="meta">{escape(meta)}</p>',
            count_html,
            no_plotly,
            _section("LRA accuracy", table_html(lra), "accuracy"),
            _section("Speed and memory", table_html(speed) + (ratio_plot or ""), "speed"),
            _section("Training curves", curve_html, "curves"),
            _section("Attention benchmarks", _bench_html(bench), "bench"),
            _section("Runs", table_html(runs), "runs"),
            _section("Checkpoint evaluations", table_html(evaluations), "evaluations") if evaluations else "",
        ]
    )
    script = f'<script type="text/javascript">{plots.plotly_js()}</script>' if plots.available() else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style>{script}</head>"
        f"<body>{body}</body></html>\n"
    )
