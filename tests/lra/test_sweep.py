"""Hydra multirun sweeps: every run in its own directory with its results.json, failures recorded and
not fatal, the joblib launcher for local parallelism, and the SLURM launcher config.

``tiny_sweep`` (tests/helpers/sweeps.py) is shared with the dashboard and W&B tests: it runs once per
test session and leaves its run directories under pytest's base temporary directory.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers.cli import REPO, run_cli
from tests.helpers.listops import tiny_listops
from tests.helpers.sweeps import sweep_attentions, tiny_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict[str, Path]:
    return tiny_sweep(tmp_path_factory.getbasetemp())


def load(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_grid_runs_each_land_in_their_own_directory(sweep):
    runs = sorted(p for p in sweep["grid"].iterdir() if p.is_dir())
    attentions = sweep_attentions()
    assert len(runs) == 2 * len(attentions)
    seen = set()
    for run in runs:
        record = load(run)
        assert record["status"] == "completed", record["error"]
        assert record["run_dir"] == str(run)
        assert run.name.endswith(f"_{record['task']}_{record['attention']}_seed{record['seed']}")
        assert (run / "csv" / "version_0" / "metrics.csv").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        seen.add((record["attention"], record["seed"]))
    assert seen == {(a, s) for a in attentions for s in (0, 1)}
    assert (sweep["grid"] / "multirun.yaml").is_file()


def test_failed_run_is_recorded_and_does_not_stop_the_sweep(sweep):
    failed, ok = sorted(p for p in sweep["mixed"].iterdir() if p.is_dir() and not p.name.startswith("."))
    bad = load(failed)
    assert bad["status"] == "failed" and "model.vocab_size=4" in bad["error"]
    assert bad["config"]["model"]["vocab_size"] == 4
    good = load(ok)
    assert good["status"] == "completed" and good["global_step"] == 2


def test_sweep_with_a_failed_run_exits_non_zero_after_the_others(sweep):
    """Hydra returns normally after a sweep whatever its runs did; a failed run must show in the exit
    code (scripts and CI), but only once every other run has finished."""
    out = sweep["mixed_stderr"].read_text()
    assert out.startswith("exit 1\n")
    assert "1 of 2 runs of the sweep did not complete" in out and "model.vocab_size=4" in out
    ok = [p for p in sweep["mixed"].iterdir() if p.is_dir() and load(p)["status"] == "completed"]
    assert len(ok) == 1  # the other run still ran to the end
    # A table of the sweep's runs before the verdict, each run's result in its line.
    table = out[out.index(f"sweep {sweep['mixed']}: 2 runs") :].splitlines()
    assert table[1].split() == ["task", "attention", "seed", "status", "best", "val", "%", "test", "%", "run"]
    statuses = sorted(line.split()[3] for line in table[2:4])
    assert statuses == ["completed", "failed"]
    done = next(line for line in table[2:4] if "completed" in line)
    assert f"{100 * load(ok[0])['test_acc']:.2f}" in done and ok[0].name in done


def test_joblib_launcher_runs_jobs_at_the_same_time(sweep):
    assert "JoblibLauncher" in (sweep["grid"] / "multirun.yaml").read_text()
    spans = [
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in map(load, sorted(p for p in sweep["grid"].iterdir() if p.is_dir()))
    ]
    # With 2 jobs, the first two runs start before either finishes.
    (start0, end0), (start1, end1) = spans[:2]
    assert start1 < end0 and start0 < end1


def compose_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_config_asks_for_the_trainers_gpus():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the optional extra `slurm`")
    cfg = compose_hydra("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.timeout_min > 60 and launcher.partition is None
    single = compose_hydra("hydra/launcher=slurm").hydra.launcher
    assert (single.gpus_per_node, single.tasks_per_node, single.nodes) == (1, 1, 1)


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path, listops_args):
    """The submitit launcher end to end, with its local executor standing in for SLURM."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the optional extra `slurm`")
    sweep_dir = tmp_path / "submitit"
    run_cli(
        "-m", *listops_args, "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
    )  # fmt: skip
    records = [load(p) for p in sorted(sweep_dir.glob("*_listops_*"))]
    assert [r["seed"] for r in records] == [0, 1]
    assert all(r["status"] == "completed" for r in records)


def test_a_sweep_whose_runs_are_refused_exits_non_zero(tmp_path):
    """Run again into the same sweep folder, both runs find their folders taken: they write nothing
    there, and the sweep exits 1 naming them (before, it exited 0)."""
    args = [*tiny_listops(tmp_path / "data"), "trainer.max_steps=2", "test=false", "logger=none"]
    sweep = [f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    run_cli("-m", *args, "seed=0,1", *sweep, cwd=tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("results.json")}
    again = run_cli("-m", *args, "seed=0,1", *sweep, cwd=tmp_path, check=False)
    assert again.returncode == 1 and "2 of 2 runs of the sweep did not complete" in again.stderr
    assert again.stderr.count("refused: the run directory") == 2
    assert {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("results.json")} == before
