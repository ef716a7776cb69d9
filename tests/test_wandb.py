"""W&B organisation, checked in the offline runs a sweep leaves behind: one run per run directory,
named task/attention/seed, grouped by task, tagged by attention, with the metric summaries declared
(best val/acc, final test/acc) and the speed and memory numbers of results.json."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.test_sweep import tiny_sweep

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
    out = {"run": None, "config": {}, "summary": {}, "metrics": {}, "exit_code": None}
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
    return out


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
