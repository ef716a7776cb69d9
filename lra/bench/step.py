"""Step: the time of one training step (forward, backward, AdamW) of each task x attention.

``python -m lra.bench step [--tasks listops] [--attentions softmax,nystrom,spectral_shift]
[--set model.max_len=1000 ...] [--device cpu|cuda] [--compiled] [--load 1] [--parallel-check]``

Without ``--attentions``: every attention config of ``conf/attention/`` (the registry,
``lra/registry.py``), so a new attention is timed by adding its module and its yaml.

An attention may carry overrides, ``nystrom:conv_kernel=0`` (a knob of its config) or
``nystrom:model.dropout=0`` (any config path): what a part of the model costs in a step, timed
interleaved with the step that has it. ``--compiled`` adds every attention with
``model.compile=true`` (``nystrom:model.compile=true``), timed interleaved with its eager step and
reported with the ratio of the two. Per step, whatever the device (:mod:`lra.bench.dispatch`): the
kernels an eager forward + backward launches and the bytes autograd saves for backward.

The model, optimiser and batch shape are the run's own (composed from ``conf/`` exactly as
``run.py`` composes them, ``--set`` adding overrides); the batch is synthetic but full: every
sequence at ``model.max_len``, all tokens real. Attentions of one task are timed interleaved (every
repetition runs each once, in a rotating order) and reported as medians and as medians of paired
ratios. Also per step: the FLOPs PyTorch's ``FlopCounterMode`` counts for forward + backward, the
achieved GFLOP/s, and, once per run, this machine's GEMM rate at the same thread count (in bf16 when
the run's ``trainer.precision`` is bf16-mixed, whose autocast the step then uses on the CPU too, as
Lightning does); peak memory of one step in a fresh process (CPU: peak RSS; CUDA:
``max_memory_allocated``). Each attention's validation batch (``data.eval_batch_size``, eval mode) is
timed beside its step, and the two give the hours of one run at the task's own setting
(:mod:`lra.bench.estimate`); with ``--tasks listops,text,retrieval,image,pathfinder`` the report adds
the whole LRA table's hours.

``--load N`` keeps N other processes spinning on the CPU while timing (a shared machine);
``--parallel-check`` times two runs side by side (each with the threads a 2-job parallel sweep
gives it) against one run alone and reports the aggregate throughput ratio.

Writes ``step.json``, ``step.md`` and ``step.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lra.bench.dispatch import count_ops, saved_bytes
from lra.bench.estimate import SPLITS, format_estimate, run_seconds
from lra.bench.timing import peak_bytes, timer, worker_env
from lra.registry import attention_names, split_variants
from lra.resources import pin_allocator

REPO = Path(__file__).resolve().parents[2]
COMPILED = "model.compile=true"


def with_compiled(attentions: list[str]) -> list[str]:
    """Each attention, then the same compiled (``name:model.compile=true``), eager ones first."""
    extra = [f"{a}{',' if ':' in a else ':'}{COMPILED}" for a in attentions if COMPILED not in a]
    return [*attentions, *extra]


def eager_of(attention: str) -> str | None:
    """The eager variant of a compiled one; None for an eager one."""
    if COMPILED not in attention:
        return None
    return attention.replace(f",{COMPILED}", "").replace(f":{COMPILED}", "")


def variant_overrides(spec: str) -> tuple[str, list[str]]:
    """An attention variant of the step: ``"nystrom:conv_kernel=0,model.dropout=0"`` -> ``("nystrom",
    ["attention.conv_kernel=0", "model.dropout=0"])``. A key without a dot is a knob of
    ``conf/attention/<name>.yaml``; a dotted key is any config path, so one step can be timed with and
    without a part of the model, interleaved in one run."""
    from lra.registry import knobs

    name, _, rest = spec.partition(":")
    overrides = []
    for item in filter(None, (piece.strip() for piece in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"step variant {spec!r}: expected key=value after ':', got {item!r}")
        if "." not in key:
            if key not in knobs(name):
                raise ValueError(
                    f"step variant {spec!r}: {key!r} is not a knob of conf/attention/{name}.yaml "
                    f"(knobs: {', '.join(sorted(knobs(name)))}); a dotted key such as model.dropout "
                    "sets any other config path"
                )
            key = f"attention.{key}"
        overrides.append(f"{key}={value}")
    return name, overrides


def compose(task: str, attention: str, sets: list[str]):
    """The run's config for ``task`` and an attention variant (:func:`variant_overrides`), with the
    ``sets`` overrides before the variant's own."""
    from lra.registry import compose as compose_run

    name, own = variant_overrides(attention)
    return compose_run([f"task={task}", f"attention={name}", *sets, *own])


