"""The thread and worker policy: cores a run may use -> intra-op threads and loader workers."""

from __future__ import annotations

import pytest

from lra import resources
from lra.resources import plan_compute


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(resources, "machine_cores", lambda: (4, "CPU affinity"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_single_cpu_run_uses_every_idle_core_and_no_workers(four_cores):
    plan = plan_compute(busy=0.0)
    assert (plan.cores, plan.threads, plan.workers) == (4, 4, 0)


def test_parallel_sweep_divides_the_cores(four_cores):
    plan = plan_compute(parallel_runs=2)
    assert (plan.cores, plan.threads) == (2, 2) and "/ 2" in plan.reason
    assert plan_compute(parallel_runs=8).threads == 1


def test_cpu_ddp_processes_share_the_cores(four_cores):
    assert plan_compute(processes=2).threads == 2


def test_cores_busy_with_other_processes_are_left_alone(four_cores):
    plan = plan_compute(busy=1.2)
    assert plan.threads == 3 and "1 busy" in plan.reason
    assert plan_compute(busy=9.0).threads == 1  # never fewer than one


def test_gpu_runs_get_loader_workers(four_cores):
    plan = plan_compute(gpu=True)
    assert plan.workers == resources.GPU_LOADER_WORKERS and plan.threads == 4


def test_config_overrides_win(four_cores):
    plan = plan_compute(threads=3, workers=1, busy=0.0)
    assert (plan.threads, plan.workers) == (3, 1)


def test_omp_num_threads_is_an_upper_limit(four_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plan = plan_compute(busy=0.0)
    assert plan.threads == 1 and "OMP_NUM_THREADS" in plan.reason


def test_slurm_grant_is_the_machine(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert resources.machine_cores() == (6, "SLURM_CPUS_PER_TASK")


def test_busy_cores_reads_proc_stat():
    busy = resources.busy_cores(0.05)
    assert 0.0 <= busy <= (__import__("os").cpu_count() or 1) + 1e-6


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1


def test_allocator_threshold_is_not_small(monkeypatch):
    """A 1 MiB mmap threshold made every ListOps activation a fresh, kernel-zeroed mapping (a
    Nyström step 2.2x slower); the pin stays at glibc's own 32 MiB ceiling, and freed memory at the
    heap's top is kept (glibc's 128 KiB trim threshold faulted it in again every step)."""
    from lra import resources

    fake = _FakeLibc()
    monkeypatch.setattr(resources, "_libc", lambda: fake)
    assert resources.pin_allocator()
    assert fake.calls == [
        ("mallopt", resources.M_MMAP_THRESHOLD, 32 << 20),
        ("mallopt", resources.M_TRIM_THRESHOLD, 1 << 30),
    ]


def test_allocator_pin_applies_in_this_process():
    """The real call: glibc accepts both settings (skipped where the C library is not glibc)."""
    from lra import resources

    libc = resources._libc()
    if libc is None or not hasattr(libc, "mallopt"):
        pytest.skip("no glibc mallopt here")
    assert resources.pin_allocator()
