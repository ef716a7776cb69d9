"""The attention benchmarks' results (``python -m lra.bench fidelity|efficiency``), read loosely.

Each benchmark writes ``<name>.json`` and its own ``<name>.png``. The PNG is embedded when it sits next
to the JSON; otherwise rows found in the JSON (a list of flat records, at the top or under ``rows`` /
``results`` / ``records``, possibly keyed by device) are plotted. Anything else is listed with a note,
never an error.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from lra.compare import plots
from lra.run_files import read_text

X_KEYS = ("n", "length", "seq_len", "sequence_length", "num_tokens")
ROW_KEYS = ("rows", "results", "records", "data")
MAX_SERIES_KEYS, MAX_Y_KEYS = 3, 4


@dataclass
class BenchResult:
    path: Path
    title: str
    png_base64: str | None = None
    figures: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # top-level scalars: device, versions, ...
    note: str | None = None


def find_rows(data) -> list[dict]:
    if isinstance(data, list):
        return [r for r in data if isinstance(r, dict)]
    if not isinstance(data, dict):
        return []
    for key in ROW_KEYS:
        value = data.get(key)
        if isinstance(value, list):
            return [r for r in value if isinstance(r, dict)]
        if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
            return [
                {key + "_group": k, **r} for k, rows in value.items() for r in rows if isinstance(r, dict)
            ]
    return []


def _varying(rows: list[dict], key: str) -> bool:
    return len({json.dumps(r.get(key), sort_keys=True, default=str) for r in rows}) > 1


def plot_rows(rows: list[dict], title: str) -> list[str]:
    x_key = next((k for k in X_KEYS if any(isinstance(r.get(k), int | float) for r in rows)), None)
    if x_key is None:
        return []
    keys = list(dict.fromkeys(k for r in rows for k in r))
    series = [
        k for k in keys if all(isinstance(r.get(k), str | type(None)) for r in rows) and _varying(rows, k)
    ][:MAX_SERIES_KEYS]
    numeric = [
        k
        for k in keys
        if k != x_key
        and any(isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool) for r in rows)
        and _varying(rows, k)
    ][:MAX_Y_KEYS]
    return plots.bench_figures(rows, x_key, series, numeric, title)


def load_bench(path: Path) -> BenchResult:
    path = Path(path)
    result = BenchResult(path=path, title=path.stem)
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError, RecursionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        result.note = f"could not read {path.name}: {first}"
        return result
    if isinstance(data, dict):
        result.title = str(data.get("benchmark") or path.stem)
        result.facts = {
            k: str(v) for k, v in data.items() if isinstance(v, str | int | float) and not isinstance(v, bool)
        }
    png = path.with_suffix(".png")
    if png.is_file():
        try:
            result.png_base64 = base64.b64encode(png.read_bytes()).decode("ascii")
        except OSError as exc:
            result.note = f"could not read {png.name}: {exc.strerror or type(exc).__name__}"
    else:
        rows = find_rows(data)
        result.figures = plot_rows(rows, result.title) if rows else []
        if not result.figures:
            result.note = f"no {png.name} beside it and no rows this dashboard knows how to plot"
    return result
