"""Input from others, as an attacker would write it: a run folder (results.json, Hydra's config,
checkpoints, CSV logs) given to ``lra.bench fidelity --checkpoint`` or to the dashboard, and the
Pathfinder metadata rows. Nothing in such input may run code, read outside where it belongs, or stop
the tool with a traceback; one bad run never hides the others."""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shlex
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lra.bench import fidelity
from lra.bench.capture import load_checkpoint_model, load_weights, run_config
from lra.errors import CheckpointError, ConfigError
from tests.helpers.listops import tiny_listops
from tests.helpers.runs import compose_run


# -- lra.bench fidelity --checkpoint ------------------------------------------------------------------
def payload(marker: str, **_ignored) -> None:
    """What an attacker's ``_target_`` would call; the tests check that it never runs."""
    Path(marker).write_text("the payload ran")


PAYLOAD = f"{__name__}.payload"


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> tuple[dict, dict]:
    """A tiny ListOps run's resolved config (as results.json records it) and its model's weights as
    LRAModule saves them (``model.`` prefix)."""
    from lra.train import build_model

    tmp = tmp_path_factory.mktemp("genuine")
    cfg = compose_run(*tiny_listops(tmp / "data"), f"cache_dir={tmp / 'cache'}", "model.depth=1")
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    return OmegaConf.to_container(cfg, resolve=True), state


def write_checkpoint_run(root: Path, config: dict, state: dict, **extra) -> Path:
    """``<root>/checkpoints/last.ckpt`` beside a results.json recording ``config``."""
    import pytorch_lightning as pl

    (root / "checkpoints").mkdir(parents=True)
    (root / "results.json").write_text(json.dumps({"status": "completed", "config": config}))
    ckpt = root / "checkpoints" / "last.ckpt"
    content = {
        "state_dict": state,
        "global_step": 8,
        "epoch": 1,
        "pytorch-lightning_version": pl.__version__,
        "hyper_parameters": {"num_classes": config["model"]["num_classes"]},
    }
    torch.save({**content, **extra}, ckpt)
    return ckpt


def test_a_genuine_checkpoint_loads_its_weights(tmp_path, genuine):
    config, state = genuine
    model, _cfg = load_checkpoint_model(write_checkpoint_run(tmp_path / "run", config, state))
    loaded = model.state_dict()
    assert loaded.keys() == {k.removeprefix("model.") for k in state}
    assert all(torch.equal(loaded[k.removeprefix("model.")], v) for k, v in state.items())


def test_a_genuine_checkpoint_is_captured_on_its_own_validation_data(tmp_path, genuine):
    from lra.bench.capture import capture_checkpoint

    config, state = genuine
    captured = capture_checkpoint(write_checkpoint_run(tmp_path / "run", config, state), batch_size=4)
    assert list(captured) == ["layer0"] and captured["layer0"][0][0].shape[:2] == (4, 2)


def _nest(config: dict, path: str, value) -> dict:
    config = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return config


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model._target_", PAYLOAD),
        ("attention._target_", PAYLOAD),
        ("data._target_", PAYLOAD),
        ("model.head_hidden_dim", {"_target_": PAYLOAD}),  # a knob whose value builds something
        ("attention.dropout", {"inner": [{"_target_": PAYLOAD}]}),  # deeper, inside a list
        ("data.generate.extra", {"_target_": PAYLOAD}),
        ("attention._target_", "attention.nystrom.NystromAttention"),  # registered, but not softmax's
        ("data._target_", "data.image.ImageDataModule"),  # another task's data module
        ("model.embedding", "${oc.create:{_target_: " + PAYLOAD + ", marker: 'MARKER'}}"),  # a resolver
    ],
)
def test_fidelity_builds_only_what_the_registries_name(tmp_path, genuine, key, value):
    config, state = genuine
    marker = tmp_path / "pwned"
    if isinstance(value, dict):
        value = json.loads(json.dumps(value).replace('"_target_": ', f'"marker": "{marker}", "_target_": '))
    elif "MARKER" in value:
        value = value.replace("MARKER", str(marker))
    config = _nest(config, key, value)
    for group in ("model", "attention", "data"):
        config[group].setdefault("marker", str(marker))  # the payload's argument, were it called
    ckpt = write_checkpoint_run(tmp_path / "run", config, state)
    with pytest.raises(ConfigError) as err:
        load_checkpoint_model(ckpt)
    message = str(err.value)
    assert str(tmp_path / "run" / "results.json") in message and "\n" not in message
    assert key.split(".")[0] in message
    assert not marker.exists(), "the recorded config called a function"


