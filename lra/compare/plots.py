"""Interactive plots (plotly) as HTML fragments; the page embeds plotly.js once, inline.

Every function returns ``None`` when there is nothing to draw, so the page can say so instead.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from html import escape

from lra.compare.collect import STATE_LABELS, Run, read_curves
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
    from plotly.offline import get_plotlyjs
    from plotly.subplots import make_subplots
except ImportError:  # the tables and results.md still work; the page says how to get plots
    go = None

PLOT_CONFIG = {"displaylogo": False}


def available() -> bool:
    return go is not None


def plotly_js() -> str:
    return get_plotlyjs() if go is not None else ""


# Two plots side by side, and a wide one, fit a 1,280 px window (the page's content is 1,248 px wide
# there, less a scrollbar).
PLOT_WIDTH = 600
WIDE_WIDTH = 2 * PLOT_WIDTH + 8  # two plots and the grid's gap


def _t(value) -> str:
    """Text from a run or a benchmark file as plotly shows it: plotly reads titles, legend names and
    hover text as a subset of HTML (links included), so tags are escaped to show as typed."""
    return escape(str(value), quote=False)


def _html(fig, width: int = PLOT_WIDTH) -> str:
    top = fig.layout.margin.t or 50
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": top, "b": 50})
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


# Twenty colours that stay apart on white: the ten of D3, then ten more from Kelly's list of colours
# of maximum contrast, skipping those close to a D3 one or too pale for a thin line.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#f3c300", "#875692", "#a1caf1", "#882d17", "#8db600", "#0067a5", "#654522", "#e25822",
    "#2b3d26", "#b3446c",
)  # fmt: skip
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "triangle-down", "star")


def colours(labels: list[str]) -> dict[str, str]:
    """A colour per label, all different up to len(PALETTE) labels."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def dashes(labels: list[str]) -> dict[str, str]:
    """A dash pattern per label too: identical curves (e.g. an approximation that reduces to another
    one) would otherwise hide each other, and past the palette's length colours repeat."""
    return {label: DASHES[i % len(DASHES)] for i, label in enumerate(labels)}


def symbols(labels: list[str]) -> dict[str, str]:
    """A marker per label, for points with no line to carry a dash."""
    return {label: SYMBOLS[i % len(SYMBOLS)] for i, label in enumerate(labels)}


