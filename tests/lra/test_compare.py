"""The comparison dashboard on hand-made run directories: numbers, failed and crashed runs, mixed
configs, published rows, ratios to softmax, curves and benchmark files."""

from __future__ import annotations

import base64
import json
import re
from itertools import pairwise
from pathlib import Path

import pytest

from lra import results
from lra.compare import build, plots
from lra.compare.__main__ import main as compare_main
from lra.compare.collect import collect, read_curves
from lra.compare.published import PUBLISHED
from lra.results import RunRecord
from tests.helpers.compare import crashed_run, parse_tables, plotly_figures, row, write_run

# A 1x1 PNG, standing in for a benchmark's plot.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


@pytest.fixture
def runs_root(tmp_path) -> Path:
    root = tmp_path / "outputs"
    for seed, acc in ((0, 0.30), (1, 0.40)):
        write_run(root / "sweep", "listops", "softmax", seed, acc, speed=10.0, memory=2**30)
        write_run(root / "sweep", "listops", "nystrom", seed, acc + 0.05, speed=20.0, memory=2**29)
    write_run(root / "sweep", "image", "softmax", 0, 0.50)
    write_run(root / "big", "listops", "softmax", 0, 0.45, dim=128)  # another model size: another row
    # A run that recorded its failure.
    failed = write_run(root / "sweep", "listops", "nystrom", 2, 0.1)
    record = json.loads((failed / "results.json").read_text())
    record.update(status="failed", error="NonFiniteLossError: training loss became nan at step 7")
    (failed / "results.json").write_text(json.dumps(record))
    # A crashed run: Hydra's config, no results.json.
    crashed = root / "sweep" / "crashed"
    (crashed / ".hydra").mkdir(parents=True)
    (crashed / ".hydra" / "config.yaml").write_text(
        "seed: 3\ntask:\n  name: listops\nattention:\n  name: spectral_shift\ndata_dir: ${oc.env:NOWHERE_LRA}\n"
    )
    # A results.json cut off mid-write and one with a field of the wrong type.
    (root / "sweep" / "truncated").mkdir()
    (root / "sweep" / "truncated" / "results.json").write_text('{"status": "completed", "task": "lis')
    (root / "sweep" / "mistyped").mkdir()
    (root / "sweep" / "mistyped" / "results.json").write_text('{"status": "completed", "test_acc": "high"}')
    return root


def test_collect_reads_every_state_without_crashing(runs_root):
    runs = {r.run_dir.name: r for r in collect([runs_root])}
    assert len(runs) == 10
    # No results.json: crashed or still running, a state apart from a recorded failure.
    assert runs["crashed"].status == "crashed" and "no results.json" in runs["crashed"].error
    assert (runs["crashed"].task, runs["crashed"].attention, runs["crashed"].seed) == (
        "listops",
        "spectral_shift",
        3,
    )
    assert runs["truncated"].status == "failed" and "unreadable" in runs["truncated"].error
    assert runs["mistyped"].status == "failed" and "'test_acc' has str" in runs["mistyped"].error
    assert runs["listops_nystrom_2_64"].status == "failed" and "nan" in runs["listops_nystrom_2_64"].error
    assert read_curves(runs_root / "sweep" / "listops_softmax_0_64")["val/acc"] == [(49, 0.2), (99, 0.31)]


