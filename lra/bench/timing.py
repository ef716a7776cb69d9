"""What the benchmarks share to time and measure a step: a wall-clock timer (CUDA events on a GPU),
the kernel's RSS counters and the allocator setting of a measuring subprocess."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch


def timer(device: str) -> Callable[[Callable[[], object]], float]:
    """``timed(fn)``: seconds ``fn()`` took, by CUDA events on ``cuda`` (waiting for the device), else
    by ``time.perf_counter``."""
    if device == "cuda":

        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0

        return timed

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return timed


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` counter in KiB (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker_env() -> dict:
    """The environment of a memory-measuring subprocess: a fixed mmap threshold, so large blocks are
    mmap'd and returned to the OS when freed, and the RSS follows live tensors instead of glibc's
    cached heap."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}


def peak_bytes(fn: Callable[[], object], device: str) -> tuple[int, bool]:
    """The memory one call of ``fn`` needs beyond what is allocated before it, and whether the peak
    counter could be reset first. CUDA: ``max_memory_allocated`` minus ``memory_allocated`` before.
    CPU: the process's ``VmHWM`` after resetting it to the current RSS (``/proc/self/clear_refs``)
    minus ``VmRSS`` before; where the kernel refuses the reset (False), an under-estimate if an
    earlier peak was higher. Run it in a fresh process on the CPU: the peak RSS is per process."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before, True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
        reset = True
    except OSError:
        reset = False
    before = status_kib("VmRSS")
    fn()
    return max(status_kib("VmHWM") - before, 0) * 1024, reset
