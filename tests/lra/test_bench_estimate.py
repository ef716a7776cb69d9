"""The run estimate of the step benchmark: a run's time from one step's and one validation batch's."""

from __future__ import annotations

import pytest

from lra.bench.estimate import LRA_TABLE, SPLITS, format_estimate, run_seconds, table_hours
from lra.registry import compose, task_names


def test_listops_run_is_its_steps_validations_and_test():
    cfg = compose(["task=listops", "attention=nystrom"])
    parts = run_seconds(cfg, "listops", step_s=0.5, eval_batch_s=0.2)
    # 5,000 steps; a validation every 50 steps over 2,000 dev examples in batches of 64 (32 batches);
    # one test pass over 2,000 examples (32 batches).
    assert parts["steps"] == 5000 and parts["validations"] == 100
    assert parts["train_s"] == pytest.approx(2500.0)
    assert parts["validate_s"] == pytest.approx(100 * 32 * 0.2)
    assert parts["test_s"] == pytest.approx(32 * 0.2)
    assert parts["run_s"] == pytest.approx(2500 + 640 + 6.4)


def test_a_fixed_number_of_validation_examples_shortens_validation():
    cfg = compose(
        ["task=listops", "attention=nystrom", "data.val_examples=640", "trainer.val_check_interval=500"]
    )
    parts = run_seconds(cfg, "listops", step_s=1.0, eval_batch_s=1.0)
    assert parts["validations"] == 10 and parts["validate_s"] == pytest.approx(10 * 10)


def test_a_fractional_interval_is_a_fraction_of_an_epoch():
    # ListOps: 96,000 training examples in batches of 32 are 3,000 steps an epoch; half of one is 1,500.
    cfg = compose(["task=listops", "attention=nystrom", "trainer.val_check_interval=0.5"])
    assert run_seconds(cfg, "listops", 1.0, 1.0)["validations"] == 5000 // 1500


@pytest.mark.parametrize("task", task_names())
def test_every_task_has_its_split_sizes(task):
    """A new task's split sizes go into SPLITS, or the estimate names where to add them."""
    cfg = compose([f"task={task}", "attention=softmax"])
    assert run_seconds(cfg, task, 1.0, 1.0)["run_s"] > cfg.trainer.max_steps


def test_an_unknown_task_names_where_its_sizes_go():
    cfg = compose(["task=listops", "attention=softmax"])
    with pytest.raises(ValueError, match="no split sizes for task 'sudoku'.*SPLITS"):
        run_seconds(cfg, "sudoku", 1.0, 1.0)


def rows(attention, tasks, hours=1.0):
    return [{"task": t, "attention": attention, "estimate": {"run_s": 3600 * hours}} for t in tasks]


def test_the_table_total_needs_all_five_tasks():
    partial = table_hours(rows("softmax", LRA_TABLE[:3]))
    assert partial["softmax"]["total_h"] is None and "The whole table" not in format_estimate(
        rows("softmax", ["listops"])
    )
    full = rows("softmax", LRA_TABLE, 1.0) + rows("nystrom", LRA_TABLE, 0.5) + rows("nystrom", ["pathx"], 9)
    hours = table_hours(full)
    assert hours["softmax"]["total_h"] == pytest.approx(5.0) and hours["nystrom"]["total_h"] == pytest.approx(
        2.5
    )
    assert "The whole table, one run of each: 7.50 h." in format_estimate(full)
    assert set(SPLITS) >= set(LRA_TABLE)
