"""W&B organisation, checked in the offline runs a sweep leaves behind: one run per run directory,
named task/attention/seed, grouped by task, tagged by attention, with the metric summaries declared
(best val/acc, final test/acc) and the speed and memory numbers of results.json. And through the CLI:
a resumed run continues the W&B run of the run it resumes (its id kept in the checkpoints), while a
fine-tune and a test of a checkpoint are W&B runs of their own."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from lra.loggers import WANDB_RUN_KEY, continued_run_id
from tests.helpers.cli import run_cli
from tests.helpers.listops import tiny_listops
from tests.helpers.sweeps import tiny_sweep

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")

BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of framed records
HEADER = 7  # file header (":W&B", magic, version) and record header (crc32, length, type) alike


def wandb_records(path: Path):
    """The protobuf records of an offline run's ``run-<id>.wandb`` file."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # too little room left for a header: the block is padded
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:  # full record
            yield _parse(chunk)
        elif kind == 2:  # first / middle / last fragments of a record spanning blocks
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield _parse(pending + chunk)


def _parse(raw: bytes):
    record = pb.Record()
    record.ParseFromString(raw)
    return record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: Path) -> dict:
    runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, f"{run_dir}: expected one offline W&B run, found {runs}"
    out = {"run": None, "config": {}, "summary": {}, "metrics": {}, "exit_code": None, "steps": []}
    for record in wandb_records(runs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "config":
            out["config"].update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "metric" and record.metric.name:
            out["metrics"][record.metric.name] = record.metric
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in record.history.item}
            if "train/loss" in row:
                out["steps"].append(row["trainer/global_step"])
    return out


def offline_run_id(run_dir: Path) -> str:
    """The W&B run id an offline run recorded (its run record, not its folder's name)."""
    return read_offline_run(run_dir)["run"].run_id


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory) -> list[Path]:
    grid = tiny_sweep(tmp_path_factory.getbasetemp())["grid"]
    return sorted(p for p in grid.iterdir() if p.is_dir())


def test_each_run_is_named_grouped_and_tagged(grid_runs):
    for run_dir in grid_runs:
        result = json.loads((run_dir / "results.json").read_text())
        task, attention, seed = result["task"], result["attention"], result["seed"]
        wb = read_offline_run(run_dir)
        # The tiny sweep's runs use experiment=quick: named, grouped and tagged apart from full runs.
        assert wb["run"].display_name == f"{task}/{attention}/{seed}/quick"
        assert wb["run"].run_group == f"{task}-quick"
        assert {task, attention, f"seed{seed}", "quick"} <= set(wb["run"].tags)
        # The resolved config travels with the run (a sweep's runs must not share one W&B run).
        assert wb["config"]["attention"]["name"] == attention and wb["config"]["seed"] == seed
        assert "lr" not in wb["config"] and wb["config"]["optim"]["lr"] > 0  # each setting once
        assert wb["summary"]["params/total"] == result["params_total"]
        assert wb["exit_code"] == 0


def test_summaries_match_results_json(grid_runs):
    for run_dir in grid_runs:
        result = json.loads((run_dir / "results.json").read_text())
        wb = read_offline_run(run_dir)
        assert wb["metrics"]["val/acc"].summary.max and wb["metrics"]["test/acc"].summary.last
        summary = wb["summary"]
        assert summary["val/acc"]["max"] == pytest.approx(result["best_val_acc"])
        assert summary["test/acc"]["last"] == pytest.approx(result["test_acc"])
        assert summary["speed/train_steps_per_s"] == pytest.approx(result["train_steps_per_s"])
        assert summary["speed/train_tokens_per_s"] == pytest.approx(result["train_tokens_per_s"])
        assert summary["memory/peak_bytes"] == pytest.approx(result["peak_memory_bytes"])


def test_data_source_is_in_the_config_and_summary(grid_runs):
    for run_dir in grid_runs:
        data = json.loads((run_dir / "results.json").read_text())["data"]
        wb = read_offline_run(run_dir)
        assert wb["config"]["data_source"]["fingerprint"] == data["fingerprint"]
        assert wb["config"]["data_source"]["generator"]["seed"] == data["generator"]["seed"]
        assert wb["summary"]["data/source"] == data["source"] == "generate"
        assert wb["summary"]["data/fingerprint"] == data["fingerprint"]


