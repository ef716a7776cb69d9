"""How many CPU threads and data-loader workers a run uses, decided from the cores it may use.

On a small machine oversubscription is the difference between a fast and a collapsed run: two
intra-op threads sharing a core with a loader worker (or with a second run of a parallel sweep) made
one Nyström training step 10x slower than one thread alone. So a run gets the cores it may use —
its CPU affinity, or what SLURM granted, divided by the runs a parallel sweep starts at once, or by
the processes of CPU DDP — and uses them as intra-op threads. Loader workers are 0 on CPU (every
task's data is a cached in-memory or memory-mapped array: collating a batch costs far less than a
worker's competition for the cores) and a few on GPU (where the cores are otherwise idle while the
GPU computes). ``threads`` and ``data.num_workers`` override either choice.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass

import torch

log = logging.getLogger(__name__)

GPU_LOADER_WORKERS = 2


@dataclass(frozen=True)
class ComputePlan:
    cores: int  # CPU cores this run may use
    threads: int  # torch intra-op threads
    workers: int  # DataLoader worker processes
    reason: str  # where ``cores`` came from, for the log and results.json

    def as_record(self) -> dict:
        return asdict(self)


def machine_cores() -> tuple[int, str]:
    """Cores this process may use: SLURM's grant, else the CPU affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return int(slurm), "SLURM_CPUS_PER_TASK"
    try:
        return len(os.sched_getaffinity(0)), "CPU affinity"
    except AttributeError:  # not Linux
        return os.cpu_count() or 1, "os.cpu_count"


def busy_cores(sample_s: float = 0.3) -> float:
    """Cores kept busy by other processes right now: non-idle CPU time over a short sample of
    ``/proc/stat`` (0 where it cannot be read). A run that starts beside another job then does not
    put a thread on the core that job occupies (two threads on one free core collapse: every
    parallel region waits for the thread that is not running)."""

    def totals():
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = totals()
        time.sleep(sample_s)
        total1, idle1 = totals()
    except (OSError, ValueError, IndexError):
        return 0.0
    elapsed = total1 - total0
    if elapsed <= 0:
        return 0.0
    cpus = os.cpu_count() or 1
    return cpus * (1.0 - (idle1 - idle0) / elapsed)


def plan_compute(
    threads: int | None = None,
    workers: int | None = None,
    *,
    gpu: bool = False,
    parallel_runs: int = 1,
    processes: int = 1,
    busy: float | None = None,
) -> ComputePlan:
    """The run's threads and loader workers.

    ``parallel_runs``: runs a parallel sweep executes at once on this machine; ``processes``: processes
    of this run sharing the machine's cores (CPU DDP); ``busy``: cores other processes keep busy
    (measured with :func:`busy_cores` when None, for a single CPU run only). ``threads`` /
    ``workers`` given: used as they are.
    """
    total, source = machine_cores()
    share = max(parallel_runs, 1) * max(processes, 1)
    cores = max(total // share, 1)
    reason = source if share == 1 else f"{source} {total} / {share} (parallel runs x processes)"
    if share == 1 and not gpu and threads is None:
        busy = busy_cores() if busy is None else busy
        taken = min(int(busy + 0.5), total - 1)  # a core counts as taken when mostly busy
        if taken > 0:
            cores = max(total - taken, 1)
            reason = f"{source} {total}, {taken} busy with other processes"
    if workers is None:
        workers = min(GPU_LOADER_WORKERS, max(cores - 1, 0)) if gpu else 0
    if threads is None:
        threads = cores if gpu else max(cores - workers, 1)
        omp = os.environ.get("OMP_NUM_THREADS", "")
        if omp.isdigit() and 0 < int(omp) < threads:  # an explicit limit from the environment is kept
            threads = int(omp)
            reason = f"{reason}; OMP_NUM_THREADS={omp}"
    return ComputePlan(cores=cores, threads=int(threads), workers=int(workers), reason=reason)


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def pin_allocator(threshold: int = 32 << 20, keep: int = 1 << 30) -> bool:
    """Fix glibc's mmap threshold at 32 MiB, the most its own adaptive threshold reaches, and keep up to
    ``keep`` bytes of freed memory at the top of the heap instead of returning it to the kernel.

    By default the threshold starts at 128 KiB and rises to the largest block freed so far; fixing it
    makes every process behave the same from its first step. It must not be small: at 1 MiB every
    activation of a ListOps step was a fresh mmap whose pages the kernel zeroes on first touch, and a
    Nyström training step took 3.2 s instead of 1.43 s (one thread, 2026-11-28). Fixing it also fixes
    the trim threshold at glibc's 128 KiB, which returned every freed block at the heap's top to the
    kernel, to be faulted in again by the next step: 0.668 / 0.637 s per Nyström ListOps step against
    0.607 / 0.602 s with the trim threshold raised (2 threads, idle, 2026-11-28). Peak memory is
    unchanged; memory freed after the peak stays with the process. What keeps a long run's memory flat
    is padding batches to a few distinct lengths (``data.pad_to_multiple``), so that freed blocks are
    reused rather than fragmenting the heap. Returns whether it applied (glibc only)."""
    libc = _libc()
    try:
        return bool(
            libc and libc.mallopt(M_MMAP_THRESHOLD, threshold) and libc.mallopt(M_TRIM_THRESHOLD, keep)
        )
    except AttributeError:
        return False


def apply_compute(plan: ComputePlan) -> None:
    """Set torch's intra-op threads (inter-op threads can only be set before any parallel work, and
    the harness runs no inter-op parallel code, so they are left alone)."""
    torch.set_num_threads(plan.threads)
    log.info(
        "compute: %d core(s) (%s): %d intra-op thread(s), %d loader worker(s)",
        plan.cores,
        plan.reason,
        plan.threads,
        plan.workers,
    )
