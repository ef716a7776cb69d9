"""The GPU check's time budget (its orchestration end to end is in test_attention_bench.py)."""

from __future__ import annotations

import sys

from lra.gpu_check import Steps, _hms


def test_a_step_runs_within_the_budget_and_is_skipped_once_it_is_spent(tmp_path):
    steps = Steps(tmp_path, budget=60)
    ran = steps.run("echo", [sys.executable, "-c", "print('ok')"], timeout=600)
    assert ran["exit"] == 0 and (tmp_path / "echo.log").read_text().strip() == "ok"
    spent = Steps(tmp_path, budget=2)
    skipped = spent.run("late", [sys.executable, "-c", "print('never')"], timeout=600)
    assert skipped["exit"] == "no time left" and not (tmp_path / "late.log").exists()
    assert [r["step"] for r in spent.records] == ["late"]


def test_a_step_that_outlasts_what_is_left_is_stopped(tmp_path):
    steps = Steps(tmp_path, budget=6)
    slow = steps.run("slow", [sys.executable, "-c", "import time; time.sleep(30)"], timeout=600)
    assert slow["exit"] == "timeout" and slow["seconds"] < 15


def test_max_time_is_lightnings_dd_hh_mm_ss_and_at_least_a_minute():
    assert _hms(380) == "00:00:06:20"
    assert _hms(3725) == "00:01:02:05"
    assert _hms(5) == "00:00:01:00"