def make_batch(cfg, device: str, seed: int = 0, batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """A full batch of the task's shape: ``batch_size`` (default ``data.batch_size``) sequences of
    ``model.max_len`` real tokens."""
    g = torch.Generator().manual_seed(seed)
    b, n = int(batch_size or cfg.data.batch_size), int(cfg.model.max_len)
    vocab, classes = int(cfg.model.vocab_size), int(cfg.model.num_classes)
    batch = {
        "input_ids": torch.randint(1, vocab, (b, n), generator=g),
        "mask": torch.ones(b, n, dtype=torch.bool),
        "label": torch.randint(0, classes, (b,), generator=g),
    }
    if cfg.model.get("two_towers"):
        batch["input_ids2"] = torch.randint(1, vocab, (b, n), generator=g)
        batch["mask2"] = torch.ones(b, n, dtype=torch.bool)
    return {k: v.to(device) for k, v in batch.items()}


def autocast_dtype(cfg) -> torch.dtype | None:
    """bf16 when the run trains in bf16 mixed precision (``trainer.precision``), else None (fp32)."""
    return torch.bfloat16 if "bf16" in str(cfg.trainer.get("precision", "")) else None


class Stepper:
    """One (task, attention): model, optimiser and batch, and a method that runs one training step."""

    def __init__(self, cfg, device: str):
        from lra.train import build_model

        torch.manual_seed(0)
        self.model = build_model(cfg).to(device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=float(cfg.optim.lr), eps=1e-6)
        self.batch = make_batch(cfg, device)
        # A validation batch: data.eval_batch_size sequences, as the run's evaluation loaders give.
        self.eval_batch = make_batch(cfg, device, seed=1, batch_size=cfg.data.get("eval_batch_size"))
        self.device = device
        # As Lightning's bf16-mixed precision does, on the GPU and on the CPU alike.
        self.autocast = autocast_dtype(cfg) is not None

    def forward_backward(self) -> None:
        inputs = {k: v for k, v in self.batch.items() if k != "label"}
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(**inputs)
        F.cross_entropy(logits.float(), self.batch["label"]).backward()

    def step(self) -> None:
        self.forward_backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate(self) -> None:
        """One validation batch: the forward in eval mode, as Lightning's validation loop runs it."""
        inputs = {k: v for k, v in self.eval_batch.items() if k != "label"}
        self.model.eval()
        try:
            with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
                self.model(**inputs).float().argmax(-1)
        finally:
            self.model.train()


def count_flops(stepper: Stepper) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover - old torch
        return None
    with FlopCounterMode(display=False) as counter:
        stepper.forward_backward()
    stepper.opt.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def gemm_rate(device: str, size: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """This machine's GEMM rate (GFLOP/s) in ``dtype`` at the current thread count."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    timed = timer(device)
    timed(lambda: a @ b)
    best = min(timed(lambda: a @ b) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def time_task(
    task: str, attentions: list[str], args
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per training step and per validation batch of each attention, interleaved."""
    steppers = {a: Stepper(compose(task, a, args.set), args.device) for a in attentions}
    for s in steppers.values():
        for _ in range(args.warmup):
            s.step()
            s.evaluate()  # a compiled model compiles its eval graph here, not in the timing
    timed = timer(args.device)
    samples: dict[str, list[float]] = {a: [] for a in attentions}
    evals: dict[str, list[float]] = {a: [] for a in attentions}
    for rep in range(args.reps):
        shift = rep % len(attentions)
        for a in attentions[shift:] + attentions[:shift]:
            samples[a].append(timed(steppers[a].step))
            evals[a].append(timed(steppers[a].evaluate))
    return samples, evals


def measure_memory_here(task: str, attention: str, args) -> dict:
    stepper = Stepper(compose(task, attention, args.set), args.device)
    stepper.step()
    peak, _reset = peak_bytes(stepper.step, args.device)
    live = [*stepper.model.parameters(), *stepper.model.buffers(), *stepper.batch.values()]
    saved = saved_bytes(stepper.forward_backward, exclude=live)
    ops = {} if eager_of(attention) else count_ops(stepper.forward_backward)
    stepper.opt.zero_grad(set_to_none=True)
    return {
        "peak_bytes": peak,
        "memory": "cuda_max_allocated" if args.device == "cuda" else "peak RSS growth",
        "saved_bytes": saved,
        **ops,
    }


def measure_memory(task: str, attention: str, args) -> dict:
    if args.device == "cuda":
        return measure_memory_here(task, attention, args)
    cmd = [sys.executable, "-m", "lra.bench.step", "--memory-worker", f"{task}:{attention}", *forward(args)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), timeout=args.worker_timeout)
    if done.returncode != 0:
        return {"peak_bytes": None, "memory_error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def forward(args) -> list[str]:
    """The options a worker subprocess needs to rebuild the same step."""
    out = [f"--device={args.device}", f"--threads={args.threads}"]
    for s in args.set:
        out += ["--set", s]
    return out


# -- a shared machine and parallel runs ------------------------------------------------------------


def _spin(stop) -> None:
    while not stop.is_set():
        pass


class Load:
    """``n`` processes that keep a core busy each, while the block runs."""

    def __init__(self, n: int):
        self.n = n
        self.ctx = mp.get_context("fork")
        self.stop = self.ctx.Event()
        self.procs = []

    def __enter__(self):
        self.procs = [self.ctx.Process(target=_spin, args=(self.stop,), daemon=True) for _ in range(self.n)]
        for p in self.procs:
            p.start()
        time.sleep(0.5 if self.n else 0)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for p in self.procs:
            p.join(timeout=5)


def _throughput_worker(task, attention, sets, device, threads, seconds, queue) -> None:
    torch.set_num_threads(threads)
    pin_allocator()
    ns = argparse.Namespace(set=sets, device=device)
    stepper = Stepper(compose(task, attention, ns.set), device)
    stepper.step()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        stepper.step()
        steps += 1
    queue.put(steps / (time.perf_counter() - t0))


def parallel_check(task: str, attention: str, args) -> dict:
    """Aggregate steps/s of two runs side by side vs one run alone (each with the policy's threads)."""
    from lra.resources import plan_compute

    ctx = mp.get_context("spawn")
    rates = {}
    for jobs in (1, 2):
        threads = plan_compute(parallel_runs=jobs, busy=0.0).threads
        queue = ctx.Queue()
        procs = [
            ctx.Process(
                target=_throughput_worker,
                args=(task, attention, args.set, args.device, threads, args.parallel_seconds, queue),
            )
            for _ in range(jobs)
        ]
        for p in procs:
            p.start()
        rates[jobs] = [queue.get(timeout=args.worker_timeout) for _ in procs]
        for p in procs:
            p.join()
    one, two = sum(rates[1]), sum(rates[2])
    return {
        "task": task,
        "attention": attention,
        "alone_steps_per_s": one,
        "two_jobs_steps_per_s": rates[2],
        "aggregate_ratio": two / one,
    }


# -- report ----------------------------------------------------------------------------------------


def format_table(rows: list[dict], baseline: str) -> str:
    lines = [
        f"| task | attention | batch x n | step (s, median) | vs {baseline} | − {baseline} (ms) | compiled vs "
        "eager | one run (h, est.) | GFLOP/step | GFLOP/s | of GEMM rate | peak memory (MiB) | saved for "
        "backward (MiB) | kernels (eager fwd+bwd) |",
        "|" + " --- |" * 14,
    ]
    for r in rows:
        ratio = "–" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        diff = "–" if r.get("difference_s") is None else f"{1e3 * r['difference_s']:+.0f}"
        gflop = "–" if r.get("flops") is None else f"{r['flops'] / 1e9:.1f}"
        rate = "–" if r.get("gflops_per_s") is None else f"{r['gflops_per_s']:.1f}"
        share = "–" if r.get("gemm_share") is None else f"{100 * r['gemm_share']:.0f}%"
        mem = "–" if not r.get("peak_bytes") else f"{r['peak_bytes'] / 2**20:.0f}"
        eager = "–" if r.get("ratio_to_eager") is None else f"{r['ratio_to_eager']:.2f}"
        saved = "–" if r.get("saved_bytes") is None else f"{r['saved_bytes'] / 2**20:.0f}"
        ops = "–" if r.get("ops") is None else str(r["ops"])
        run = "–" if r.get("estimate") is None else f"{r['estimate']['run_s'] / 3600:.2f}"
        lines.append(
            f"| {r['task']} | {r['attention']} | {r['batch']} x {r['n']} | {r['time_s']:.3f} | {ratio} | "
            f"{diff} | {eager} | {run} | {gflop} | {rate} | {share} | {mem} | {saved} | {ops} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Horizontal bars: a variant's label ("nystrom:conv_kernel=0,model.dropout=0") stays readable.
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(rows)))
    labels = [f"{r['task']} · {r['attention']}" for r in rows]
    ax.barh(range(len(rows)), [r["time_s"] for r in rows])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()  # the first row on top, as in the table
    ax.set(xlabel="seconds per training step", title="Training step (forward, backward, AdamW)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m lra.bench step", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=lambda s: s.split(","), default=["listops"])
    p.add_argument(
        "--attentions",
        type=split_variants,
        default=attention_names(),
        help="attention configs, each with optional ':key=value,...' overrides (a dotted key is any config "
        "path), comma-separated: nystrom,nystrom:conv_kernel=0,nystrom:model.dropout=0; default: every "
        "config of conf/attention/",
    )
    p.add_argument("--set", action="append", default=[], help="a config override, e.g. model.max_len=1000")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: what run.py would choose now)"
    )
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--baseline", default="nystrom")
    p.add_argument(
        "--compiled",
        action="store_true",
        help="also each attention with model.compile=true, beside its eager step",
    )
    p.add_argument("--load", type=int, default=0, help="processes spinning on the CPU while timing")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--parallel-check", action="store_true", help="2 runs side by side vs 1 alone")
    p.add_argument("--parallel-seconds", type=float, default=60.0)
    p.add_argument("--worker-timeout", type=float, default=1800.0)
    p.add_argument("--out", default="outputs/bench/step")
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)  # internal: "task:attention"
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    load = Load(args.load if not args.memory_worker else 0).__enter__()
    if args.threads is None:
        # What run.py would choose here and now (with --load, the spinning processes count as busy).
        from lra.resources import plan_compute

        args.threads = plan_compute(gpu=args.device == "cuda").threads
    torch.set_num_threads(args.threads)
    if not args.memory_worker:  # it keeps measure_memory's allocator, whose RSS follows live tensors
        pin_allocator()  # as run.py does
    try:
        return _main(args)
    finally:
        load.__exit__()