# -- a resumed run continues its W&B run ----------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_runs(tmp_path_factory) -> dict[str, Path]:
    """Through ``python run.py`` with offline W&B: a run stopped after 4 of its 8 planned steps, then
    its last.ckpt resumed (to step 8), fine-tuned from (resume_check=false) and tested (train=false),
    each in a run directory of its own."""
    base = tmp_path_factory.mktemp("wandb-resume")
    args = [*tiny_listops(base / "data"), "attention=softmax", "optim.total_steps=8"]
    dirs = {k: base / k for k in ("first", "resumed", "fine_tuned", "tested")}
    first = run_cli(*args, "trainer.max_steps=4", "test=false", run_dir=dirs["first"])
    (dirs["first"] / "stderr.txt").write_text(first.stderr)
    last = f"ckpt_path={dirs['first'] / 'checkpoints' / 'last.ckpt'}"
    run_cli(*args, last, "trainer.max_steps=8", run_dir=dirs["resumed"])
    run_cli(
        *args, last, "resume_check=false", "trainer.max_steps=2", "test=false", run_dir=dirs["fine_tuned"]
    )
    run_cli(*args, last, "train=false", run_dir=dirs["tested"])
    return dirs


def checkpoint_run_id(path: Path):
    # weights_only=True: the id must be a plain value, as the harness reads checkpoints.
    return torch.load(path, map_location="cpu", weights_only=True).get(WANDB_RUN_KEY)


def test_a_resumed_run_continues_the_wandb_run_of_its_checkpoint(checkpoint_runs):
    first, resumed = checkpoint_runs["first"], checkpoint_runs["resumed"]
    run_id = offline_run_id(first)
    assert read_offline_run(first)["run"].run_id == run_id
    checkpoints = sorted((first / "checkpoints").glob("*.ckpt"))  # last.ckpt and the best one
    assert len(checkpoints) == 2 and {checkpoint_run_id(p) for p in checkpoints} == {run_id}
    # W&B is started without Lightning's `anonymous` argument, which this W&B version warns about.
    assert "anonymous" not in (first / "stderr.txt").read_text()
    # The resumed run: a new run directory, a new offline-run folder, the same W&B run.
    assert offline_run_id(resumed) == run_id
    first_wb, resumed_wb = read_offline_run(first), read_offline_run(resumed)
    assert resumed_wb["run"].run_id == run_id
    assert resumed_wb["run"].display_name == first_wb["run"].display_name
    assert resumed_wb["run"].job_type == first_wb["run"].job_type == "train"
    # Its training curve carries on from the checkpoint's step (Lightning's x-axis), no step twice.
    assert first_wb["steps"] and max(first_wb["steps"]) <= 4
    assert resumed_wb["steps"] and min(resumed_wb["steps"]) > max(first_wb["steps"])
    assert max(resumed_wb["steps"]) <= 8
    assert resumed_wb["exit_code"] == 0
    # And a resume of the resumed run continues it still.
    assert checkpoint_run_id(resumed / "checkpoints" / "last.ckpt") == run_id


def test_fine_tuning_and_testing_a_checkpoint_are_wandb_runs_of_their_own(checkpoint_runs):
    run_id = offline_run_id(checkpoint_runs["first"])
    fine_tuned, tested = checkpoint_runs["fine_tuned"], checkpoint_runs["tested"]
    fine_tune_id, test_id = offline_run_id(fine_tuned), offline_run_id(tested)
    assert len({run_id, fine_tune_id, test_id}) == 3
    assert read_offline_run(fine_tuned)["run"].job_type == "train"
    # Its own resumes continue its own W&B run.
    assert checkpoint_run_id(fine_tuned / "checkpoints" / "last.ckpt") == fine_tune_id
    tested_wb = read_offline_run(tested)
    assert tested_wb["run"].job_type == "evaluation" and tested_wb["run"].run_id == test_id
    assert tested_wb["exit_code"] == 0 and "test/acc" in tested_wb["summary"]


@pytest.mark.parametrize("saved", [None, 17, "", "a/b", "x" * 65])
def test_a_checkpoint_without_a_usable_wandb_run_id_starts_a_new_wandb_run(saved):
    ckpt = {} if saved is None else {WANDB_RUN_KEY: saved}
    assert continued_run_id(ckpt) is None
    assert continued_run_id({WANDB_RUN_KEY: "3kq9x2ab"}) == "3kq9x2ab"