def test_dashboard_tables(runs_root, tmp_path):
    out = tmp_path / "compare"
    report = build([runs_root], out)
    assert (report.runs, report.completed, report.failed, report.crashed) == (10, 6, 3, 1)
    html = (out / "index.html").read_text()
    tables = parse_tables(html)

    lra = tables["lra-table"]
    header = lra[0][1]
    assert header == ["Model", "ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X", "Avg"]
    softmax = row(lra, "softmax")[0]
    assert softmax[1] == "35.00 ± 7.07 (n=2)"  # mean ± sample std over the two seeds
    assert softmax[4] == "50.00 (n=1)" and softmax[7] == "42.50*"  # two of five tasks: marked average
    assert row(lra, "softmax [dim=128]")[0][1] == "45.00 (n=1)"  # a different model size stays apart
    assert row(lra, "nystrom")[0][1] == "40.00 ± 7.07 (n=2, 1 failed)"
    assert row(lra, "spectral_shift")[0][1] == "failed (1 of 1)"
    # The published rows of softmax and Nyström follow ours; the others are in a table of their own.
    published = [cells for kind, cells in lra if kind == "published"]
    others = [cells for kind, cells in tables["published-table"] if kind == "published"]
    assert len(published) + len(others) == len(PUBLISHED)
    assert all("[published]" in cells[0] for cells in published + others)
    assert ["37.10", "65.02", "79.35", "38.20", "74.16", "—", "58.77"] in [cells[1:] for cells in published]

    speed = tables["speed-table"]
    nystrom = row(speed, "nystrom", column=1)[0]
    assert nystrom[3:5] == ["20", "2.00×"] and nystrom[9:11] == ["512", "0.50×"]
    assert row(speed, "softmax [dim=128]", column=1)[0][4] == "1.00×"

    runs = tables["runs-table"]
    failed = [cells for kind, cells in runs if kind in ("failed", "crashed")]
    assert len(failed) == 4
    errors = " ".join(cells[-1] for cells in failed)
    assert "nan" in errors and "no results.json" in errors and "unreadable" in errors

    markdown = (out / "results.md").read_text()
    assert "| softmax | 35.00 ± 7.07 (n=2) |" in markdown
    assert "[published]" in markdown and "failed" in markdown
    page = re.sub(r"<script.*?</script>", "", html, flags=re.S)  # (plotly.js mentions URLs)
    fetched = re.findall(r'(?:src|href)="(?:https?:)?//', page)
    assert not fetched, "the page must be self-contained"


def test_curves_and_ratio_plots_are_inline(runs_root, tmp_path):
    pytest.importorskip("plotly")
    out = tmp_path / "compare"
    build([runs_root], out)
    html = (out / "index.html").read_text()
    # ratio bars + (accuracy against speed and memory, val acc, loss) x 2 tasks
    assert html.count('class="plotly-graph-div"') == 7
    assert '<script src="http' not in html  # self-contained: plotly.js is inline


def test_spectral_shift_delta_per_head_is_plotted_from_the_csv_log(tmp_path):
    pytest.importorskip("plotly")
    root = tmp_path / "outputs"
    write_run(root, "listops", "nystrom", 0, 0.30)
    ss = write_run(root, "listops", "spectral_shift", 0, 0.32)
    (ss / "csv" / "version_0" / "metrics.csv").write_text(
        "epoch,step,val/acc,attention/layer0/delta,attention/layer0/delta_h0,attention/layer0/delta_h1\n"
        "0,49,0.2,0.0002,0.0001,0.0003\n0,99,0.3,0.0004,0.0002,0.0006\n"
    )
    out = tmp_path / "compare"
    build([root], out)
    html = (out / "index.html").read_text()
    # accuracy against speed and memory, val acc, loss, delta (no softmax: no ratio bars)
    assert html.count('class="plotly-graph-div"') == 4

    # The figures are read back as the JSON plotly embeds, not matched as bytes: how that JSON escapes
    # non-ASCII text (δ or \u03b4) depends on whether plotly found orjson to serialise it.
    decoder = json.JSONDecoder()
    figures = []
    for call in re.finditer(r'Plotly\.newPlot\(\s*"[^"]*",\s*', html):
        data, end = decoder.raw_decode(html, call.end())
        layout, _ = decoder.raw_decode(html, end + re.match(r"\s*,\s*", html[end:]).end())
        title = layout.get("title", {})
        figures.append((title.get("text", "") if isinstance(title, dict) else title, data))
    deltas = [data for title, data in figures if title.endswith("spectral shift δ per layer and head")]
    assert len(deltas) == 1
    names = {trace["name"] for trace in deltas[0]}
    assert names == {"spectral_shift seed 0 layer0 h0", "spectral_shift seed 0 layer0 h1"}  # no mean