def measure_row(task: str, attention: str, samples: dict, evals: dict, gemm: float, args) -> dict:
    """One task x attention: median step time, ratio to the baseline, the run it implies
    (:mod:`lra.bench.estimate`), FLOPs and memory as asked."""
    cfg = compose(task, attention, args.set)
    row = {
        "task": task,
        "attention": attention,
        "batch": int(cfg.data.batch_size),
        "n": int(cfg.model.max_len),
        "time_s": statistics.median(samples[attention]),
        "time_samples_s": samples[attention],
        "eval_batch_s": statistics.median(evals[attention]),
        "ratio": None,
    }
    if task in SPLITS:
        row["estimate"] = run_seconds(cfg, task, row["time_s"], row["eval_batch_s"])
    if args.baseline in samples:
        pairs = list(zip(samples[attention], samples[args.baseline], strict=True))
        row["ratio"] = statistics.median(a / b for a, b in pairs)
        # What a variant adds or saves per step (an ablation's cost), from the same interleaved pairs.
        row["difference_s"] = statistics.median(a - b for a, b in pairs)
    eager = eager_of(attention)
    if eager in samples:
        pairs = zip(samples[attention], samples[eager], strict=True)
        row["ratio_to_eager"] = statistics.median(a / b for a, b in pairs)
    if not args.no_flops:
        row["flops"] = count_flops(Stepper(cfg, args.device))
        if row["flops"]:
            row["gflops_per_s"] = row["flops"] / row["time_s"] / 1e9
            row["gemm_share"] = row["gflops_per_s"] / gemm
    if not args.no_memory:
        row |= measure_memory(task, attention, args)
    return row


