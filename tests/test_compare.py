"""The comparison dashboard on hand-made run directories: numbers, failed and crashed runs, mixed
configs, published rows, ratios to softmax, curves and benchmark files."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lra import results
from lra.compare import build, plots
from lra.compare.__main__ import main as compare_main
from lra.compare.collect import collect, read_curves
from lra.compare.published import PUBLISHED
from lra.results import RunRecord

# A 1x1 PNG, standing in for a benchmark's plot.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def config(task: str, attention: str, seed: int, dim: int = 64) -> dict:
    return {
        "seed": seed,
        "data_dir": f"/data/{seed}",
        "task": {"name": task},
        "attention": {"name": attention, "num_landmarks": 64}
        if attention != "softmax"
        else {"name": attention},
        "model": {"dim": dim, "vocab_size": 16 if task == "listops" else 256},
        "trainer": {"max_steps": 100},
        "data": {"seed": seed, "path": f"/data/{task}"},
        "logger": {"wandb": {"name": f"{task}/{attention}/{seed}"}},
    }


def write_run(
    root: Path, task: str, attention: str, seed: int, test_acc: float, speed: float = 10.0, **kw
) -> Path:
    run_dir = root / f"{task}_{attention}_{seed}_{kw.get('dim', 64)}"
    run_dir.mkdir(parents=True)
    record = RunRecord(
        status="completed",
        task=task,
        attention=attention,
        seed=seed,
        config=config(task, attention, seed, kw.get("dim", 64)),
        best_checkpoint=str(run_dir / "checkpoints" / "best.ckpt"),
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:00:12+00:00",
        run_dir=str(run_dir),
        data=kw.get("data"),
    )
    record.take(
        {
            "best_val_acc": test_acc + 0.01,
            "test_acc": test_acc,
            "global_step": 100,
            "train_steps_per_s": speed,
            "train_tokens_per_s": speed * 1000,
            "eval_tokens_per_s": speed * 3000,
            "peak_memory_bytes": kw.get("memory", 2**30),
            "peak_memory_kind": "cuda_max_allocated",
            "params_total": 1000,
            "wall_time_s": 12.0,
        }
    )
    results.write(run_dir, record)
    csv_dir = run_dir / "csv" / "version_0"
    csv_dir.mkdir(parents=True)
    (csv_dir / "metrics.csv").write_text(
        f"epoch,step,train/loss,val/acc\n0,9,2.3,\n0,49,,0.2\n0,59,2.0,\n0,99,,{test_acc + 0.01:.2f}\n"
    )
    return run_dir


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


class Tables(HTMLParser):
    """Rows of every <table id=...> in a page, as lists of cell texts, plus their row classes."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = (attrs.get("class") or "", [])
            self.tables[self._table].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row[1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_tables(html: str) -> dict[str, list[tuple[str, list[str]]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def row(table, first_cell: str, column: int | None = None):
    matches = [cells for _, cells in table if cells and cells[column or 0] == first_cell]
    assert matches, f"no row {first_cell!r} in {[c[:2] for _, c in table]}"
    return matches


def test_collect_reads_every_state_without_crashing(runs_root):
    runs = {r.run_dir.name: r for r in collect([runs_root])}
    assert len(runs) == 10
    assert runs["crashed"].status == "failed" and "no results.json" in runs["crashed"].error
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
    assert (report.runs, report.completed, report.failed) == (10, 6, 4)
    html = (out / "index.html").read_text()
    tables = parse_tables(html)

    lra = tables["lra-table"]
    header = lra[0][1]
    assert header[:7] == ["Model", "ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Avg"]
    softmax = row(lra, "softmax")[0]
    assert softmax[1] == "35.00 ± 7.07 (n=2)"  # mean ± sample std over the two seeds
    assert softmax[4] == "50.00 (n=1)" and softmax[6] == "42.50*"  # two of five tasks: marked average
    assert row(lra, "softmax [dim=128]")[0][1] == "45.00 (n=1)"  # a different model size stays apart
    assert row(lra, "nystrom")[0][1] == "40.00 ± 7.07 (n=2, 1 failed)"
    assert row(lra, "spectral_shift")[0][1] == "failed (1 of 1)"
    published = [cells for kind, cells in lra if kind == "published"]
    assert len(published) == len(PUBLISHED) and all("[published]" in cells[0] for cells in published)
    assert ["37.10", "65.02", "79.35", "38.20", "74.16", "58.77"] in [cells[1:] for cells in published]

    speed = tables["speed-table"]
    nystrom = row(speed, "nystrom", column=1)[0]
    assert nystrom[3:5] == ["20", "2.00×"] and nystrom[9:11] == ["512", "0.50×"]
    assert row(speed, "softmax [dim=128]", column=1)[0][4] == "1.00×"

    runs = tables["runs-table"]
    failed = [cells for kind, cells in runs if kind == "failed"]
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
    assert html.count('class="plotly-graph-div"') == 5  # ratio bars + (val acc, loss) x 2 tasks
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
    assert "spectral shift δ per layer and head" in html
    assert "spectral_shift seed 0 layer0 h0" in html and "spectral_shift seed 0 layer0 h1" in html
    assert 'layer0 delta"' not in html  # the mean over heads is not a head
    assert html.count('class="plotly-graph-div"') == 3  # val acc, loss, delta (no softmax: no ratio bars)


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
    assert "10 runs (6 completed, 4 failed)" in capsys.readouterr().out
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
    for row in PUBLISHED:
        assert abs(sum(row.accuracy.values()) / len(row.accuracy) - row.average) < 0.006, row.label


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


def test_how_an_attention_computes_does_not_split_rows():
    """Keys that resume across checkpoints (they change how a layer computes, not what) do not make
    a new dashboard row either, also against runs recorded before the key existed."""
    from lra.compare.variants import relevant
    from lra.resume import HOW_NOT_WHAT

    base = {"attention": {"name": "nystrom", "num_landmarks": 64}, "seed": 0}
    for key in HOW_NOT_WHAT:
        later = {**base, "attention": {**base["attention"], key: "native"}}
        assert relevant(later) == relevant(base)
    assert relevant({**base, "attention": {"name": "nystrom", "num_landmarks": 32}}) != relevant(base)
