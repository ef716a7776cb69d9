"""Efficiency: forward+backward time and peak memory of one attention layer vs sequence length.

``python -m lra.bench efficiency [--lengths 512,...,16384] [--devices cpu,cuda] [--compiled]``

- Time: all variants measured in one process, interleaved (every repetition runs each variant once,
  in a rotating order) and repeated; reported as medians, and ratios as medians of per-repetition
  ratios, so slow phases of a shared machine hit every variant alike. CUDA: CUDA events.
- Memory, CPU: a fresh subprocess per (variant, length) runs one warm-up step, resets the kernel's
  peak-RSS counter (``/proc/self/clear_refs``), runs the measured step, and reports ``VmHWM`` minus the
  RSS just before it; glibc's mmap threshold is pinned so freed tensors really leave the RSS.
  CUDA: ``max_memory_allocated`` minus the memory allocated before the step.
- Rows: every attention config of ``conf/attention/`` (the registry, ``lra/registry.py``) at its
  defaults (dropout off, ``--landmarks`` where it has ``num_landmarks``, ``max_len`` = n), each with
  the conv skip off as well where it has one (``nystrom:conv_kernel=0``), dense softmax that
  materialises n x n, and the published PyTorch implementations that import
  (:mod:`lra.bench.packages`: nystrom-attention, performer-pytorch, linformer, local-attention,
  reformer-pytorch at the matching settings, fed the same q, k, v). ``--variants`` takes any
  ``name[:key=value,...]`` or reference row; a ``+compile`` suffix times that row compiled
  (``torch.compile(fullgraph=True)``, one shape per length), and ``--compiled [names]`` adds it for
  those configs (alone: every one), beside the eager row, with the ratio of the two from the same interleaved repetitions.
- Per layer, whatever the device (:mod:`lra.bench.dispatch`, in the memory measurement): the kernels
  an eager forward+backward launches (dispatched operators that are not views) and the bytes autograd
  saves for backward.

Writes ``efficiency.json`` and ``efficiency.png`` (time and memory vs length, log scale).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from attention.reference import dense_softmax_attention
from lra.bench.dispatch import count_ops, saved_bytes
from lra.bench.packages import PACKAGES, available, build_package
from lra.bench.timing import peak_bytes, timer, worker_env
from lra.registry import (
    attention_names,
    benchmark_overrides,
    build_attention,
    has_knob,
    parse_variant,
    split_variants,
)
from lra.resources import pin_allocator

REFERENCES = ("softmax-dense", *PACKAGES)  # rows that are not attention configs
BASELINE = "nystrom"
COMPILED = "+compile"  # a row's suffix: the same module under torch.compile
MASKLESS = ("performer-pytorch-pkg", "linformer-pkg")  # reference rows that take no padding mask


def default_variants(cuda: bool = False, compiled: list[str] | None = None) -> list[str]:
    """Every config (each without the conv skip too where it has one; on a GPU each with the skip as a
    native convolution), dense softmax, the packages that import, and ``compiled`` (config names, or
    ``["all"]``) compiled."""
    names = attention_names()
    noconv = [f"{n}:conv_kernel=0" for n in names if has_knob(n, "conv_kernel")]
    # On a GPU also the skip as PyTorch's grouped convolution: the GEMM form suits the CPU, not a GPU.
    native = [f"{n}:conv_impl=native" for n in names if cuda and has_knob(n, "conv_impl")]
    chosen = names if compiled == ["all"] else [n for n in names if n in (compiled or [])]
    both = [f"{v}{COMPILED}" for v in (*names, *native) if parse_variant(v)[0] in chosen]
    return [*names, "softmax-dense", *noconv, *native, *both, *(row for row in PACKAGES if available(row))]


def eager_of(variant: str) -> str:
    """The eager row of a compiled one (``nystrom+compile`` -> ``nystrom``); itself otherwise."""
    return variant.removesuffix(COMPILED)


class DenseSoftmax(nn.Module):
    """Softmax attention that materialises the n x n matrix (what the Nyströmformer paper compared
    against); ``softmax`` is PyTorch's fused SDPA, whose CPU and CUDA kernels never store it."""

    def forward(self, q, k, v, key_padding_mask=None):
        return dense_softmax_attention(q, k, v, key_padding_mask)


def build(
    variant: str, heads: int, head_dim: int, landmarks: int, n: int | None = None, backend: str = "inductor"
) -> nn.Module:
    """A registry variant (``name[:key=value,...]``) or one of the reference rows, for sequences of
    length ``n`` (``max_len``: Linformer's projections have one row per position); compiled whole by
    ``backend`` for a ``+compile`` row (a graph break is an error)."""
    if variant.endswith(COMPILED):
        module = build(eager_of(variant), heads, head_dim, landmarks, n)
        whole = eager_of(variant) not in REFERENCES
        return torch.compile(module, fullgraph=whole, dynamic=False, backend=backend)
    if variant == "softmax-dense":
        return DenseSoftmax()
    if variant in PACKAGES:
        return build_package(variant, heads, head_dim, landmarks, n or 4096)
    name, overrides = parse_variant(variant)
    kwargs = {**benchmark_overrides(name, landmarks), **overrides}
    return build_attention(variant, heads, head_dim, max_len=n, **kwargs)