def parallel_table(parallel: list[dict]) -> str:
    lines = [
        "| task | attention | 1 run alone (steps/s) | 2 runs side by side (steps/s, sum) | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {p['task']} | {p['attention']} | {p['alone_steps_per_s']:.3f} | "
        f"{sum(p['two_jobs_steps_per_s']):.3f} | {p['aggregate_ratio']:.2f} |"
        for p in parallel
    ]
    return "\n\n" + "\n".join(lines)


def write_report(out: Path, record: dict, args, quiet: bool = False) -> None:
    """``step.json``, ``step.md`` (the step table, the run estimate) and ``step.png`` under ``out``."""
    (out / "step.json").write_text(json.dumps(record, indent=1))
    header = (
        f"device {args.device}, {args.threads} thread(s), {args.load} spinning process(es), "
        f"{record['gemm_dtype']} GEMM rate {record['gemm_gflops_per_s']:.1f} GFLOP/s\n\n"
    )
    report = header + format_table(record["rows"], args.baseline)
    estimate = format_estimate(record["rows"])
    if estimate:
        report += "\n\nOne run at each task's own setting (lra/bench/estimate.py), hours:\n\n" + estimate
    if record.get("parallel"):
        report += parallel_table(record["parallel"])
    (out / "step.md").write_text(report + "\n")
    plot(record["rows"], out / "step.png")
    if not quiet:
        print(report)
        print(f"wrote {out / 'step.json'}, {out / 'step.md'} and {out / 'step.png'}")


