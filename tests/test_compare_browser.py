"""The dashboard of a real (tiny) sweep, opened in headless Chromium: the tables are there and the
plotly plots actually render (their SVG exists only after the browser ran the inline JavaScript)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lra.compare import build, plots
from tests.test_sweep import sweep_attentions, tiny_sweep

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