def test_fidelity_refuses_an_unknown_attention_or_task_name(tmp_path, genuine):
    config, state = genuine
    for key, name in (("attention.name", "../../tmp/evil"), ("task.name", "nosuchtask")):
        root = tmp_path / key
        with pytest.raises(ConfigError, match=r"results\.json: (attention|data)\._target_"):
            load_checkpoint_model(write_checkpoint_run(root, _nest(config, key, name), state))


def test_hydra_config_of_a_crashed_run_is_checked_after_resolving(tmp_path, genuine):
    """No results.json: Hydra's unresolved copy is read (without YAML aliases), with no resolver but
    oc.env, and checked once its interpolations are resolved, so nothing can smuggle a _target_ in."""
    config, state = genuine
    run = tmp_path / "run"
    ckpt = write_checkpoint_run(run, config, state)
    (run / "results.json").unlink()
    (run / ".hydra").mkdir()
    hydra_config = _nest(config, "data.generate", "${oc.create:{_target_: os.system}}")
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(hydra_config)))
    with pytest.raises(ConfigError, match=r"config\.yaml: data\.generate uses the resolver 'oc\.create'"):
        run_config(ckpt)
    # Through a key reference instead: resolved, then refused for what it resolved to.
    hydra_config = _nest(config, "data.generate", "${data.evil}")
    hydra_config["data"]["evil"] = {"_target_": "os.system"}
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(hydra_config)))
    with pytest.raises(ConfigError, match=r"config\.yaml: data\.(generate|evil)\._target_='os\.system'"):
        run_config(ckpt)
    # A genuine saved config (data_dir from the environment, references between keys) still works.
    raw = _nest(config, "data_dir", "${oc.env:LRA_TEST_DATA_DIR,/nowhere}")
    raw["data"]["max_len"] = "${model.max_len}"
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(raw)))
    assert run_config(ckpt).data.max_len == config["model"]["max_len"]
    (run / ".hydra" / "config.yaml").write_text("a: &x [1, 2]\nb: [*x, *x]\n")
    with pytest.raises(ConfigError, match="anchors and aliases"):
        run_config(ckpt)


class Malicious:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_a_checkpoint_carrying_a_malicious_pickle_is_refused(tmp_path, genuine):
    config, state = genuine
    marker = tmp_path / "pwned"
    ckpt = write_checkpoint_run(tmp_path / "run", config, state, extra=Malicious(marker))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_model(ckpt)
    assert str(ckpt) in str(err.value) and "posix.system" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists(), "loading the checkpoint ran its payload"


