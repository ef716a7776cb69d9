"""One command for a machine with one CUDA GPU: ``python -m lra.gpu_check [--out DIR] [--wheels DIR]``.

Sized to finish within ``--budget`` seconds (default 560, under 10 minutes on one H100); every
result lands under ``--out``:

1. ``environment.json``: torch, CUDA device, which optional packages are present;
2. ``runs/<attention>/``: the three ListOps runs at the published setting (5,000 steps, validation
   every 50), started together on the one GPU first because they are the long pole, each stopped
   cleanly by Lightning's ``max_time`` (then tested) if the budget runs short; ``compare/``
   (``lra.compare`` over them); ``--run-set model.compile=true`` runs them compiled;
3. ``tests.xml`` / ``tests.log``: the CUDA-only tests (``pytest -m cuda``: bf16 autocast, CUDA-event
   timing, ``max_memory_allocated``, a run on the GPU), run while the three runs train (so their
   first minute shares the GPU);
4. ``efficiency/``: ``lra.bench efficiency`` on CUDA from 512 to 16,384 tokens, after the runs (alone),
   padded as ListOps' batches, the conv skip as a native convolution too, and softmax, Nyström and
   spectral shift compiled beside eager, with kernels and bytes saved for backward per layer;
5. ``step/``: ``lra.bench step`` on CUDA (ListOps, the three attentions, eager and compiled), with
   what time is left, and the hours one run of each would take; ``--step-tasks
   listops,text,retrieval,image,pathfinder --skip runs,tests,efficiency`` spends the budget on the
   whole LRA table's estimate instead;
6. ``summary.json`` and ``summary.md``: what each step did, how long it took, the headline numbers.

It needs only PyTorch and Lightning to be installed and no network: ``--wheels DIR`` installs the
project's other dependencies from a folder of wheels (``pip download`` them beforehand), W&B is
replaced by CSV logging when it is absent, and the ListOps data is generated locally. A step that
fails is recorded and the next one runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NEEDED = ("hydra", "omegaconf", "torchmetrics", "filelock", "tqdm", "numpy", "matplotlib", "plotly")
WHEEL_NAMES = {"hydra": "hydra-core", "omegaconf": "omegaconf"}
ATTENTIONS = ("softmax", "nystrom", "spectral_shift")


def missing_modules() -> list[str]:
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def install_from_wheels(wheels: Path, modules: list[str]) -> str:
    names = [WHEEL_NAMES.get(m, m) for m in modules]
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *names]
    done = subprocess.run(cmd, capture_output=True, text=True)
    return (done.stdout + done.stderr)[-4000:]


def environment() -> dict:
    import torch

    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "device_count": torch.cuda.device_count(),
        "wandb": importlib.util.find_spec("wandb") is not None,
        "datasets": importlib.util.find_spec("datasets") is not None,
        "missing": missing_modules(),
    }


class Steps:
    """Runs the check's commands one after another, recording each; a failure never stops the rest.
    Every step's time limit is cut to what is left of the whole check's budget."""

    def __init__(self, out: Path, budget: float = float("inf")):
        self.out = out
        self.records: list[dict] = []
        self.deadline = time.time() + budget

    def left(self) -> float:
        return self.deadline - time.time()

    def run(self, name: str, cmd: list[str], timeout: float, env: dict | None = None) -> dict:
        started = time.time()
        timeout = min(timeout, self.left())
        if timeout < 5:
            record = {"step": name, "command": " ".join(cmd), "exit": "no time left", "seconds": 0.0}
            self.records.append(record)
            print(f"[gpu_check] {name}: skipped, the budget is spent", flush=True)
            return record
        log = self.out / f"{name}.log"
        with open(log, "w") as f:
            try:
                done = subprocess.run(
                    cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, env=env
                )
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        record = {"step": name, "command": " ".join(cmd), "exit": code, "seconds": time.time() - started}
        self.records.append(record)
        print(f"[gpu_check] {name}: exit {code} in {record['seconds']:.0f}s (log {log})", flush=True)
        return record


# --smoke: the same orchestration on the CPU at toy sizes (what the test suite runs; no GPU needed).
SMOKE_RUN = [
    "trainer=cpu",
    "data.generate.num_train=64",
    "data.generate.num_val=16",
    "data.generate.num_test=16",
    "data.generate.min_length=10",
    "data.generate.max_length=100",
    "data.generate.max_depth=5",
    "model.max_len=128",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "optim.warmup_steps=1",
    "data.workers=1",
]


def _hms(seconds: float) -> str:
    seconds = max(int(seconds), 60)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def listops_command(data_dir: Path, logger: str, runs: int, smoke: bool = False) -> list[str]:
    threads = max((os.cpu_count() or runs) // runs, 1)  # the GPU computes; the CPUs only feed it
    device = SMOKE_RUN if smoke else ["trainer=gpu", f"threads={threads}"]
    return [sys.executable, "run.py", "task=listops", *device, f"logger={logger}", f"data_dir={data_dir}"]


def prepare_listops(out: Path, base: list[str], timeout: float) -> None:
    """Build the data once before the runs start (they would wait on the same lock anyway)."""
    prepare = [
        *base,
        "attention=nystrom",
        "trainer.max_steps=1",
        "test=false",
        f"hydra.run.dir={out}/prepare",
    ]
    with open(out / "prepare.log", "w") as log:
        subprocess.run(prepare, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=max(timeout, 60))


def start_listops_runs(out: Path, base: list[str], max_time: float, attentions: tuple[str, ...]) -> dict:
    """The published-setting ListOps runs side by side on the one GPU, started and left running.

    ``max_time`` (seconds) becomes Lightning's ``trainer.max_time``: a run that has not reached its
    5,000 steps by then stops like a finished one and is tested at its best checkpoint, so a short
    budget still yields a test number (its ``global_step`` says how far it got)."""
    procs = {}
    for attention in attentions:
        run_dir = out / "runs" / attention
        log = open(out / f"run_{attention}.log", "w")
        cmd = [
            *base,
            f"attention={attention}",
            f"hydra.run.dir={run_dir}",
            f"+trainer.max_time={_hms(max_time)}",
        ]
        procs[attention] = (subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), cmd, log)
    return procs


def finish_listops_runs(out: Path, procs: dict, deadline: float) -> list[dict]:
    """Wait for the runs (killing any still going at ``deadline``) and read their results."""
    records = []
    for attention, (proc, cmd, log) in procs.items():
        try:
            code = proc.wait(timeout=max(deadline - time.time(), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        log.close()
        result = out / "runs" / attention / "results.json"
        row = {"step": f"listops/{attention}", "command": " ".join(cmd), "exit": code}
        if result.is_file():
            r = json.loads(result.read_text())
            row |= {k: r.get(k) for k in RESULT_KEYS}
        records.append(row)
    return records


RESULT_KEYS = (
    "status",
    "best_val_acc",
    "test_acc",
    "train_steps_per_s",
    "peak_memory_bytes",
    "wall_time_s",
    "global_step",
    "best_step",
)


def summarise(out: Path, env: dict, steps: Steps, runs: list[dict], started: float) -> None:
    summary = {"environment": env, "steps": steps.records, "listops": runs, "wall_s": time.time() - started}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = [
        f"# GPU check: {env.get('device')} (torch {env.get('torch')}, CUDA {env.get('cuda')})",
        "",
        "| step | exit | seconds |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {s['step']} | {s['exit']} | {s['seconds']:.0f} |" for s in steps.records]
    lines += [
        "",
        "| ListOps run | status | steps | best val (step) | test | steps/s | peak memory (MiB) | wall (s) |",
    ]
    lines += ["| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        mem = r.get("peak_memory_bytes")
        lines.append(
            f"| {r['step']} | {r.get('status', r['exit'])} | {r.get('global_step')} | "
            f"{r.get('best_val_acc')} ({r.get('best_step')}) | {r.get('test_acc')} | "
            f"{r.get('train_steps_per_s')} | {None if mem is None else round(mem / 2**20)} | "
            f"{r.get('wall_time_s')} |"
        )
    step = out / "step" / "step.json"
    if step.exists():  # the hours of one run per task and attention (lra/bench/estimate.py)
        from lra.bench.estimate import format_estimate

        estimate = format_estimate(json.loads(step.read_text())["rows"])
        lines += [
            "",
            "One run at each task's own setting, estimated from the step benchmark (h):",
            "",
            estimate,
        ]
    lines.append(f"\nTotal {summary['wall_s']:.0f} s.")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lra.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/gpu_check")
    p.add_argument("--wheels", default=None, help="a folder of wheels for missing dependencies")
    p.add_argument("--data-dir", default=None, help="where ListOps is generated (default: OUT/data)")
    p.add_argument("--budget", type=float, default=560.0, help="seconds for the whole check")
    p.add_argument("--runs-timeout", type=float, default=420.0, help="seconds at most for the ListOps runs")
    p.add_argument(
        "--reserve",
        type=float,
        default=120.0,
        help="seconds of the budget kept for the efficiency and step benchmarks after the runs",
    )
    p.add_argument("--attentions", default=",".join(ATTENTIONS), help="the ListOps runs' attentions")
    p.add_argument(
        "--run-set",
        action="append",
        default=[],
        help="a config override for the ListOps runs, repeatable: --run-set model.compile=true",
    )
    p.add_argument("--skip", default="", help="comma-separated steps to skip: tests,efficiency,step,runs")
    p.add_argument(
        "--step-tasks",
        default="listops",
        help="the step benchmark's tasks; listops,text,retrieval,image,pathfinder estimates the whole LRA "
        "table's hours (with --skip runs,tests,efficiency to give it the budget)",
    )
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # CPU, toy sizes: for tests
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.wheels and missing_modules():
        (out / "install.log").write_text(install_from_wheels(Path(args.wheels), missing_modules()))
    env = environment()
    (out / "environment.json").write_text(json.dumps(env, indent=1))
    if env["device"] is None and not args.smoke:
        print("[gpu_check] no CUDA device: nothing to check", file=sys.stderr)
        return 2
    device = "cpu" if args.smoke else "cuda"
    skip = set(filter(None, args.skip.split(",")))
    child_env = {**os.environ, "WANDB_MODE": "offline", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    steps = Steps(out, args.budget - (time.time() - started))
    py = sys.executable
    runs: list[dict] = []
    procs: dict = {}
    if "runs" not in skip:
        logger = "default" if env["wandb"] else "csv"
        data_dir = Path(args.data_dir) if args.data_dir else out / "data"
        attentions = tuple(filter(None, args.attentions.split(",")))
        base = [*listops_command(data_dir, logger, len(attentions), smoke=args.smoke), *args.run_set]
        prepare_listops(out, base, steps.left())
        runs_started = time.time()
        max_time = min(args.runs_timeout, steps.left() - args.reserve)
        procs = start_listops_runs(out, base, max_time, attentions)
        # Lightning stops at max_time and then tests: allow for the test and the process's exit.
        runs_deadline = runs_started + max_time + 90
    if "tests" not in skip:
        test_cmd = [
            py,
            "-m",
            "pytest",
            "-m",
            "cuda",
            "-q",
            "tests/attention/test_cuda.py",
            f"--junitxml={out}/tests.xml",
        ]
        steps.run("tests", test_cmd, 300, child_env)
    if procs:
        runs = finish_listops_runs(out, procs, min(runs_deadline, steps.deadline))
        print(f"[gpu_check] ListOps runs: {time.time() - runs_started:.0f}s", flush=True)
        steps.run("compare", [py, "-m", "lra.compare", str(out / "runs"), "--out", str(out / "compare")], 120)
    if "efficiency" not in skip:
        steps.run("efficiency", efficiency_command(out, device, args.smoke), 240, child_env)
    if "step" not in skip:
        # Last: whatever time is left (its report is rewritten after every task, so a cut keeps some).
        step = step_command(out, device, args.smoke, args.attentions, args.step_tasks)
        steps.run("step", step, steps.left(), child_env)
    summarise(out, env, steps, runs, started)
    return 0


def efficiency_command(out: Path, device: str, smoke: bool) -> list[str]:
    lengths = "64,128" if smoke else "512,1024,2048,4096,8192,16384"
    extra = ["--batch", "1", "--reps", "1", "--landmarks", "16", "--no-memory"] if smoke else []
    if smoke:  # the orchestration, not every variant: the default suite stays short
        extra += ["--variants", "softmax,nystrom,spectral_shift"]
    else:  # eager and compiled side by side for the three of the GPU goals (compiling all ten would not fit)
        extra += ["--compiled", "softmax,nystrom,spectral_shift", "--min-real", "0.5"]
    efficiency = [sys.executable, "-m", "lra.bench", "efficiency", "--devices", device, "--lengths", lengths]
    return [*efficiency, *extra, "--out", str(out / "efficiency")]


def step_command(out: Path, device: str, smoke: bool, attentions: str, tasks: str = "listops") -> list[str]:
    # The ListOps runs' attentions (all ten would not fit the step's time); the runs' precision (bf16
    # autocast), not the CPU default's fp32.
    extra = ["--attentions", attentions] + (
        ["--set", "model.max_len=64", "--set", "data.batch_size=2", "--reps", "1"]
        if smoke
        else ["--set", "trainer=gpu", "--compiled"]
    )
    step = [sys.executable, "-m", "lra.bench", "step", "--device", device, "--tasks", tasks]
    return [*step, *extra, "--out", str(out / "step")]


if __name__ == "__main__":
    sys.exit(main())
