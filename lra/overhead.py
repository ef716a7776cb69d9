"""Harness overhead: training steps/s through the full harness vs a bare PyTorch loop.

``python -m lra.overhead [--steps 200] [--repeats 2] [--device auto] [OVERRIDE ...]``

Both sides run in this one process, on the same composed config (by default the CPU ``quick``
ListOps preset), the same model, the same optimiser and schedule, and the same batches (the same data
module with the same seed). They alternate (bare, harness, bare, harness, ...) so that a slow phase
of a shared machine hits both.

- harness: :func:`lra.train.train`, exactly what ``run.py`` calls: Lightning, the LightningModule
  with its metrics and logging, the callbacks, the default W&B (offline) and CSV loggers and the
  progress bar. Its steps/s is the Throughput callback's number from results.json.
- bare: ``for batch in loader: loss = ce(model(batch)); loss.backward(); opt.step(); sched.step()``,
  timed the way the callback times (from the end of the warm-up steps to the end of the last step,
  data loading included).

Prints each pair and the median ratio harness/bare, and writes ``overhead.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OVERRIDES = ("task=listops", "experiment=quick")


def composed_config(overrides: list[str]):
    from lra.registry import compose

    return compose(overrides)


def make_config(args: argparse.Namespace):
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    overrides = [
        *DEFAULT_OVERRIDES,
        f"trainer.max_steps={args.steps}",
        # Validate only once, after the last step: evaluation is excluded from both numbers anyway.
        f"trainer.val_check_interval={args.steps}",
        f"trainer.accelerator={accelerator}",
        f"speed_warmup_steps={args.warmup}",
        "test=false",
        *args.overrides,
    ]
    return composed_config(overrides)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(cfg, device: torch.device, warmup: int) -> float:
    """Steps/s of the plain PyTorch training loop on the harness's model, data and optimiser."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from lra.schedule import make_schedule
    from lra.train import build_model

    pl.seed_everything(cfg.seed, workers=True)  # same seed, same order: the harness's batches
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_model(cfg).to(device).train()
    optim = cfg.optim
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=optim.lr,
        betas=tuple(optim.betas),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    sched = make_schedule(
        optim.get("schedule", "linear"), opt, optim.warmup_steps, int(cfg.trainer.max_steps)
    )
    steps = int(cfg.trainer.max_steps)
    step, start = 0, None
    # One loader, iterated once per epoch as Lightning does: its seeded generator then gives the same
    # shuffles, so the same batches (and the same padding) as the harness.
    loader = datamodule.train_dataloader()
    while step < steps:
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            logits = model(**{k: v for k, v in batch.items() if k != "label"})
            loss = F.cross_entropy(logits.float(), batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step == warmup:
                _sync(device)
                start = time.perf_counter()
            if step == steps:
                break
    _sync(device)
    return (steps - warmup) / (time.perf_counter() - start)


def harness(cfg, run_dir: Path) -> float:
    from lra.train import train

    record = train(cfg, run_dir)
    return float(record.metrics["train_steps_per_s"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lra.overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="training steps per run")
    p.add_argument("--warmup", type=int, default=20, help="first steps excluded from the timing")
    p.add_argument("--repeats", type=int, default=2, help="bare/harness pairs")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=Path("outputs/overhead"))
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.dim=128 data.batch_size=64")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if not 0 < args.warmup < args.steps:
        p.error("need 0 < --warmup < --steps")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = make_config(args)
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = []
    with tempfile.TemporaryDirectory(prefix="lra-overhead-") as tmp:
        for i in range(args.repeats):
            bare = bare_loop(cfg, device, args.warmup)
            full = harness(cfg, Path(tmp) / f"run{i}")
            pairs.append({"bare_steps_per_s": bare, "harness_steps_per_s": full, "ratio": full / bare})
            print(f"repeat {i}: bare {bare:.2f} steps/s, harness {full:.2f} steps/s, ratio {full / bare:.3f}")
    ratio = statistics.median(p["ratio"] for p in pairs)
    result = {
        "ratio_harness_to_bare": ratio,
        "overhead_percent": 100 * (1 - ratio),
        "pairs": pairs,
        "steps": args.steps,
        "warmup": args.warmup,
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "overrides": [*DEFAULT_OVERRIDES, *args.overrides],
        "torch": torch.__version__,
    }
    (args.out / "overhead.json").write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"harness / bare steps/s: {ratio:.3f} (overhead {100 * (1 - ratio):.1f}%, median of {args.repeats}); "
        f"wrote {args.out / 'overhead.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
