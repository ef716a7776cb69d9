"""``python tests/helpers/faults.py ARGS``: ``run.py ARGS`` that sends itself a signal at one point.

The point and the signal come from the environment, ``LRA_FAULT=<signal>@<where>``, where ``where`` is

- ``step:N``      before training step N+1 starts (global step N);
- ``backward:N``  in training step N+1, after its backward pass and before the optimiser step;
- ``val:N:B``     before batch B of the validation at global step N;
- ``ckpt:K``      half-way through writing the K-th checkpoint file (1-based) of the process;
- ``test:B``      before batch B of the final test;
- ``time:S``      S seconds after training starts (anywhere, from a timer thread);

and ``signal`` is SIGKILL, SIGINT or SIGTERM. Nothing else about the run changes.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
from pathlib import Path

import pytorch_lightning as pl

REPO = Path(__file__).resolve().parents[2]


class Fault(pl.Callback):
    """Sends ``signal`` to this process once, at the point ``where`` names (see the module's doc)."""

    def __init__(self, spec: str):
        name, where = spec.split("@")
        self.signal = getattr(signal, name)
        self.kind, *numbers = where.split(":")
        self.numbers = [float(n) if self.kind == "time" else int(n) for n in numbers]
        self.fired = False
        self.writes = 0

    def fire(self) -> None:
        if not self.fired:
            self.fired = True
            os.kill(os.getpid(), self.signal)

    def on_train_start(self, trainer, pl_module):
        if self.kind == "time":
            timer = threading.Timer(self.numbers[0], self.fire)
            timer.daemon = True  # a run that ends first exits without it
            timer.start()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.kind == "step" and trainer.global_step == self.numbers[0]:
            self.fire()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.kind == "backward" and trainer.global_step == self.numbers[0]:
            self.fire()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.kind == "val" and trainer.global_step == self.numbers[0] and batch_idx == self.numbers[1]:
            self.fire()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.kind == "test" and batch_idx == self.numbers[0]:
            self.fire()

    def wrap_writer(self, write):
        """The checkpoint writer, signalling half-way through the ``ckpt:K``-th file."""

        def write_then_fault(f, checkpoint):
            self.writes += 1
            if self.kind == "ckpt" and self.writes == self.numbers[0]:
                f.write(b"\0" * 4096)  # part of the file is on disk when the signal comes
                f.flush()
                self.fire()
                f.seek(0)  # a handled signal lets the write go on: from the start, as it would have
                f.truncate()
            write(f, checkpoint)

        return write_then_fault


def install(spec: str, setattr=setattr) -> Fault:
    """Make every trainer lra.train builds carry the fault (``setattr``: e.g. pytest's monkeypatch)."""
    import lra.checkpointing
    import lra.train

    fault = Fault(spec)
    build = lra.train.build_trainer
    setattr(lra.checkpointing, "_write", fault.wrap_writer(lra.checkpointing._write))
    setattr(
        lra.train,
        "build_trainer",
        lambda cfg, run_dir, loggers, callbacks: build(cfg, run_dir, loggers, [*callbacks, fault]),
    )
    return fault


if __name__ == "__main__":
    # The repository, not this script's folder (whose attention.py would shadow the package), first.
    sys.path[0] = str(REPO)
    install(os.environ["LRA_FAULT"])
    sys.argv[0] = str(REPO / "run.py")
    runpy.run_path(str(REPO / "run.py"), run_name="__main__")
