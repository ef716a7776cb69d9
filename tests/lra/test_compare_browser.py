"""The dashboard opened in headless Chromium: for a real (tiny) sweep, the tables are there and the
plotly plots actually render (their SVG exists only after the browser ran the inline JavaScript); for
it and a hand-written sweep of five tasks and attentions, nothing is wider than a 1,280 px window.

``python -m tests.lra.test_compare_browser [PNG]`` redraws the README's picture (docs/img/dashboard.png)
from the hand-written sweep.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lra.compare import build, plots
from tests.helpers.compare import showcase_runs
from tests.helpers.sweeps import sweep_attentions, tiny_sweep

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    # Let the page's scripts finish (plotly draws after load) before dumping or capturing.
    "--virtual-time-budget=10000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium); browser check skipped")


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"  # fresh profile: no state from other runs
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory) -> Path:
    sweep = tiny_sweep(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("dashboard")
    report = build([sweep["grid"], sweep["mixed"]], out)
    assert (report.runs, report.failed) == (2 * len(sweep_attentions()) + 2, 1)
    return out


def test_dashboard_renders_in_chromium(dashboard, tmp_path):
    page = (dashboard / "index.html").resolve()
    proc = run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    dom = proc.stdout
    for table in ("lra-table", "speed-table", "runs-table"):
        assert f'id="{table}"' in dom
    assert "[published]" in dom
    assert "model.vocab_size=4" in dom  # the failed run of the sweep, with its reason
    assert "softmax [max_steps=2]" in dom  # a different config: its own row
    if plots.available():
        # One SVG root per rendered plot: ratio bars (when an attention other than softmax ran) and
        # ListOps validation accuracy and training loss.
        expected = 2 + (len(sweep_attentions()) > 1)
        assert dom.count('class="main-svg"') >= expected
        assert "ListOps: validation accuracy" in dom


def test_dashboard_screenshot(dashboard, tmp_path):
    shot = tmp_path / "dashboard.png"
    proc = run_chromium(
        tmp_path, "--window-size=1280,1600", f"--screenshot={shot}", (dashboard / "index.html").as_uri()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert shot.is_file() and shot.stat().st_size > 20_000  # a real page, not a blank one


# -- a 1,280 px window -------------------------------------------------------------------------------
WIDTH = 1280

# Appended to a copy of the page: once it has loaded (and plotly drawn), open every <details> and
# write the window's width and every table's, plot's and image's box into the DOM, for --dump-dom.
MEASURE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const boxes = [...document.querySelectorAll("table, .table-wrap, .plotly-graph-div, .main-svg, img")]
    .map((el) => {
      const box = el.getBoundingClientRect();
      const cls = String(el.className.baseVal ?? el.className);
      return {name: el.id || cls, cls, left: box.left, right: box.right, scroll: el.scrollWidth,
              client: el.clientWidth};
    });
  const out = document.createElement("pre");
  out.id = "layout";
  out.textContent = JSON.stringify({window: window.innerWidth, page: document.documentElement.scrollWidth, boxes});
  document.body.appendChild(out);
}, 100));
</script>"""


def layout(page: Path, tmp_path: Path) -> dict:
    """The boxes of ``page`` laid out in a WIDTH px wide window."""
    probe = tmp_path / "layout.html"
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8"
    )
    proc = run_chromium(tmp_path, f"--window-size={WIDTH},1000", "--dump-dom", probe.as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r'<pre id="layout">(.*?)</pre>', proc.stdout, re.S)
    assert found, "the measuring script did not run"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def showcase(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("showcase")
    out = root / "compare"
    build([showcase_runs(root / "runs")], out)
    return out


@pytest.mark.parametrize("which", ["showcase", "dashboard"])
def test_nothing_is_wider_than_a_1280_px_window(which, request, tmp_path):
    page = request.getfixturevalue(which) / "index.html"
    measured = layout(page, tmp_path)
    assert measured["window"] == WIDTH
    assert measured["page"] <= WIDTH, "the page scrolls sideways"
    names = [box["name"] for box in measured["boxes"]]
    for table in ("lra-table", "published-table", "speed-table", "runs-table"):
        assert table in names, table
    if plots.available():
        drawn = [box for box in measured["boxes"] if box["cls"] == "main-svg"]
        assert sum("plotly-graph-div" in box["cls"] for box in measured["boxes"]) >= 3 and drawn
    for box in measured["boxes"]:
        assert box["left"] >= 0 and box["right"] <= WIDTH, box  # not cut off
        assert box["scroll"] <= box["client"] + 1, box  # no horizontal scrollbar of its own


def test_showcase_screenshot(showcase, tmp_path):
    shot = screenshot(showcase / "index.html", tmp_path / "dashboard.png", tmp_path)
    assert shot.stat().st_size > 50_000  # tables and plots, not a blank page


def screenshot(page: Path, png: Path, tmp_path: Path, height: int = 1660) -> Path:
    proc = run_chromium(tmp_path, f"--window-size={WIDTH},{height}", f"--screenshot={png}", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return png


def main(png: Path, runs: list[Path]) -> None:
    """The top of a dashboard in a 1,280 px window: of ``runs`` (the README's picture is of real runs:
    run this from the folder holding them, so the page names them by a short relative path), or of the
    hand-written example runs when none are given."""
    png = png.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        if not runs:
            os.chdir(tmp)  # the page names the folder it was built from: a short, telling name
            runs = [showcase_runs(Path("hand-written-example-runs"))]
        build(runs, Path(tmp) / "compare")
        screenshot(Path(tmp) / "compare" / "index.html", png, Path(tmp))
    print(f"wrote {png}")


if __name__ == "__main__":
    main(
        Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/dashboard.png"), [Path(p) for p in sys.argv[2:]]
    )