def test_benchmark_files(runs_root, tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "efficiency.json").write_text(json.dumps({"benchmark": "efficiency", "results": {}}))
    (bench / "efficiency.png").write_bytes(PNG)
    rows = [
        {"variant": v, "n": n, "time_s": n * (2 if v == "softmax" else 1) / 1e4, "device": "cpu"}
        for v in ("softmax", "nystrom")
        for n in (256, 512, 1024)
    ]
    (bench / "fidelity.json").write_text(json.dumps({"benchmark": "fidelity", "rows": rows, "torch": "2.x"}))
    (bench / "odd.json").write_text(json.dumps([1, 2, 3]))
    (bench / "broken.json").write_text("{")
    out = tmp_path / "compare"
    build([runs_root], out, bench=sorted(bench.glob("*.json")))
    html = (out / "index.html").read_text()
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in html
    bench_part = html.split('id="bench"')[1].split('id="runs"')[0]
    assert "no rows this dashboard knows how to plot" in bench_part  # odd.json
    assert "could not read broken.json" in bench_part
    if plots.available():
        assert bench_part.count('class="plotly-graph-div"') == 1  # fidelity.json's rows: time_s vs n


def test_cli(runs_root, tmp_path, capsys):
    out = tmp_path / "cli"
    assert compare_main([str(runs_root / "sweep"), str(runs_root / "big"), "--out", str(out)]) == 0
    expected = "10 runs (6 completed, 0 interrupted, 3 failed, 1 crashed or still running)"
    assert expected in capsys.readouterr().out
    assert (out / "index.html").is_file() and (out / "results.md").is_file()
    assert compare_main([str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    # No runs at all is not an error: an empty dashboard that says so.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert compare_main([str(empty), "--out", str(tmp_path / "empty-out")]) == 0


def data_record(source: str, fingerprint: str) -> dict:
    generator = {"seed": 0, "num_train": 96} if source == "generate" else None
    return {"source": source, "path": f"/data/{source}", "generator": generator, "fingerprint": fingerprint}


def test_data_source_column_and_rows(tmp_path):
    """Runs record the data they read; the release and generated data never share a row."""
    root = tmp_path / "outputs"
    write_run(root, "listops", "softmax", 0, 0.30, data=data_record("release", "aaaaaaaaaaaaaaaa"))
    write_run(root, "listops", "softmax", 1, 0.32, data=data_record("release", "aaaaaaaaaaaaaaaa"))
    write_run(root / "gen", "listops", "softmax", 0, 0.90, data=data_record("generate", "bbbbbbbbbbbbbbbb"))
    write_run(root / "old", "listops", "softmax", 2, 0.31)  # written before runs recorded their data
    out = tmp_path / "compare"
    build([root], out)
    tables = parse_tables((out / "index.html").read_text())
    runs = tables["runs-table"]
    column = runs[0][1].index("Data")
    cells = sorted(cells[column] for _, cells in runs[1:])
    assert cells == ["generate (seed 0) · bbbbbbbbbb", "release · aaaaaaaaaa", "release · aaaaaaaaaa", "—"]
    labels = {cells[0] for kind, cells in tables["lra-table"] if kind in ("ours", "failed")}
    assert "softmax [used=generate]" in labels and len(labels) >= 2


def test_a_run_stopped_by_a_time_limit_shares_its_row_and_is_marked(tmp_path):
    """trainer.max_time is a wall-clock limit, not a setting: the run joins its seeds' row, and the
    cell says that one of them ended before trainer.max_steps."""
    root = tmp_path / "outputs"
    write_run(root, "listops", "softmax", 0, 0.30)
    short = write_run(root, "listops", "softmax", 1, 0.34)
    record = json.loads((short / "results.json").read_text())
    record["config"]["trainer"]["max_time"] = "00:00:04:20"
    record["global_step"] = 87
    (short / "results.json").write_text(json.dumps(record))
    out = tmp_path / "compare"
    build([root], out)
    tables = parse_tables((out / "index.html").read_text())
    assert row(tables["lra-table"], "softmax")[0][1] == "32.00 ± 2.83 (n=2, 1 stopped early)"
    assert "stopped early" in (out / "results.md").read_text()


def test_every_published_row_reproduces_its_printed_average():
    # A guard against a mistyped number: each row's five accuracies average to what its source printed.
    for published in PUBLISHED:
        assert abs(sum(published.accuracy.values()) / len(published.accuracy) - published.average) < 0.006, (
            published.label
        )


def test_curves_of_a_resumed_run_continue_the_runs_it_was_resumed_from(tmp_path, monkeypatch):
    """Two pieces killed before writing results.json (the second's Hydra config names the first's
    checkpoint), then a piece that recorded ``resumed_from``: the curve is the whole run's, each piece
    up to where the next took over, and paths relative to where the runs were started are found."""
    root = tmp_path / "outputs" / "runs"

    def piece(name: str, rows: str, resumed_from: str | None, record: bool) -> Path:
        run_dir = root / name
        (run_dir / "csv" / "version_0").mkdir(parents=True)
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
        (run_dir / "csv" / "version_0" / "metrics.csv").write_text("step,train/loss,val/acc\n" + rows)
        (run_dir / ".hydra").mkdir()
        ckpt_line = f"ckpt_path: {resumed_from}\n" if resumed_from else ""
        (run_dir / ".hydra" / "config.yaml").write_text("task:\n  name: listops\n" + ckpt_line)
        if record:
            results.write(run_dir, RunRecord(status="interrupted", resumed_from=resumed_from))
        return run_dir

    piece("a", "9,2.3,\n19,,0.1\n29,2.1,0.15\n", None, record=False)  # killed: no results.json
    piece("b", "20,2.0,\n29,1.9,0.2\n39,1.8,0.25\n", "outputs/runs/a/checkpoints/last.ckpt", record=False)
    last = piece("c", "39,1.5,0.3\n49,1.4,0.35\n", "outputs/runs/b/checkpoints/last.ckpt", record=True)
    monkeypatch.chdir(Path("/"))  # relative paths must be found from the run directory, not the cwd
    curves = read_curves(last)
    assert curves["train/loss"] == [(9, 2.3), (20, 2.0), (29, 1.9), (39, 1.5), (49, 1.4)]
    assert curves["val/acc"] == [(19, 0.1), (29, 0.2), (39, 0.3), (49, 0.35)]
    # The dashboard lists the run once: the pieces it continued are not runs of their own.
    assert [run.run_dir for run in collect([root])] == [last]


def test_how_the_network_computes_does_not_split_rows():
    """Keys that resume across checkpoints (they change how the network computes, not what: the conv
    skip's implementation, compiling) do not make a new dashboard row either, also against runs
    recorded before the key existed."""
    from lra.compare.variants import relevant
    from lra.resume import HOW_NOT_WHAT

    base = {"attention": {"name": "nystrom", "num_landmarks": 64}, "model": {"dim": 64}, "seed": 0}
    for dotted in HOW_NOT_WHAT:
        group, key = dotted.split(".")
        later = {**base, group: {**base[group], key: "native"}}
        assert relevant(later) == relevant(base), dotted
    assert relevant({**base, "attention": {"name": "nystrom", "num_landmarks": 32}}) != relevant(base)


# -- results first: run states, published rows, Path-X, trade-off figures, spread, colours ---------------
def titled(figures: list[dict], words: str) -> list[dict]:
    return [f for f in figures if words in (f["layout"].get("title") or {}).get("text", "")]


@pytest.fixture
def states_root(tmp_path) -> Path:
    """Three completed seeds of softmax on ListOps, and beside them one run in each other state."""
    root = tmp_path / "outputs"
    for seed, acc in ((0, 0.30), (1, 0.32), (2, 0.34)):
        write_run(root, "listops", "softmax", seed, acc)
    # An interrupted run that even has a test accuracy (far off): it must not move the mean.
    write_run(root, "listops", "softmax", 3, 0.90, status="interrupted", error="KeyboardInterrupt: stopped")
    write_run(root, "listops", "softmax", 4, 0.05, status="failed", error="NonFiniteLossError: nan")
    crashed_run(root / "still_running", "listops", "softmax", 5)
    write_run(
        root, "text", "softmax", 0, 0.60, status="interrupted", error="SIGTERM"
    )  # a task with no result
    return root


def test_interrupted_failed_and_crashed_runs_are_states_of_their_own(states_root, tmp_path, capsys):
    runs = {r.seed: r.status for r in collect([states_root]) if r.task == "listops"}
    assert runs == {
        0: "completed",
        1: "completed",
        2: "completed",
        3: "interrupted",
        4: "failed",
        5: "crashed",
    }
    out = tmp_path / "compare"
    report = build([states_root], out)
    assert (report.completed, report.interrupted, report.failed, report.crashed) == (3, 2, 1, 1)
    html = (out / "index.html").read_text()
    # The counts at the top: one labelled count per state.
    for state, text in (
        ("completed", "3 completed"),
        ("interrupted", "2 interrupted"),
        ("failed", "1 failed"),
        ("crashed", "1 crashed or still running"),
    ):
        assert re.search(rf'<span id="count-{state}" class="state state-{state}">{text}</span>', html), state
    tables = parse_tables(html)
    # Only the completed seeds are averaged; the others are counted by state.
    assert row(tables["lra-table"], "softmax")[0][1] == "32.00 ± 2.00 (n=3, 2 failed, 1 interrupted)"
    assert row(tables["lra-table"], "softmax")[0][2] == "interrupted (1 of 1)"
    statuses = {
        cells[2]: (kind, cells[3]) for kind, cells in tables["runs-table"][1:] if cells[0] == "ListOps"
    }
    assert statuses["3"] == ("interrupted", "interrupted")
    assert statuses["4"] == ("failed", "failed")
    assert statuses["5"] == ("crashed", "crashed or still running")
    assert statuses["0"] == ("ours", "completed")
    # The speed table averages the completed seeds only (the interrupted run's speed is the same here).
    assert row(tables["speed-table"], "softmax", column=1)[0][2] == "3"
    markdown = (out / "results.md").read_text()
    assert "7 runs (3 completed, 2 interrupted, 1 failed, 1 crashed or still running)" in markdown
    assert compare_main([str(states_root), "--out", str(tmp_path / "cli")]) == 0
    assert "(3 completed, 2 interrupted, 1 failed, 1 crashed or still running)" in capsys.readouterr().out


def test_our_rows_lead_and_only_the_published_rows_of_our_attentions_follow(tmp_path):
    root = tmp_path / "outputs"
    write_run(root, "listops", "softmax", 0, 0.30)
    write_run(root, "listops", "performer", 0, 0.20)
    write_run(root, "listops", "spectral_shift", 0, 0.35)  # no published row
    out = tmp_path / "compare"
    build([root], out)
    html = (out / "index.html").read_text()
    lra = parse_tables(html)["lra-table"]
    kinds = [kind for kind, _ in lra[1:]]
    assert kinds == ["section", "ours", "ours", "ours", "section", *["published"] * (len(kinds) - 5)]
    assert [cells[0] for _, cells in lra[2:5]] == ["softmax", "performer", "spectral_shift"]
    shown = {cells[0].removesuffix(" [published]") for kind, cells in lra if kind == "published"}
    wanted = {r.label for r in PUBLISHED if r.attention in ("softmax", "performer")}
    assert shown == wanted and len(wanted) == 7  # softmax's four, performer's three
    # The rest are folded away: a <details> holds their table, closed, after ours.
    folded = parse_tables(html)["published-table"]
    assert {cells[0].removesuffix(" [published]") for _, cells in folded[1:]} == {
        r.label for r in PUBLISHED
    } - wanted
    details = re.search(r"<details>(.*?)</details>", html, re.S).group(1)
    assert 'id="published-table"' in details and 'id="lra-table"' not in details
    assert html.index('id="lra-table"') < html.index("<details>")
    # results.md: ours and the matching published rows first, the others at the end, folded.
    markdown = (out / "results.md").read_text()
    assert markdown.index("| softmax |") < markdown.index("Transformer (LRA paper, JAX)")
    assert markdown.index("### All runs") < markdown.index("<details>") < markdown.index("Sparse Trans.")
    assert markdown.rstrip().endswith("</details>")


def test_path_x_is_a_column_even_when_nothing_ran_it(tmp_path):
    root = tmp_path / "outputs"
    write_run(root, "listops", "softmax", 0, 0.30)
    out = tmp_path / "compare"
    build([root], out)
    tables = parse_tables((out / "index.html").read_text())
    for key in ("lra-table", "published-table"):
        header = tables[key][0][1]
        assert header.index("Path-X") == header.index("Pathfinder") + 1, key
    assert row(tables["lra-table"], "softmax")[0][6] == "—"
    assert "| Path-X |" in (out / "results.md").read_text()
    # A Path-X run fills the column, and is no part of the five-task average.
    write_run(root, "pathx", "softmax", 0, 0.55)
    build([root], out)
    softmax = row(parse_tables((out / "index.html").read_text())["lra-table"], "softmax")[0]
    assert softmax[6] == "55.00 (n=1)" and softmax[7] == "30.00*"


def test_accuracy_against_speed_and_memory_per_task_with_error_bars_over_seeds(tmp_path):
    pytest.importorskip("plotly")
    root = tmp_path / "outputs"
    for seed, (acc, speed, mib) in enumerate(((0.30, 10.0, 1000), (0.34, 12.0, 1200))):
        write_run(root, "listops", "softmax", seed, acc, speed=speed, memory=mib * 2**20)
    write_run(root, "listops", "nystrom", 0, 0.40, speed=30.0, memory=300 * 2**20)
    write_run(root, "listops", "nystrom", 1, 0.99, speed=99.0, status="interrupted")  # not a seed
    write_run(root, "image", "softmax", 0, 0.50)
    out = tmp_path / "compare"
    build([root], out)
    html = (out / "index.html").read_text()
    figures = titled(plotly_figures(html), "accuracy against speed and memory")
    assert [f["layout"]["title"]["text"].split(":")[0] for f in figures] == ["ListOps", "Image"]
    points = {(t["name"], t["xaxis"]): t for t in figures[0]["data"]}
    assert set(points) == {(n, x) for n in ("softmax", "nystrom") for x in ("x", "x2")}
    speed, memory = points[("softmax", "x")], points[("softmax", "x2")]
    assert speed["x"] == [11.0] and speed["y"] == pytest.approx([32.0])
    assert speed["error_x"]["array"] == pytest.approx([1.4142135])  # std of 10 and 12 steps/s
    assert speed["error_y"]["array"] == pytest.approx([2.8284271])  # std of 30 % and 34 %
    assert memory["x"] == [1100.0] and memory["error_x"]["array"] == pytest.approx([141.42135])  # MiB
    one_seed = points[("nystrom", "x")]
    assert one_seed["x"] == [30.0] and one_seed["y"] == pytest.approx([40.0])
    assert one_seed["error_y"]["visible"] is False  # one seed: no spread to show
    assert "training steps/s" in figures[0]["layout"]["xaxis"]["title"]["text"]
    assert "peak memory, MiB" in figures[0]["layout"]["xaxis2"]["title"]["text"]
    assert html.index('id="tradeoff"') < html.index('id="speed"')  # right after the accuracy table


def test_curves_show_the_spread_over_seeds_and_keep_unfinished_runs_out_of_it(tmp_path):
    pytest.importorskip("plotly")
    root = tmp_path / "outputs"
    header = "epoch,step,train/loss,val/acc\n"
    for seed, (a, b) in enumerate(((0.2, 0.4), (0.4, 0.6))):
        write_run(root, "listops", "softmax", seed, b, csv=header + f"0,10,,{a}\n0,20,,{b}\n")
    write_run(root, "listops", "softmax", 2, 0.1, status="failed", csv=header + "0,10,,0.9\n")
    write_run(root, "listops", "nystrom", 0, 0.5, csv=header + "0,10,,0.3\n0,20,,0.5\n")
    out = tmp_path / "compare"
    build([root], out)
    (figure,) = titled(plotly_figures((out / "index.html").read_text()), "ListOps: validation accuracy")
    traces = {t.get("name"): t for t in figure["data"]}
    mean = traces["softmax (mean ± std, 2 seeds)"]
    assert mean["x"] == [10, 20] and mean["y"] == pytest.approx([30.0, 50.0])
    band = [t for t in figure["data"] if t.get("legendgroup") == "softmax" and not t.get("name")]
    upper, lower = band
    assert lower["fill"] == "tonexty" and lower["fillcolor"].startswith("rgba(")
    assert upper["y"] == pytest.approx([30 + 14.142136, 50 + 14.142136])
    assert lower["y"] == pytest.approx([30 - 14.142136, 50 - 14.142136])
    # The failed seed is drawn apart, dotted; a single seed is its own curve.
    assert traces["softmax seed 2 (failed)"]["line"]["dash"] == "dot"
    assert traces["nystrom"]["y"] == pytest.approx([30.0, 50.0])


def test_ratio_bars_carry_the_spread_over_seeds(runs_root, tmp_path):
    pytest.importorskip("plotly")
    out = tmp_path / "compare"
    build([runs_root], out)
    (figure,) = titled(plotly_figures((out / "index.html").read_text()), "Relative to softmax")
    bars = {t["name"]: t for t in figure["data"]}
    assert set(bars) == {"train tokens/s", "eval tokens/s", "peak memory"}
    x = bars["train tokens/s"]["x"].index("ListOps<br>nystrom")
    assert bars["train tokens/s"]["y"][x] == pytest.approx(2.0)
    assert bars["train tokens/s"]["error_y"]["array"][x] == 0  # both nystrom seeds ran at 20 steps/s


def test_many_lines_stay_distinguishable():
    """18 attentions or benchmark variants: each line a colour of its own, and a dash and a marker that
    differ from its neighbours'."""
    pytest.importorskip("plotly")
    labels = [f"variant{i}" for i in range(18)]
    colour, dash, symbol = plots.colours(labels), plots.dashes(labels), plots.symbols(labels)
    assert len(set(colour.values())) == 18
    assert all(dash[a] != dash[b] and symbol[a] != symbol[b] for a, b in pairwise(labels))
    rows = [
        {"variant": v, "n": n, "time_s": (i + 1) * n / 1e4} for i, v in enumerate(labels) for n in (256, 512)
    ]
    (figure,) = plotly_figures(
        "<body>" + "".join(plots.bench_figures(rows, "n", ["variant"], ["time_s"], "efficiency"))
    )
    lines = [(t["line"]["color"], t["line"]["dash"]) for t in figure["data"]]
    assert len(figure["data"]) == 18 and len({c for c, _ in lines}) == 18
