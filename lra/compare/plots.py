"""Interactive plots (plotly) as HTML fragments; the page embeds plotly.js once, inline.

Every function returns ``None`` when there is nothing to draw, so the page can say so instead.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape

from lra.compare.collect import Run, read_curves
from lra.compare.published import task_title
from lra.compare.tables import (
    BASELINE,
    Group,
    baseline_for,
    baseline_mean,
    group_runs,
    row_order,
    task_order,
)
from lra.metrics import metrics

try:
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.offline import get_plotlyjs
except ImportError:  # the tables and results.md still work; the page says how to get plots
    go = None

PLOT_CONFIG = {"displaylogo": False}


def available() -> bool:
    return go is not None


def plotly_js() -> str:
    return get_plotlyjs() if go is not None else ""


PLOT_WIDTH = 640  # two plots side by side on the page


def _t(value) -> str:
    """Text from a run or a benchmark file as plotly shows it: plotly reads titles, legend names and
    hover text as a subset of HTML (links included), so tags are escaped to show as typed."""
    return escape(str(value), quote=False)


def _html(fig, width: int = PLOT_WIDTH) -> str:
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50})
    if fig.layout.height is None:
        fig.update_layout(height=380)
    # Fixed pixel sizes: plots sized from their container can overflow it when the browser lays
    # the page out after plotly drew them.
    fig.update_layout(width=width, autosize=False)
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        config=PLOT_CONFIG,
        default_width=f"{width}px",
        default_height=f"{fig.layout.height}px",
    )


def colours(labels: list[str]) -> dict[str, str]:
    palette = qualitative.D3 + qualitative.Set2
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def dashes(labels: list[str]) -> dict[str, str]:
    """A dash pattern per label too: identical curves (e.g. an approximation that reduces to another
    one) would otherwise hide each other."""
    patterns = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
    return {label: patterns[i % len(patterns)] for i, label in enumerate(labels)}


def curve_figures(runs: list[Run]) -> dict[str, list[tuple[str, str]]]:
    """task -> [(title, html)]: validation accuracy and training loss against the step, per run."""
    if go is None:
        return {}
    labels = row_order([(r.attention, r.label) for r in runs])
    colour, dash = colours(labels), dashes(labels)
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.task].append(run)
    out: dict[str, list[tuple[str, str]]] = {}
    for task in task_order(set(by_task)):
        curves = {id(r): read_curves(r.run_dir) for r in by_task[task]}
        figures = []
        for key, title, scale in (
            ("val/acc", "validation accuracy (%)", 100.0),
            ("train/loss", "train loss", 1),
        ):
            fig = go.Figure()
            shown: set[str] = set()
            for run in sorted(by_task[task], key=lambda r: (labels.index(r.label), r.seed or 0)):
                points = curves[id(run)][key]
                if not points:
                    continue
                steps, values = zip(*points, strict=True)
                fig.add_trace(
                    go.Scatter(
                        x=steps,
                        y=[v * scale for v in values],
                        mode="lines+markers" if key == "val/acc" else "lines",
                        name=_t(run.label),
                        legendgroup=_t(run.label),
                        showlegend=run.label not in shown,
                        line={"color": colour[run.label], "dash": dash[run.label], "width": 1.5},
                        marker={"size": 5},
                        hovertemplate=f"{_t(run.label)} seed {run.seed}<br>step %{{x}}<br>%{{y:.3f}}<extra></extra>",
                    )
                )
                shown.add(run.label)
            if fig.data:
                fig.update_layout(
                    title=f"{_t(task_title(task))}: {title}", xaxis_title="step", yaxis_title=title
                )
                # Labels can be long ("softmax [dim=128]"): the legend goes below, not beside.
                fig.update_layout(legend={"orientation": "h", "y": -0.22}, height=440)
                figures.append((f"{task} {key}", _html(fig)))
        delta = delta_figure(by_task[task], labels, colour)
        if delta is not None:
            figures.append((f"{task} delta", delta))
        if figures:
            out[task] = figures
    return out


def delta_figure(runs: list[Run], labels: list[str], colour: dict[str, str]) -> str | None:
    """Spectral shift's δ of every layer and head against the step (``attention/<layer>/delta_h<i>``,
    logged by the attention-diagnostics callback); None when no run logged one."""
    fig = go.Figure()
    patterns = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
    for run in sorted(runs, key=lambda r: (labels.index(r.label), r.seed or 0)):
        curves = read_curves(run.run_dir, ("attention/*/delta_h*",))
        for i, key in enumerate(sorted(k for k, points in curves.items() if points)):
            steps, values = zip(*curves[key], strict=True)
            layer_head = key.removeprefix("attention/").replace("/delta_", " ")
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=values,
                    mode="lines",
                    name=_t(f"{run.label} seed {run.seed} {layer_head}"),
                    line={"color": colour[run.label], "dash": patterns[i % len(patterns)], "width": 1.2},
                )
            )
    if not fig.data:
        return None
    title = f"{_t(task_title(runs[0].task))}: spectral shift δ per layer and head"
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="δ", yaxis_type="log")
    fig.update_layout(legend={"orientation": "h", "y": -0.22}, height=440)
    return _html(fig)


def ratio_figure(runs: list[Run], keys: dict[str, list[str]]) -> str | None:
    """Bars: each attention's plotted metrics (``lra.metrics``) relative to softmax, per task."""
    if go is None:
        return None
    groups = group_runs([r for r in runs if r.ok and r.task != "unknown"])
    measures = [m for m in metrics() if m.plotted]
    x, ys = [], {_unitless(m.label): [] for m in measures}
    labels = row_order([(g.attention, g.label) for g in groups.values()])
    for task in task_order({t for t, _ in groups}):
        for label in labels:
            group: Group | None = groups.get((task, label))
            if group is None or group.attention == BASELINE:
                continue
            base = baseline_for(group, groups, keys)
            if base is None:
                continue
            x.append(f"{_t(task_title(task))}<br>{_t(label)}")
            for m in measures:
                value, ref = group.mean(m.field), baseline_mean(group, base, m)
                ys[_unitless(m.label)].append(value / ref if value is not None and ref else None)
    if not x:
        return None
    fig = go.Figure([go.Bar(name=name, x=x, y=values) for name, values in ys.items()])
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey", annotation_text="softmax")
    fig.update_layout(
        barmode="group", title="Relative to softmax (same task and setting)", yaxis_title="ratio"
    )
    return _html(fig, width=2 * PLOT_WIDTH)


def _unitless(label: str) -> str:
    """A ratio has no unit: "peak memory (MiB)" -> "peak memory"."""
    return label.split(" (")[0]


def bench_figures(rows: list[dict], x_key: str, series_keys: list[str], y_keys: list[str], title: str):
    """Generic line plots of a benchmark's rows: one figure per measured quantity."""
    if go is None:
        return []
    figures = []
    for y_key in y_keys:
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for row in rows:
            x, y = row.get(x_key), row.get(y_key)
            if isinstance(x, int | float) and isinstance(y, int | float) and not isinstance(y, bool):
                name = _t(" / ".join(str(row.get(k)) for k in series_keys) or y_key)
                series[name].append((x, y))
        if not series:
            continue
        fig = go.Figure()
        for name, points in series.items():
            xs, ys = zip(*sorted(points), strict=True)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name))
        positive = all(y > 0 for pts in series.values() for _, y in pts)
        fig.update_layout(title=_t(f"{title}: {y_key}"), xaxis_title=_t(x_key), yaxis_title=_t(y_key))
        if positive:
            fig.update_yaxes(type="log")
        figures.append(_html(fig))
    return figures