def _main(args) -> int:
    if args.compiled:
        args.attentions = with_compiled(args.attentions)
    if args.memory_worker:
        task, attention = args.memory_worker.split(":", 1)
        print(json.dumps(measure_memory_here(task, attention, args)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # The GEMM rate in the precision the steps run their matrix products in (bf16 under bf16-mixed).
    dtype = autocast_dtype(compose(args.tasks[0], args.attentions[0], args.set)) or torch.float32
    precision = str(dtype).removeprefix("torch.")
    gemm = gemm_rate(args.device, dtype=dtype)
    record = {
        "benchmark": "step",
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "loader_workers": 0,
        "load_processes": args.load,
        "gemm_gflops_per_s": gemm,
        "gemm_dtype": precision,
        "overrides": args.set,
        "torch": torch.__version__,
        "rows": [],
    }
    for task in args.tasks:
        samples, evals = time_task(task, args.attentions, args)
        for attention in args.attentions:
            record["rows"].append(measure_row(task, attention, samples, evals, gemm, args))
            print(f"  {task}/{attention}: {record['rows'][-1]['time_s']:.3f} s/step", file=sys.stderr)
        # Written after every task: a run cut short by a time limit keeps the tasks it finished.
        write_report(out, record | {"wall_s": time.time() - started}, args, quiet=True)
    if args.parallel_check:
        record["parallel"] = [parallel_check(t, a, args) for t in args.tasks for a in args.attentions]
    write_report(out, record | {"wall_s": time.time() - started}, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