def translucent(colour: str, alpha: float = 0.18) -> str:
    """``#rrggbb`` as an rgba() fill for a band."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _legend_below(fig, height: int = 440) -> None:
    # Labels can be long ("softmax [dim=128]"): the legend goes below the plot, not beside it.
    fig.update_layout(legend={"orientation": "h", "y": -0.22}, height=height)


def seed_spread(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float, float | None, int]]:
    """(step, mean, std or None, seeds) per step logged by any seed: the spread of several seeds'
    curves, over the seeds that logged that step."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for points in curves:
        for step, value in points:
            by_step[step].append(value)
    out = []
    for step in sorted(by_step):
        mean, std = mean_std(by_step[step])
        if mean is not None:
            out.append((step, mean, std, len(by_step[step])))
    return out


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample std) of finite values; None where there is no finite answer (a hand-made file's
    numbers can overflow a sum) and, for the std, with fewer than two values."""
    try:
        mean = statistics.fmean(values) if values else None
        std = statistics.stdev(values) if len(values) > 1 else None
    except (OverflowError, ValueError):
        return None, None
    finite = [v if v is not None and math.isfinite(v) else None for v in (mean, std)]
    return (finite[0], finite[1]) if finite[0] is not None else (None, None)


def curve_figures(runs: list[Run]) -> dict[str, list[tuple[str, str]]]:
    """task -> [(title, html)]: validation accuracy and training loss against the step, one line per
    attention (variant): a run's own curve, or for several seeds their mean with a band of ± one
    standard deviation."""
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
        by_label: dict[str, list[Run]] = defaultdict(list)
        for run in sorted(by_task[task], key=lambda r: (labels.index(r.label), r.seed or 0)):
            by_label[run.label].append(run)
        figures = []
        for key, title, scale in (
            ("val/acc", "validation accuracy (%)", 100.0),
            ("train/loss", "train loss", 1),
        ):
            fig = go.Figure()
            for label, group in by_label.items():
                mode = "lines+markers" if key == "val/acc" else "lines"
                style = {"color": colour[label], "dash": dash[label], "width": 1.5}
                seeds = [(run, curves[id(run)][key]) for run in group if run.ok and curves[id(run)][key]]
                if seeds:
                    _add_curve(fig, label, seeds, scale, mode, style)
                # A run without a result is no seed of the mean, but where it went is worth seeing.
                for run in group:
                    if not run.ok and curves[id(run)][key]:
                        _add_unfinished_curve(fig, run, curves[id(run)][key], scale, style)
            if fig.data:
                fig.update_layout(
                    title=f"{_t(task_title(task))}: {title}", xaxis_title="step", yaxis_title=title
                )
                _legend_below(fig)
                figures.append((f"{task} {key}", _html(fig)))
        delta = delta_figure(by_task[task], labels, colour)
        if delta is not None:
            figures.append((f"{task} delta", delta))
        if figures:
            out[task] = figures
    return out


def _add_unfinished_curve(fig, run: Run, points: list, scale: float, style: dict) -> None:
    steps, values = zip(*points, strict=True)
    name = _t(f"{run.label} seed {run.seed} ({STATE_LABELS[run.status]})")
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=[v * scale for v in values],
            mode="lines+markers",
            name=name,
            opacity=0.6,
            line={**style, "dash": "dot", "width": 1},
            marker={"size": 4, "symbol": "x"},
            hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.3f}}<extra></extra>",
        )
    )


def _add_curve(fig, label: str, seeds: list[tuple[Run, list]], scale: float, mode: str, style: dict) -> None:
    name = _t(label)
    if len(seeds) == 1:
        run, points = seeds[0]
        steps, values = zip(*points, strict=True)
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[v * scale for v in values],
                mode=mode,
                name=name,
                line=style,
                marker={"size": 5},
                hovertemplate=f"{name} seed {run.seed}<br>step %{{x}}<br>%{{y:.3f}}<extra></extra>",
            )
        )
        return
    spread = seed_spread([points for _run, points in seeds])
    steps = [p[0] for p in spread]
    means = [p[1] * scale for p in spread]
    stds = [(p[2] or 0.0) * scale for p in spread]
    # The band first (upper edge, then the lower one filled up to it), the mean line over it.
    fig.add_trace(
        go.Scatter(
            x=steps, y=[m + s for m, s in zip(means, stds, strict=True)], mode="lines",
            line={"width": 0}, legendgroup=name, showlegend=False, hoverinfo="skip",
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=steps, y=[m - s for m, s in zip(means, stds, strict=True)], mode="lines", fill="tonexty",
            fillcolor=translucent(style["color"]), line={"width": 0}, legendgroup=name, showlegend=False,
            hoverinfo="skip",
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=means,
            mode=mode,
            name=f"{name} (mean ± std, {len(seeds)} seeds)",
            legendgroup=name,
            line=style,
            marker={"size": 5},
            customdata=[[s, p[3]] for s, p in zip(stds, spread, strict=True)],
            hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.3f}} ± %{{customdata[0]:.3f}} "
            "(%{customdata[1]} seeds)<extra></extra>",
        )
    )


def delta_figure(runs: list[Run], labels: list[str], colour: dict[str, str]) -> str | None:
    """Spectral shift's δ of every layer and head against the step (``attention/<layer>/delta_h<i>``,
    logged by the attention-diagnostics callback); None when no run logged one."""
    fig = go.Figure()
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
                    line={"color": colour[run.label], "dash": DASHES[i % len(DASHES)], "width": 1.2},
                )
            )
    if not fig.data:
        return None
    title = f"{_t(task_title(runs[0].task))}: spectral shift δ per layer and head"
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="δ", yaxis_type="log")
    _legend_below(fig)
    return _html(fig)


def ratio_figure(runs: list[Run], keys: dict[str, list[str]]) -> str | None:
    """Bars: each attention's plotted metrics (``lra.metrics``) relative to softmax, per task; an
    error bar is the spread of the attention's seeds (their std over the softmax mean)."""
    if go is None:
        return None
    groups = group_runs([r for r in runs if r.ok and r.task != "unknown"])
    measures = [m for m in metrics() if m.plotted]
    x = []
    ys: dict[str, list] = {_unitless(m.label): [] for m in measures}
    errors: dict[str, list] = {_unitless(m.label): [] for m in measures}
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
                std = group.std(m.field)
                ys[_unitless(m.label)].append(value / ref if value is not None and ref else None)
                errors[_unitless(m.label)].append(std / ref if std is not None and ref else None)
    if not x:
        return None
    fig = go.Figure(
        [
            go.Bar(
                name=name,
                x=x,
                y=values,
                marker_color=PALETTE[i],
                error_y={
                    "type": "data",
                    "array": errors[name],
                    "visible": any(e is not None for e in errors[name]),
                },
            )
            for i, (name, values) in enumerate(ys.items())
        ]
    )
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey", annotation_text="softmax")
    fig.update_layout(
        barmode="group",
        title="Relative to softmax (same task and setting; bars: ± std over seeds)",
        yaxis_title="ratio",
    )
    return _html(fig, width=WIDE_WIDTH)


# The two trade-off panels: (metric field, x-axis title, scale of the value on the axis).
TRADEOFFS = (
    ("train_steps_per_s", "training steps/s (higher is faster)", 1.0),
    ("peak_memory_bytes", "peak memory, MiB (lower is less)", 1 / 2**20),
)