def test_fidelity_cli_says_in_one_line_what_is_not_a_checkpoint(tmp_path, genuine, capsys):
    config, state = genuine
    ckpt = write_checkpoint_run(tmp_path / "run", config, state)
    cases = {
        "text.ckpt": lambda p: p.write_text("not a checkpoint\n"),
        "list.ckpt": lambda p: p.write_bytes(pickle.dumps([1, 2, 3], protocol=2)),
        "no_state.ckpt": lambda p: torch.save({"epoch": 1, "global_step": 3}, p),
        "other_prefix.ckpt": lambda p: torch.save({"state_dict": {"encoder.w": torch.zeros(2)}}, p),
        "wrong_shapes.ckpt": lambda p: torch.save(
            {"state_dict": {"model.embed.tokens.weight": torch.zeros(1)}}, p
        ),
        "missing.ckpt": lambda p: None,
    }
    for name, write in cases.items():
        path = ckpt.parent / name
        write(path)
        code = fidelity.main(["--checkpoint", str(path), "--regimes", "none", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert code == 1 and err.startswith("error: ") and str(path) in err, (name, err)
        assert "\n" not in err and "Traceback" not in err, (name, err)
    with pytest.raises(CheckpointError, match="no model weights"):
        load_weights(ckpt.parent / "no_state.ckpt")


# -- Pathfinder metadata rows -------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_pathfinder_rows_naming_images_outside_data_path_are_refused(tmp_path, how):
    import numpy as np
    from PIL import Image

    from data.pathfinder import PathfinderDataModule, read_metadata
    from lra.errors import DataFormatError
    from tests.helpers.formats import write_pathfinder

    difficulty = "curv_contour_length_14"
    release = write_pathfinder(tmp_path / "pathfinder32" / difficulty, n=20)
    secret = tmp_path / "outside" / "secret.png"  # a valid image, but not the data set's
    secret.parent.mkdir()
    Image.fromarray(np.full((32, 32), 7, np.uint8), mode="L").save(secret)
    row = {
        "dotdot": "imgs/0 ../../../../outside/secret.png 0 1 14 4",
        "absolute": f"{secret.parent} secret.png 0 1 14 4",
        "symlink": "imgs/0 link.png 0 1 14 4",
    }[how]
    (release / "imgs" / "0" / "link.png").symlink_to(secret)
    meta = release / "metadata" / "1.npy"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([*lines, row]) + "\n")

    with pytest.raises(DataFormatError, match=rf"^{meta}:{len(lines) + 1}: image .* is outside"):
        read_metadata(release)
    entries, skipped = read_metadata(release, strict=False)
    assert skipped == 1 and len(entries) == 20
    dm = PathfinderDataModule(
        path=str(release),
        generated_path=str(tmp_path / "generated"),
        cache_dir=str(tmp_path / "cache"),
        batch_size=8,
        workers=1,
        strict=False,
    )
    dm.setup()
    images = np.concatenate(
        [np.stack([s[i]["input_ids"].numpy() for i in range(len(s))]) for s in dm.splits.values()]
    )
    assert len(images) == 19  # 20 listed, one empty file; the outside image is not among them
    assert not (images == 7).all(axis=1).any()


# -- the dashboard -------------------------------------------------------------------------------------
def _dashboard(root: Path, out: Path, capsys) -> tuple[str, str, str]:
    """``python -m lra.compare root --out out``: (index.html, results.md, stderr); exit 0 required."""
    from lra.compare.__main__ import main as compare_main

    assert compare_main([str(root), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return (out / "index.html").read_text(), (out / "results.md").read_text(), err


def _md_cells(line: str) -> list[str]:
    """A Markdown table row's cells, split at the pipes no backslash escapes."""
    cells, cell, escaped = [], "", False
    for c in line.strip()[1:-1]:
        if c == "|" and not escaped:
            cells.append(cell)
            cell = ""
        else:
            cell += c
        escaped = c == "\\" and not escaped
    return [*cells, cell]


# Backslash escapes of ASCII punctuation and entity references: what a CommonMark reader turns back
# into the characters they stand for.
_MD_ESCAPE_OR_ENTITY = re.compile(
    r"\\([!-/:-@\[-`{-~])|(&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});)"
)


def _md_read(text: str) -> str:
    """Literal Markdown text as a reader shows it (whichever escape form the writer chose)."""
    return _MD_ESCAPE_OR_ENTITY.sub(lambda m: m.group(1) or unescape(m.group(2)), text).strip()


class _Page(HTMLParser):
    """What a browser makes of a page: its elements, its text (entities decoded) and its scripts."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._inside: str | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("script", "style"):
            self._inside = tag

    def handle_endtag(self, tag):
        if tag == self._inside:
            self._inside = None

    def handle_data(self, data):
        if self._inside == "script":
            self.scripts.append(data)
        elif self._inside is None:
            self.text.append(data)


def _strings(value):
    """Every string in a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)


def _crashed_run(run_dir: Path, yaml_text: str) -> Path:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml_text)
    return run_dir


def test_dashboard_never_resolves_interpolations_of_a_run_config(tmp_path, monkeypatch, capsys):
    """A crashed run's Hydra config is read raw: ``${oc.env:...}`` stays the text it is and never
    becomes the environment of whoever builds the dashboard."""
    from lra.compare.collect import collect

    monkeypatch.setenv("LRA_TEST_SECRET", "s3cr3t-token-value")
    root = tmp_path / "outputs"
    for name, dim in (("plain", "64"), ("plain2", "64"), ("nosy", "${oc.env:LRA_TEST_SECRET}")):
        _crashed_run(
            root / name,
            f"seed: 0\ntask:\n  name: listops\nattention:\n  name: softmax\nmodel:\n  dim: {dim}\n"
            "data_dir: ${oc.env:LRA_TEST_SECRET}\nnote: ${oc.env:LRA_TEST_SECRET,fallback}\n"
            "trainer:\n  max_steps: 100\noptim:\n  total_steps: ${trainer.max_steps}\n",
        )
    runs = {r.run_dir.name: r for r in collect([root])}
    assert runs["nosy"].config["model"]["dim"] == "${oc.env:LRA_TEST_SECRET}"
    assert runs["nosy"].config["optim"]["total_steps"] == 100  # a reference to its own key is looked up
    html, markdown, _err = _dashboard(root, tmp_path / "compare", capsys)
    assert "s3cr3t" not in html and "s3cr3t" not in markdown
    assert "dim=${oc.env:LRA_TEST_SECRET}" in markdown  # shown as the plain text it is


HOSTILE = "<script>alert(1)</script>"


def test_run_fields_are_escaped_in_results_md_and_index_html(tmp_path, capsys):
    from lra import results
    from lra.compare import plots
    from lra.results import RunRecord
    from tests.helpers.compare import plotly_figures, write_run

    root = tmp_path / "outputs"
    write_run(root, "listops", "softmax", 0, 0.30)
    hostile = write_run(root, "listops", "nystrom", 0, 0.35)
    record = json.loads((hostile / "results.json").read_text())
    record["attention"] = HOSTILE
    record["config"]["attention"]["name"] = HOSTILE
    record["config"]["model"]["head"] = "<img src=x onerror=alert(2)> | `code` [link](https://example.com)"
    (hostile / "results.json").write_text(json.dumps(record))
    write_run(root, "listops", HOSTILE, 1, 0.35)  # a second seed: the config value becomes a label
    failed = root / "failed"
    failed.mkdir()
    error = "Boom | col\n<b>bold</b> `tick` ![img](https://example.com/x.png)"
    results.write(failed, RunRecord(status="failed", task="listops", attention=HOSTILE, seed=2, error=error))

    html, markdown, _err = _dashboard(root, tmp_path / "compare", capsys)
    # index.html: every hostile string arrives as text, in the tables and in the plots alike. Read as a
    # browser and plotly read it, whichever escape form our writer or plotly's serialiser chose.
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>bold" not in html
    page = _Page(html)
    assert not {"img", "b"} & set(page.tags)  # the hostile tags made no element
    assert HOSTILE in "".join(page.text)  # the tables show it as typed
    assert all("Plotly.newPlot" in script for script in page.scripts if "alert(" in script)  # plot data
    if plots.available():
        labels = [s for s in _strings(plotly_figures(html)) if "alert(" in s]
        assert labels and not [s for s in labels if "<script" in s or "<img" in s or "<b>bold" in s]
        assert all(HOSTILE in unescape(s) for s in labels)  # plotly shows it as typed
    # results.md: no raw HTML, no live link or image, every table row as wide as its header.
    for raw in ("<script", "<img", "<b>", "`code`"):
        assert raw not in markdown, raw
    assert not re.search(r"(?<!\\)\[[^\]]*\]\(https://", markdown), "a live link or image"
    cells = [_md_read(c) for line in markdown.splitlines() if line.startswith("|") for c in _md_cells(line)]
    assert HOSTILE in cells  # read back as typed
    widths = {}
    table = None
    for line in markdown.splitlines():
        if line.startswith("### "):
            table = line
        elif line.startswith("|"):
            widths.setdefault(table, set()).add(len(_md_cells(line)))
    assert widths and all(len(w) == 1 for w in widths.values()), widths
    row = next(line for line in markdown.splitlines() if "Boom" in line)
    assert " ".join(error.splitlines()) in [_md_read(c) for c in _md_cells(row)]  # one line, as typed


def _write_csv(run_dir: Path, content: bytes) -> Path:
    path = run_dir / "csv" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _hostile_metrics_logs(root: Path) -> tuple[tuple[Path, Path], ...]:
    """(run dir, metrics.csv) of three runs with hostile metrics logs."""
    from tests.helpers.compare import write_run

    header = b"epoch,step,train/loss,val/acc\n"
    # Metrics logs: bytes that are not UTF-8; steps and values that are no finite number; a long log
    # with a NUL byte and a line over the size limit in it.
    latin = write_run(root, "listops", "softmax", 2, 0.32)
    latin_csv = _write_csv(latin, header + b"0,9,2.3,\n0,19,2\xe9.0,\n0,29,1.9,0.5\n")
    infinite = write_run(root, "listops", "softmax", 3, 0.33)
    infinite_csv = _write_csv(
        infinite, header + b"0,inf,2.3,\n0,nan,2.2,\n0,-1e400,2.1,\n0,19,inf,\n0,29,1.8,0.4\n0,1e400,1.0,\n"
    )
    long = write_run(root, "listops", "softmax", 4, 0.34)
    rows = b"".join(b"0,%d,%f,\n" % (i, 1 / (i + 1)) for i in range(20000))
    tail = b"0,20001,1.0\x00,\n0,20002," + b"9" * (2**20 + 10) + b",\n0,20004,0.5,0.9\n"
    long_csv = _write_csv(long, header + rows + tail)
    return (latin, latin_csv), (infinite, infinite_csv), (long, long_csv)


def _hostile_records(root: Path) -> tuple[Path, dict[int, Path]]:
    """results.json: numbers beyond float, nesting deeper than anything sensible, junk where a
    mapping is expected, a directory of that name, a FIFO where the log would be. Returns the run
    with huge numbers and those nested (by depth)."""
    from tests.helpers.compare import write_run

    huge = write_run(root, "listops", "softmax", 5, 0.35)
    record = json.loads((huge / "results.json").read_text())
    record.update(global_step=int("9" * 4000), train_steps_per_s=1e308, peak_memory_bytes=int("1" * 400))
    record["config"]["trainer"] = "not a mapping"
    record["data"] = {"source": {"nested": [1]}, "fingerprint": 12345, "generator": {"seed": [1]}}
    (huge / "results.json").write_text(json.dumps(record))
    deep = {}
    for depth, seed in ((100, 6), (5000, 8)):  # beyond any sensible config; beyond Python's recursion
        deep[depth] = write_run(root, "listops", "softmax", seed, 0.36)
        text = (deep[depth] / "results.json").read_text()
        nested = '{"a": ' * depth + "1" + "}" * depth
        (deep[depth] / "results.json").write_text(text.replace('"dim": 64', f'"dim": 64, "x": {nested}'))
    (root / "dir_results" / "results.json").mkdir(parents=True)
    _crashed_run(root / "dir_results", "task:\n  name: listops\nattention:\n  name: softmax\n")
    fifo = write_run(root, "listops", "softmax", 7, 0.37)
    (fifo / "csv" / "version_1").mkdir()
    os.mkfifo(fifo / "csv" / "version_1" / "metrics.csv")
    return huge, deep


def _hostile_configs_and_links(root: Path, outside: Path) -> Path:
    """Hydra configs: an alias bomb (a few lines, millions of nodes), keys of mixed types, a list; links
    out of the run directory (to files in ``outside``) and among runs. Returns the linking run."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    _crashed_run(root / "bomb", bomb)
    _crashed_run(
        root / "mixed",
        "task:\n  name: listops\nattention:\n  name: softmax\nmodel:\n  x:\n  - 1: a\n    b: c\n",
    )
    _crashed_run(root / "listed", "- 1\n- 2\n")
    # Links out of the run directory: files that are not the run's to show.
    outside.mkdir()
    (outside / "secret.yaml").write_text("model:\n  api_key: hunter2-secret\n")
    (outside / "metrics.csv").write_text("step,val/acc\n1,0.123456789\n")
    linked = _crashed_run(root / "linked", "task:\n  name: listops\n")
    (linked / ".hydra" / "config.yaml").unlink()
    (linked / ".hydra" / "config.yaml").symlink_to(outside / "secret.yaml")
    (linked / "csv" / "version_0").mkdir(parents=True)
    (linked / "csv" / "version_0" / "metrics.csv").symlink_to(outside / "metrics.csv")
    # A symbolic-link loop among the runs.
    (root / "loop").symlink_to(root / "loop")
    (root / "ping").symlink_to(root / "pong")
    (root / "pong").symlink_to(root / "ping")
    return linked


def test_hostile_run_folders_cost_a_warning_never_the_dashboard(tmp_path, capsys):
    """Each of these alone used to stop ``python -m lra.compare`` with a traceback (or hang it); now
    the bad file (or row) is skipped with one warning line naming it, and the rest is drawn."""
    from lra.compare.collect import read_curves
    from tests.helpers.compare import parse_tables, write_run

    root = tmp_path / "outputs"
    good = write_run(root, "listops", "softmax", 0, 0.30)
    (latin, latin_csv), (infinite, infinite_csv), (long, long_csv) = _hostile_metrics_logs(root)
    huge, deep = _hostile_records(root)
    linked = _hostile_configs_and_links(root, tmp_path / "elsewhere")
    # Two speeds whose mean is beyond float.
    for run_dir in (huge, infinite):
        record = json.loads((run_dir / "results.json").read_text())
        record["train_steps_per_s"] = 1.5e308
        (run_dir / "results.json").write_text(json.dumps(record))

    html, markdown, err = _dashboard(root, tmp_path / "compare", capsys)
    warnings = err.strip().splitlines()
    for path in (latin_csv, infinite_csv, long_csv, root / "bomb" / ".hydra" / "config.yaml"):
        assert any(line.startswith("warning: ") and str(path) in line for line in warnings), (path, err)
    assert str(good) not in err
    assert "hunter2" not in html + markdown and "0.123456" not in html and "12.3457" not in html
    assert str(linked / ".hydra" / "config.yaml") in err
    # The bad rows are gone, the good ones drawn.
    assert read_curves(latin)["train/loss"] == [(9, 2.3), (29, 1.9)]
    assert read_curves(infinite)["train/loss"] == [(29, 1.8)]
    assert read_curves(infinite)["val/acc"] == [(29, 0.4)]
    long_curves = read_curves(long)
    assert len(long_curves["train/loss"]) == 20001 and long_curves["val/acc"] == [(20004, 0.9)]
    assert read_curves(good)["val/acc"] == [(49, 0.2), (99, 0.31)]
    tables = parse_tables(html)
    errors = {cells[-2]: cells[-1] for _, cells in tables["runs-table"][1:]}
    assert "nested deeper" in next(e for d, e in errors.items() if d.startswith(deep[100].name))
    assert "recursion" in next(e for d, e in errors.items() if d.startswith(deep[5000].name))
    assert any("is a directory" in e for d, e in errors.items() if d.startswith("dir_results"))
    assert "9999" not in html.split('id="runs"')[1]  # the step beyond float is no measurement
    assert "softmax" in markdown


def test_unreadable_run_files_cost_a_warning(tmp_path, capsys, monkeypatch):
    import builtins

    from tests.helpers.compare import write_run

    root = tmp_path / "outputs"
    write_run(root, "listops", "softmax", 0, 0.30)
    locked = write_run(root, "listops", "softmax", 1, 0.31)
    crashed = _crashed_run(root / "crashed", "task:\n  name: listops\n")
    denied = {
        locked / "csv" / "version_0" / "metrics.csv",
        locked / "results.json",
        crashed / ".hydra" / "config.yaml",
    }

    def guarded_open(file, *args, **kwargs):  # as for files of another user (the tests may run as root)
        if Path(file) in denied:
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr("lra.compare.collect.open", guarded_open, raising=False)
    monkeypatch.setattr("lra.run_files.open", guarded_open, raising=False)
    html, _markdown, err = _dashboard(root, tmp_path / "compare", capsys)
    assert str(locked / "csv" / "version_0" / "metrics.csv") in err
    assert str(crashed / ".hydra" / "config.yaml") in err
    assert "Permission denied" in html  # the locked run's results.json: a failed run saying why


# -- what a run is: training, its continuation, a fine-tune, an evaluation ----------------------------
def _source_run(root: Path) -> tuple[Path, str]:
    from tests.helpers.compare import write_run

    source = write_run(root, "listops", "softmax", 0, 0.30)
    (source / "checkpoints").mkdir()
    (source / "checkpoints" / "last.ckpt").write_bytes(b"")
    return source, str(source / "checkpoints" / "last.ckpt")


def _derived_run(run_dir: Path, ckpt: str, test_acc: float | None, **fields) -> Path:
    from lra import results
    from lra.results import RunRecord
    from tests.helpers.compare import config

    run_dir.mkdir(parents=True)
    cfg = {**config("listops", "softmax", 0), "ckpt_path": ckpt, **fields.pop("config", {})}
    record = RunRecord(status="completed", task="listops", attention="softmax", seed=0, config=cfg, **fields)
    record.take({"test_acc": test_acc, "global_step": 100})
    results.write(run_dir, record)
    return run_dir


@pytest.mark.parametrize(
    "evaluation",
    [
        {"kind": "evaluation", "config": {"train": False}},  # as runs record it now
        {"resumed_from": "CKPT", "config": {"train": False}},  # an older record: no kind yet
        None,  # killed before its results.json: Hydra's config says train: false
    ],
)
def test_an_evaluation_of_a_checkpoint_neither_hides_nor_joins_its_training_run(tmp_path, capsys, evaluation):
    from lra.compare.collect import collect
    from tests.helpers.compare import parse_tables, row

    root = tmp_path / "outputs"
    source, ckpt = _source_run(root)
    if evaluation is None:
        evaluated = _crashed_run(
            root / "evaluated",
            f"seed: 0\ntask:\n  name: listops\nattention:\n  name: softmax\ntrain: false\nckpt_path: {ckpt}\n",
        )
    else:
        fields = json.loads(json.dumps(evaluation).replace('"CKPT"', json.dumps(ckpt)))
        evaluated = _derived_run(root / "evaluated", ckpt, 0.90, tested_checkpoint=ckpt, **fields)
    assert {r.run_dir for r in collect([root])} == {source, evaluated}
    html, markdown, _err = _dashboard(root, tmp_path / "compare", capsys)
    tables = parse_tables(html)
    assert row(tables["lra-table"], "softmax")[0][1] == "30.00 (n=1)"  # the training run's own test
    assert [cells[0] for _, cells in tables["runs-table"][1:]] == ["ListOps"]
    evaluations = tables["evaluations-table"]
    assert len(evaluations) == 2 and ckpt in evaluations[1][1]
    assert ("90.00" in evaluations[1][1]) == (evaluation is not None)
    assert "### Checkpoint evaluations" in markdown


@pytest.mark.parametrize("recorded", ["initialized_from", "old_record", "crashed"])
def test_a_fine_tune_is_a_run_of_its_own(tmp_path, capsys, recorded):
    from lra.compare.collect import collect, read_curves
    from tests.helpers.compare import config, parse_tables, row

    root = tmp_path / "outputs"
    source, ckpt = _source_run(root)
    if recorded == "crashed":
        hydra_config = {**config("listops", "softmax", 0), "resume_check": False, "ckpt_path": ckpt}
        tuned = _crashed_run(root / "tuned", json.dumps(hydra_config))  # (JSON is YAML)
    elif recorded == "initialized_from":
        tuned = _derived_run(
            root / "tuned", ckpt, 0.50, initialized_from=ckpt, kind="training", config={"resume_check": False}
        )
    else:  # written before initialized_from existed: resumed_from, with resume_check false
        tuned = _derived_run(root / "tuned", ckpt, 0.50, resumed_from=ckpt, config={"resume_check": False})
    _write_csv(tuned, b"step,train/loss\n119,0.5\n")
    assert {r.run_dir for r in collect([root])} == {source, tuned}
    assert read_curves(tuned)["train/loss"] == [(119, 0.5)]  # not the source's curve continued
    html, _markdown, _err = _dashboard(root, tmp_path / "compare", capsys)
    tables = parse_tables(html)
    assert row(tables["lra-table"], "softmax")[0][1] == "30.00 (n=1)"
    tuned_row = row(tables["lra-table"], "softmax [fine-tuned=true]")[0][1]
    assert tuned_row == ("failed (1 of 1)" if recorded == "crashed" else "50.00 (n=1)")
    assert len(tables["runs-table"]) == 3 and "evaluations-table" not in tables


def test_only_a_completed_continuation_hides_the_run_it_continues(tmp_path):
    """A resume that was refused, failed or is still going stands for nothing yet."""
    from lra.compare.collect import collect

    root = tmp_path / "outputs"
    source, ckpt = _source_run(root)
    refused = _derived_run(root / "refused", ckpt, None, resumed_from=ckpt)
    record = json.loads((refused / "results.json").read_text())
    (refused / "results.json").write_text(json.dumps({**record, "status": "failed", "error": "ConfigError"}))
    assert {r.run_dir for r in collect([root])} == {source, refused}
    resumed = _derived_run(root / "resumed", ckpt, 0.40, resumed_from=ckpt)
    assert {r.run_dir for r in collect([root])} == {refused, resumed}


def test_a_resumed_fine_tune_is_still_a_fine_tune(tmp_path):
    from lra.compare.collect import collect

    root = tmp_path / "outputs"
    source, ckpt = _source_run(root)
    tuned = _derived_run(root / "tuned", ckpt, None, initialized_from=ckpt, config={"resume_check": False})
    (tuned / "checkpoints").mkdir()
    (tuned / "checkpoints" / "last.ckpt").write_bytes(b"")
    tuned_ckpt = str(tuned / "checkpoints" / "last.ckpt")
    record = json.loads((tuned / "results.json").read_text())
    (tuned / "results.json").write_text(json.dumps({**record, "status": "interrupted"}))
    resumed = _derived_run(root / "resumed", tuned_ckpt, 0.5, resumed_from=tuned_ckpt, initialized_from=ckpt)
    runs = {r.run_dir: r for r in collect([root])}
    assert set(runs) == {source, resumed} and runs[resumed].role == "fine-tune"


def test_runs_moved_together_are_still_one_run_and_one_run_named_twice_counts_once(tmp_path):
    from lra.compare.collect import collect

    root = tmp_path / "outputs"
    _source, ckpt = _source_run(root)
    _derived_run(root / "resumed", ckpt, 0.40, resumed_from=ckpt)
    moved = tmp_path / "elsewhere" / "org"
    moved.parent.mkdir()
    root.rename(moved)  # resumed_from now names a path that is gone
    assert [r.run_dir.name for r in collect([moved])] == ["resumed"]
    assert len(collect([moved / "resumed", moved / ".." / "org" / "resumed"])) == 1
    # The same checkpoint resumed twice: one run, the later one shown.
    again = _derived_run(moved / "again", ckpt, 0.45, resumed_from=ckpt)
    record = json.loads((again / "results.json").read_text())
    (again / "results.json").write_text(json.dumps({**record, "finished_at": "2999-01-01T00:00:00+00:00"}))
    assert [r.run_dir.name for r in collect([moved])] == ["again"]