def make_inputs(batch, heads, n, head_dim, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v, grad = (torch.randn(batch, heads, n, head_dim, generator=g).to(device) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_()
    return q, k, v, grad


def make_mask(batch: int, n: int, min_real: float, device) -> torch.Tensor | None:
    """A padding mask whose real lengths spread evenly from ``min_real * n`` to ``n`` over the batch
    (as a task's padded batches); None for ``min_real >= 1``."""
    if min_real >= 1:
        return None
    lengths = torch.linspace(max(1, round(min_real * n)), n, batch).round().long()
    return (torch.arange(n)[None, :] < lengths[:, None]).to(device)


def step(module, q, k, v, grad, mask: torch.Tensor | None = None) -> None:
    """One forward+backward of the layer, with gradients for q, k, v and the layer's parameters."""
    for t in (q, k, v):
        t.grad = None
    module.zero_grad(set_to_none=True)
    out = module(q, k, v, mask)
    out.backward(grad)


# -- time ----------------------------------------------------------------------------------------


def time_length(variants, n, args, device) -> dict[str, list[float]]:
    """Interleaved, repeated forward+backward times (seconds) of every variant at length ``n``."""
    q, k, v, grad = make_inputs(args.batch, args.heads, n, args.head_dim, device)
    mask = make_mask(args.batch, n, args.min_real, device)
    modules = {
        name: build(name, args.heads, args.head_dim, args.landmarks, n, args.compile_backend).to(device)
        for name in variants
    }
    timed = timer(device)
    for module in modules.values():  # warm-up: lazy initialisation, allocator caches
        for _ in range(args.warmup):
            step(module, q, k, v, grad, mask)
    samples = {name: [] for name in modules}
    order = list(modules)
    for rep in range(args.reps):
        shift = rep % len(order)  # rotate the order so no variant always runs first or last
        for name in order[shift:] + order[:shift]:
            module = modules[name]
            samples[name].append(timed(lambda module=module: step(module, q, k, v, grad, mask)))
    return samples


def time_length_isolated(variants, n, args) -> dict[str, list[float]]:
    """:func:`time_length` in a fresh interpreter: one length's tensors never share a heap with the
    next length's (a long CPU run otherwise grows its RSS through allocator fragmentation)."""
    cmd = [sys.executable, "-m", "lra.bench.efficiency", "--time-worker", str(n), *_shape_flags(args)]
    cmd += [f"--variants={','.join(variants)}", f"--reps={args.reps}", f"--warmup={args.warmup}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), timeout=args.worker_timeout)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["failed"]
        print(f"  timing at n={n} failed: {tail[0]}", file=sys.stderr)
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _shape_flags(args) -> list[str]:
    return [
        f"--batch={args.batch}",
        f"--heads={args.heads}",
        f"--head-dim={args.head_dim}",
        f"--landmarks={args.landmarks}",
        f"--min-real={args.min_real}",
        f"--compile-backend={args.compile_backend}",
        f"--threads={args.threads}",
    ]


def paired_ratio(samples: dict[str, list[float]], name: str, base: str) -> float | None:
    if name not in samples or base not in samples:
        return None
    return statistics.median(a / b for a, b in zip(samples[name], samples[base], strict=True))


# -- memory --------------------------------------------------------------------------------------


def measure_memory_here(variant, n, args, device) -> dict:
    """Peak memory of one forward+backward, measured in this (fresh) process."""
    q, k, v, grad = make_inputs(args.batch, args.heads, n, args.head_dim, device)
    mask = make_mask(args.batch, n, args.min_real, device)
    module = build(variant, args.heads, args.head_dim, args.landmarks, n, args.compile_backend).to(device)
    step(module, q, k, v, grad, mask)  # warm-up: one-off allocations are not the layer's working memory
    for t in (q, k, v):
        t.grad = None
    peak, reset = peak_bytes(lambda: step(module, q, k, v, grad, mask), device)
    live = [q, k, v, *module.parameters(), *module.buffers()]
    saved = saved_bytes(lambda: step(module, q, k, v, grad, mask), exclude=live)
    ops = {} if variant.endswith(COMPILED) else count_ops(lambda: step(module, q, k, v, grad, mask))
    if device == "cuda":
        method = "cuda_max_memory_allocated"
    elif reset:
        method = "VmHWM after clear_refs minus VmRSS before"
    else:
        method = "ru_maxrss (not reset: an under-estimate if an earlier peak was higher)"
    return {"peak_bytes": peak, "method": method, "saved_bytes": saved, **ops}


def measure_memory(variant, n, args, device) -> dict:
    """Run :func:`measure_memory_here` in a fresh interpreter (CPU peak RSS is per process)."""
    if device == "cuda":
        try:
            return measure_memory_here(variant, n, args, device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return {"peak_bytes": None, "error": "out of GPU memory"}
    cmd = [sys.executable, "-m", "lra.bench.efficiency", "--worker", f"{variant}:{n}", *_shape_flags(args)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), timeout=args.worker_timeout)
    if done.returncode != 0:
        return {"peak_bytes": None, "error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report --------------------------------------------------------------------------------------


def format_table(results: dict, device: str) -> str:
    rows = results[device]
    lengths = sorted({r["n"] for r in rows})
    names = list(dict.fromkeys(r["variant"] for r in rows))
    by = {(r["variant"], r["n"]): r for r in rows}

    def cell(name, n, key, fmt):
        r = by.get((name, n))
        return "–" if r is None or r.get(key) is None else fmt(r[key])

    tables = [
        ("forward+backward time (ms, median)", "time_s", lambda x: f"{1e3 * x:.1f}"),
        (f"time relative to {BASELINE} (median of paired ratios)", "ratio_to_nystrom", lambda x: f"{x:.2f}"),
        ("time relative to SDPA softmax (median of paired ratios)", "ratio_to_softmax", lambda x: f"{x:.2f}"),
        ("compiled time relative to eager (median of paired ratios)", "ratio_to_eager", lambda x: f"{x:.2f}"),
        ("peak memory of one forward+backward (MiB)", "peak_bytes", lambda x: f"{x / 2**20:.1f}"),
        ("saved for backward (MiB)", "saved_bytes", lambda x: f"{x / 2**20:.1f}"),
        ("kernels launched by one eager forward+backward (operators that are not views)", "ops", str),
        ("operators dispatched, views included", "ops_all", str),
    ]
    out = []
    for title, key, fmt in tables:
        out += ["", f"### {device}: {title}", ""] if out else [f"### {device}: {title}", ""]
        out += [
            "| variant | " + " | ".join(str(n) for n in lengths) + " |",
            "|" + " --- |" * (len(lengths) + 1),
        ]
        for name in names:
            if any(by.get((name, n), {}).get(key) is not None for n in lengths):
                out.append(f"| {name} | " + " | ".join(cell(name, n, key, fmt) for n in lengths) + " |")
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = list(results)
    fig, axes = plt.subplots(len(devices), 2, figsize=(11, 4.2 * len(devices)), squeeze=False)
    for row, device in enumerate(devices):
        rows = results[device]
        for name in dict.fromkeys(r["variant"] for r in rows):
            mine = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["n"])
            t = [(r["n"], 1e3 * r["time_s"]) for r in mine if r.get("time_s") is not None]
            m = [(r["n"], r["peak_bytes"] / 2**20) for r in mine if r.get("peak_bytes")]
            style = {"marker": "o", "linestyle": "--" if "pkg" in name or "noconv" in name else "-"}
            if t:
                axes[row][0].plot(*zip(*t, strict=True), label=name, **style)
            if m:
                axes[row][1].plot(*zip(*m, strict=True), label=name, **style)
        axes[row][0].set(
            title=f"{device}: forward+backward time",
            xlabel="sequence length n",
            ylabel="ms",
            xscale="log",
            yscale="log",
        )
        axes[row][1].set(
            title=f"{device}: peak memory",
            xlabel="sequence length n",
            ylabel="MiB",
            xscale="log",
            yscale="log",
        )
        for ax in axes[row]:
            ax.set_xscale("log", base=2)
            ax.grid(True, which="both", alpha=0.3)
        if axes[row][0].get_legend_handles_labels()[0]:  # nothing timed on this device: no legend
            axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv):
    def ints(s):
        return [int(x) for x in s.split(",")]

    p = argparse.ArgumentParser(prog="python -m lra.bench efficiency", description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=ints, default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument(
        "--variants",
        type=split_variants,
        default=None,
        help="attention config names with optional ':key=value,...' overrides, comma-separated; default: "
        "every config, each without the conv skip too where it has one, and the reference rows",
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--landmarks", type=int, default=64)
    p.add_argument(
        "--min-real",
        type=float,
        default=1.0,
        help="real lengths spread from this fraction of n to n over the batch, with a padding mask "
        "(ListOps' batches: 0.5); 1: no mask. Reference packages without masks are left out below 1",
    )
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per variant and length")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--softmax-max-len", type=int, default=8192, help="skip SDPA softmax above this on CPU")
    p.add_argument(
        "--dense-max-len", type=int, default=4096, help="skip dense softmax above this (n^2 memory)"
    )
    p.add_argument(
        "--devices", type=lambda s: s.split(","), default=None, help="default: cpu, and cuda if present"
    )
    p.add_argument("--no-memory", action="store_true", help="time only (no memory, ops or saved bytes)")
    p.add_argument(
        "--compiled",
        nargs="?",
        const="all",
        type=lambda s: s.split(","),
        default=None,
        help="also these configs compiled (comma-separated; alone: every config), a '+compile' row each; "
        "on a CPU each compile takes a minute or more per length: raise --worker-timeout",
    )
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile's backend for the compiled rows (aot_eager: the capture alone, eager kernels)",
    )
    # One thread by default: on a CPU shared with other jobs a second thread mostly waits for a busy
    # core, which adds noise that differs between variants with many small ops and few large ones.
    p.add_argument("--threads", type=int, default=1, help="CPU threads (intra-op)")
    p.add_argument("--worker-timeout", type=float, default=600.0)
    p.add_argument("--out", default="outputs/bench/efficiency")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: "variant:n"
    p.add_argument("--time-worker", type=int, default=None, help=argparse.SUPPRESS)  # internal: n
    return p.parse_args(argv)


def skipped(variant: str, n: int, device: str, args) -> bool:
    variant = eager_of(variant)
    if variant == "softmax-dense":
        return n > args.dense_max_len
    return parse_variant(variant)[0] == "softmax" and device == "cpu" and n > args.softmax_max_len


def resolve_variants(args, devices: list[str]) -> list[str]:
    """The rows: ``--variants`` or the defaults, each of ``--compiled``'s configs compiled as well, and
    only rows that take a padding mask when the batch is padded."""
    if args.variants is None:
        variants = default_variants(cuda="cuda" in devices, compiled=args.compiled)
    else:
        variants = list(args.variants)
        if args.compiled:
            every = args.compiled == ["all"]
            chosen = {parse_variant(v)[0] for v in variants} if every else set(args.compiled)
            eager = [v for v in variants if not v.endswith(COMPILED)]
            extra = [f"{v}{COMPILED}" for v in eager if parse_variant(v)[0] in chosen]
            variants += [v for v in extra if v not in variants]
    if args.min_real < 1:
        variants = [v for v in variants if eager_of(v) not in MASKLESS]
    return variants


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.worker:  # the memory worker keeps worker_env's allocator, whose RSS follows live tensors
        pin_allocator()  # as run.py does: the allocator's defaults put page faults in the timings
    if args.worker:
        variant, n = args.worker.rsplit(":", 1)
        print(json.dumps(measure_memory_here(variant, int(n), args, "cpu")))
        return 0
    if args.time_worker:
        print(json.dumps(time_length(args.variants, args.time_worker, args, "cpu")))
        return 0
    # The devices are settled before the default variants, which depend on whether CUDA is among them.
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    args.variants = resolve_variants(args, devices)
    known = set(attention_names()) | set(REFERENCES)
    unknown = sorted(v for v in args.variants if parse_variant(eager_of(v))[0] not in known)
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(sorted(known))}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, list[dict]] = {}
    for device in devices:
        results[device] = []
        for n in args.lengths:
            variants = [v for v in args.variants if not skipped(v, n, device, args)]
            if device == "cpu":
                samples = time_length_isolated(variants, n, args)
            else:
                try:
                    samples = time_length(variants, n, args, device)
                except torch.OutOfMemoryError:
                    samples = {}
                    torch.cuda.empty_cache()
            for name in variants:
                row = {"variant": name, "n": n, "device": device}
                if name in samples:
                    row |= {
                        "time_s": statistics.median(samples[name]),
                        "time_samples_s": samples[name],
                        "ratio_to_nystrom": paired_ratio(samples, name, BASELINE),
                        "ratio_to_softmax": paired_ratio(samples, name, "softmax"),
                    }
                    if name.endswith(COMPILED):
                        row["ratio_to_eager"] = paired_ratio(samples, name, eager_of(name))
                if not args.no_memory:
                    row |= measure_memory(name, n, args, device)
                results[device].append(row)
            print(f"  {device} n={n} done ({time.time() - started:.0f}s)", file=sys.stderr)
            write_record(out, args, results, devices, started)  # partial results survive a crash
    write_record(out, args, results, devices, started)
    plot(results, out / "efficiency.png")
    for device in results:
        print(format_table(results, device) + "\n")
    print(f"wrote {out / 'efficiency.json'} and {out / 'efficiency.png'}")
    return 0


def write_record(out: Path, args, results, devices, started) -> dict:
    record = {
        "benchmark": "efficiency",
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "time_worker")},
        "results": results,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name() if "cuda" in devices else None,
        "wall_s": time.time() - started,
    }
    (out / "efficiency.json").write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    sys.exit(main())