def tradeoff_figures(runs: list[Run]) -> dict[str, str]:
    """task -> one figure of two panels: test accuracy against training speed and against peak
    memory, a point per attention (variant) at the mean of its completed seeds, with error bars of
    ± one standard deviation over them in both directions."""
    if go is None:
        return {}
    groups = group_runs([r for r in runs if r.ok and r.task != "unknown"])
    labels = row_order([(g.attention, g.label) for g in groups.values()])
    colour, symbol = colours(labels), symbols(labels)
    out: dict[str, str] = {}
    for task in task_order({t for t, _ in groups}):
        fig = make_subplots(
            rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
            subplot_titles=("accuracy against training speed", "accuracy against peak memory"),
        )  # fmt: skip
        kinds: set[str] = set()
        spans: dict[int, list[float]] = {1: [], 2: []}
        for label in labels:
            group = groups.get((task, label))
            if group is None:
                continue
            acc, acc_std = mean_std(group.values("test_acc"))
            if acc is None:
                continue
            shown = False
            for col, (field, _title, scale) in enumerate(TRADEOFFS, start=1):
                x, x_std = mean_std(group.values(field))
                if x is None:
                    continue
                kind = "/".join(sorted({r.qualifier("peak_memory_kind") or "?" for r in group.ok}))
                if field == "peak_memory_bytes":
                    kinds.add(kind)
                spans[col].append(x * scale)
                n = len(group.values("test_acc"))
                hover = f"{_t(label)}<br>%{{y:.2f}}% at %{{x:.3g}}<br>{n} seed{'s' * (n != 1)}"
                if field == "peak_memory_bytes":
                    hover += f" ({_t(kind)})"
                marker = {"color": colour[label], "symbol": symbol[label], "size": 11}
                point = _tradeoff_point(
                    _t(label), (x, x_std, scale), (acc, acc_std), marker, hover, not shown
                )
                fig.add_trace(point, row=1, col=col)
                shown = True
        if not fig.data:
            continue
        _tradeoff_layout(fig, task, kinds, spans)
        out[task] = _html(fig, width=WIDE_WIDTH)
    return out


def _tradeoff_point(name: str, x: tuple, acc: tuple, marker: dict, hover: str, legend: bool) -> go.Scatter:
    """One attention's point: ``x`` (mean, std, axis scale) against ``acc`` (mean, std) in percent."""
    (x_mean, x_std, scale), (acc_mean, acc_std) = x, acc
    return go.Scatter(
        x=[x_mean * scale],
        y=[100 * acc_mean],
        mode="markers",
        name=name,
        legendgroup=name,
        showlegend=legend,
        marker=marker,
        error_x=_error_bar(x_std, scale, marker["color"]),
        error_y=_error_bar(acc_std, 100, marker["color"]),
        hovertemplate=hover + "<extra></extra>",
    )


def _tradeoff_layout(fig, task: str, kinds: set[str], spans: dict[int, list[float]]) -> None:
    """Axis titles and types (memory of several kinds is flagged as not comparable), title, legend."""
    for col, (_field, title, _scale) in enumerate(TRADEOFFS, start=1):
        if col == 2 and len(kinds) > 1:
            title += f" ({', '.join(sorted(kinds))}: not comparable)"
        fig.update_xaxes(title_text=_t(title), row=1, col=col, type=_axis_type(spans[col]))
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    fig.update_layout(
        title=f"{_t(task_title(task))}: accuracy against speed and memory (mean ± std over seeds)"
    )
    _legend_below(fig, height=470)
    fig.update_layout(margin={"t": 80})  # room for the title above the panels' own


def _error_bar(std: float | None, scale: float, colour: str) -> dict:
    if std is None:
        return {"visible": False}
    return {"type": "data", "array": [std * scale], "visible": True, "color": colour, "thickness": 1.5}


def _axis_type(values: list[float]) -> str:
    """Log scale where the points span more than a factor of ten (speeds and memory of different
    attentions do), linear otherwise."""
    positive = [v for v in values if v > 0]
    return (
        "log"
        if positive and len(positive) == len(values) and max(positive) > 10 * min(positive)
        else "linear"
    )


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
        names = list(series)
        colour, dash, symbol = colours(names), dashes(names), symbols(names)
        for name, points in series.items():
            xs, ys = zip(*sorted(points), strict=True)
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines+markers",
                    name=name,
                    line={"color": colour[name], "dash": dash[name], "width": 1.5},
                    marker={"color": colour[name], "symbol": symbol[name], "size": 6},
                )
            )
        positive = all(y > 0 for pts in series.values() for _, y in pts)
        fig.update_layout(title=_t(f"{title}: {y_key}"), xaxis_title=_t(x_key), yaxis_title=_t(y_key))
        if positive:
            fig.update_yaxes(type="log")
        if len(series) > 1:
            _legend_below(fig, height=380 + 22 * math.ceil(len(series) / 3))
        figures.append(_html(fig))
    return figures
