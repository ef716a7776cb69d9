"""The GPU check's time budget (its orchestration end to end is in test_attention_bench.py)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

from lra import gpu_check
from lra.gpu_check import Steps, _hms


def test_a_step_runs_within_the_budget_and_is_skipped_once_it_is_spent(tmp_path):
    steps = Steps(tmp_path, budget=60)
    ran = steps.run("echo", [sys.executable, "-c", "print('ok')"], timeout=600)
    assert ran["exit"] == 0 and (tmp_path / "echo.log").read_text().strip() == "ok"
    spent = Steps(tmp_path, budget=2)
    skipped = spent.run("late", [sys.executable, "-c", "print('never')"], timeout=600)
    assert skipped["exit"] == "no time left" and not (tmp_path / "late.log").exists()
    assert [r["step"] for r in spent.records] == ["late"]


def test_a_step_that_outlasts_what_is_left_is_stopped(tmp_path, monkeypatch):
    """On a fake clock, with a command that never ends: the step's time limit is what is left of the
    budget (not its own 600 s), and the step stopped there is recorded as a timeout, with its time."""
    now = [1000.0]
    limits = []

    def never_ends(cmd, timeout, **kwargs):
        limits.append(timeout)
        now[0] += timeout
        raise subprocess.TimeoutExpired(cmd, timeout)

    monkeypatch.setattr(gpu_check, "time", SimpleNamespace(time=lambda: now[0]))
    fake = SimpleNamespace(run=never_ends, STDOUT=subprocess.STDOUT, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(gpu_check, "subprocess", fake)
    steps = Steps(tmp_path, budget=10)
    now[0] += 2  # part of the budget is gone before the step starts
    slow = steps.run("slow", [sys.executable, "-c", "pass"], timeout=600)
    assert limits == [8] and slow["exit"] == "timeout" and slow["seconds"] == 8
    assert [r["step"] for r in steps.records] == ["slow"] and (tmp_path / "slow.log").exists()


def test_max_time_is_lightnings_dd_hh_mm_ss_and_at_least_a_minute():
    assert _hms(380) == "00:00:06:20"
    assert _hms(3725) == "00:01:02:05"
    assert _hms(5) == "00:00:01:00"


def test_the_step_benchmark_times_the_tasks_asked_for_compiled_beside_eager(tmp_path):
    """``--step-tasks`` reaches the step benchmark: all five tasks give the LRA table's estimate."""
    from lra.gpu_check import parse_args, step_command

    tasks = "listops,text,retrieval,image,pathfinder"
    assert parse_args([]).step_tasks == "listops" and parse_args(["--step-tasks", tasks]).step_tasks == tasks
    cmd = step_command(tmp_path, "cuda", False, "softmax,nystrom", tasks)
    assert cmd[cmd.index("--tasks") + 1] == tasks and "--compiled" in cmd and "trainer=gpu" in cmd
