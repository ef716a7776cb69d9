"""The self-contained ``index.html``: inline CSS, plotly.js inline once, PNGs as data URIs."""

from __future__ import annotations

from html import escape

from lra.compare import plots
from lra.compare.bench import BenchResult
from lra.compare.collect import STATE_LABELS, STATES
from lra.compare.published import task_title
from lra.compare.render import table_html
from lra.compare.tables import Table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1320px;
       padding: 0 16px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #666; font-size: 13px; overflow-wrap: anywhere; }
/* Every table fits the page: headers and text wrap, long text (paths, errors) wraps anywhere, and
   a number with a remark wraps before the remark; the scrollbar is a last resort. */
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #ddd; padding: 4px 6px; text-align: right; }
th { background: #f4f4f4; white-space: normal; vertical-align: bottom; }
td { white-space: nowrap; }
td .v { white-space: nowrap; } td .r { white-space: normal; color: #555; font-size: 12px; }
td:has(.r) { white-space: normal; }
td.text, th.text, td.long, th.long { text-align: left; }
td.text { white-space: normal; overflow-wrap: break-word; max-width: 260px; }
td.long { white-space: normal; overflow-wrap: anywhere; max-width: 320px; min-width: 150px; }
th.nw { white-space: nowrap; }
tr.section td { background: #eef3fb; font-weight: 600; text-align: left; white-space: normal; }
tr.published td { color: #555; font-style: italic; background: #fafafa; }
tr.failed td { background: #fdecea; color: #8a1c12; }
tr.crashed td { background: #f1f1f1; color: #555; }
tr.interrupted td { background: #fff6e0; color: #7a5200; }
.note { color: #555; font-size: 12px; margin: 2px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
.bench img { max-width: 100%; border: 1px solid #eee; }
.counts { font-size: 15px; }
.counts span { margin-right: 14px; white-space: nowrap; }
.state { padding: 1px 8px; border-radius: 10px; }
.state-completed { background: #e6f4ea; color: #1e5e2f; }
.state-interrupted { background: #fff6e0; color: #7a5200; }
.state-failed { background: #fdecea; color: #8a1c12; font-weight: 600; }
.state-crashed { background: #f1f1f1; color: #555; }
.state-none { opacity: 0.55; font-weight: normal; }
details { margin: 12px 0; } summary { cursor: pointer; color: #245; font-weight: 600; }
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


def counts_html(counts: dict[str, int]) -> str:
    """``N runs`` and a labelled count per state, each state in its own colour (greyed out at 0)."""
    spans = [f'<span id="count-runs">{counts.get("runs", 0)} runs:</span>']
    for state in STATES:
        n = counts.get(state, 0)
        extra = "" if n else " state-none"
        spans.append(
            f'<span id="count-{state}" class="state state-{state}{extra}">{n} {escape(STATE_LABELS[state])}</span>'
        )
    return f'<p class="counts">{"".join(spans)}</p>'


def _tradeoff_html(tradeoffs: dict[str, str]) -> str:
    if not tradeoffs:
        return '<p class="note">No completed run with a test accuracy and a speed or memory measurement.</p>'
    note = (
        '<p class="note">One point per attention (variant) at the mean of its completed seeds; error bars: '
        "± one standard deviation over the seeds (none with one seed). Speed excludes warm-up, evaluation "
        "and checkpointing; memory is the peak of the training process (kinds in the speed table).</p>"
    )
    return note + "".join(tradeoffs.values())


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
    published: Table | None = None,
    tradeoffs: dict[str, str] | None = None,
    curves: dict[str, list[tuple[str, str]]],
    bench: list[BenchResult],
) -> str:
    no_plotly = (
        ""
        if plots.available()
        else '<p class="note">Plots need plotly (pip install plotly); the tables are complete.</p>'
    )
    other_published = (
        f"<details><summary>{escape(published.title)}: {len(published.rows)} rows</summary>"
        f"{table_html(published)}</details>"
        if published is not None and published.rows
        else ""
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
            counts_html(counts),
            no_plotly,
            _section("LRA accuracy", table_html(lra) + other_published, "accuracy"),
            _section("Accuracy against speed and memory", _tradeoff_html(tradeoffs or {}), "tradeoff")
            if plots.available()
            else "",
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
