"""The ledger of runs (docs/runs.csv) and the tables rendered from it: the committed tables are what
the ledger renders, a finished run's row is read from its results.json, the arithmetic is right."""

from __future__ import annotations

import statistics

import pytest

from lra import ledger
from lra.ledger import COLUMNS, LedgerError, read, render_text, row_of
from tests.helpers.runs import read_record, train_here


def test_every_committed_table_is_what_the_ledger_renders():
    assert ledger.render(check=True) == [], "run `python -m lra.ledger render` and commit the result"


def test_every_ledger_row_is_complete():
    for row in read():
        assert row["task"] and row["attention"] and row["seed"].isdigit() and row["machine"], row
        assert float(row["test_acc"]) > 0 and float(row["best_val_acc"]) > 0, row


def _row(**values) -> dict[str, str]:
    base = dict.fromkeys(COLUMNS, "")
    base.update(task="listops", attention="nystrom", pooling="mean", seed="0", machine="2-core CPU")
    base.update(precision="32-true", steps="5000", best_val_acc="37.00", best_step="3000")
    return {**base, **values}


def test_the_summary_is_mean_and_sample_std_per_setting():
    rows = [
        _row(seed="0", test_acc="35.10"),
        _row(seed="1", test_acc="36.05"),
        _row(seed="2", test_acc="35.65", machine="NVIDIA H200"),
        _row(seed="0", test_acc="37.00", pooling="padded_mean"),
        _row(seed="0", test_acc="30.00", attention="softmax", settings="attention.dropout=0.0"),
    ]
    text = "<!-- ledger:summary task=listops -->\nold numbers\n<!-- /ledger:summary -->\n"
    table = render_text(text, rows).splitlines()
    mean = statistics.mean([35.10, 36.05, 35.65])
    std = statistics.stdev([35.10, 36.05, 35.65])
    line = next(r for r in table if "| nystrom | defaults |" in r)
    assert f"{mean:.2f} ± {std:.2f}" in line and "3: seeds 0, 1, 2; 2-core CPU, NVIDIA H200" in line
    assert "37.15 (Nyströmformer)" in line  # the published row beside
    assert "| 37.00 | 1: seed 0;" in next(r for r in table if "`model.pooling=padded_mean`" in r)
    assert "`attention.dropout=0.0`" in next(r for r in table if "| softmax |" in r)
    assert "old numbers" not in "\n".join(table)
    # A filter selects rows by a ledger column; one that is not a column is an error.
    only = render_text(text.replace("task=listops", "pooling=padded_mean"), rows)
    assert "padded_mean" in only and "| nystrom | defaults |" not in only
    # An empty value selects the rows where the column is empty: the default settings.
    defaults = render_text(text.replace("task=listops", "settings= pooling=mean"), rows)
    assert (
        "| nystrom | defaults |" in defaults and "padded_mean" not in defaults and "softmax" not in defaults
    )
    with pytest.raises(LedgerError, match="seeds"):
        render_text(text.replace("task=listops", "seeds=0"), rows)


def test_a_finished_run_becomes_a_row_with_its_settings(tmp_path):
    from tests.helpers.listops import tiny_listops

    args = [*tiny_listops(tmp_path / "data"), "model.pooling=padded_mean", "attention=nystrom"]
    args += ["attention.num_landmarks=4", "logger=csv"]
    train_here(tmp_path / "run", *args)
    record = read_record(tmp_path / "run")
    row = row_of(tmp_path / "run", note="tiny")
    assert row["pooling"] == "padded_mean" and row["attention"] == "nystrom" and row["note"] == "tiny"
    assert "attention.num_landmarks=4" in row["settings"].split()
    assert "model.pooling" not in row["settings"]
    assert row["test_acc"] == f"{100 * record['test_acc']:.2f}"
    assert row["steps"] == str(record["global_step"]) and row["machine"] == record["machine"]
    assert row["commit"] and row["source"].startswith("results.json of ")
    # The CLI appends it to a ledger (a copy here) once; a second add of the same run adds nothing.
    copy = tmp_path / "runs.csv"
    copy.write_text((ledger.LEDGER).read_text())
    before = len(read(copy))
    for _ in range(2):
        assert ledger.main(["add", str(tmp_path / "run"), "--ledger", str(copy)]) == 0
    assert len(read(copy)) == before + 1


def test_a_run_that_did_not_complete_is_not_added(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text('{"status": "interrupted", "task": "listops"}')
    copy = tmp_path / "runs.csv"
    copy.write_text(ledger.LEDGER.read_text())
    assert ledger.main(["add", str(tmp_path / "run"), "--ledger", str(copy)]) == 2
    assert "not a completed training run" in capsys.readouterr().err
    assert read(copy) == read()
