"""The speed and memory callbacks: driven by hand with a fake clock, then inside a real run."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch

from lra.callbacks import PeakMemory, Throughput
from lra.callbacks.memory import peak_memory
from tests.helpers.cli import run_cli


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeModule:
    device = torch.device("cpu")

    def __init__(self):
        self.logged: dict[str, list[float]] = {}
        self.prog_bar: set[str] = set()

    def log(self, name, value, prog_bar=False, **kwargs):
        self.logged.setdefault(name, []).append(float(value))
        if prog_bar:
            self.prog_bar.add(name)


def fake_trainer(world_size: int = 1):
    strategy = SimpleNamespace(
        reduce=lambda tensor, reduce_op: tensor * (world_size if reduce_op == "sum" else 1)
    )
    return SimpleNamespace(
        global_step=0, log_every_n_steps=1, world_size=world_size, sanity_checking=False, strategy=strategy
    )


def batch(real: int, padded: int = 10) -> dict:
    """One sequence of ``padded`` positions, ``real`` of them real tokens."""
    mask = torch.zeros(1, padded, dtype=torch.bool)
    mask[0, :real] = True
    return {"mask": mask}


def train_step(cb, trainer, module, clock, seconds: float, real: int = 4, load: float = 0.0):
    """One training batch: ``load`` seconds fetching data before the batch starts, then ``seconds``."""
    clock.now += load
    cb.on_train_batch_start(trainer, module, batch(real), 0)
    clock.now += seconds
    trainer.global_step += 1
    cb.on_train_batch_end(trainer, module, None, batch(real), 0)


def evaluate(cb, trainer, module, clock, seconds: float, real: int, hooks=("validation", "test")):
    kind = hooks[0]
    getattr(cb, f"on_{kind}_epoch_start")(trainer, module)
    clock.now += seconds
    getattr(cb, f"on_{kind}_batch_end")(trainer, module, None, batch(real), 0)
    getattr(cb, f"on_{kind}_epoch_end")(trainer, module)


def test_throughput_excludes_warmup_and_evaluation():
    clock, trainer, module = FakeClock(), fake_trainer(), FakeModule()
    cb = Throughput(warmup_steps=2, clock=clock)
    cb.on_train_start(trainer, module)
    # Two slow warm-up steps: never counted.
    train_step(cb, trainer, module, clock, seconds=10.0, real=9)
    train_step(cb, trainer, module, clock, seconds=10.0, real=9)
    assert cb.train_steps == 0 and "speed/train_steps_per_s" not in module.logged
    # Steady state: 0.5 s of data loading + 0.5 s of compute per step, both count as training.
    train_step(cb, trainer, module, clock, seconds=0.5, load=0.5, real=4)
    train_step(cb, trainer, module, clock, seconds=0.5, load=0.5, real=4)
    # A 5 s validation, then 3 s of checkpoint saving before the next batch starts: excluded.
    evaluate(cb, trainer, module, clock, seconds=5.0, real=7)
    clock.now += 3.0
    train_step(cb, trainer, module, clock, seconds=1.0, real=4)

    summary = cb.summary()
    assert cb.train_steps == 3
    assert cb.train_time == pytest.approx(3.0)
    assert summary["train_steps_per_s"] == pytest.approx(1.0)
    assert summary["train_tokens_per_s"] == pytest.approx(12 / 3.0)  # padding not counted
    assert summary["eval_tokens_per_s"] == pytest.approx(7 / 5.0)
    # The progress bar shows throughput while training.
    assert module.logged["speed/train_steps_per_s"][-1] == pytest.approx(1.0)
    assert "speed/train_steps_per_s" in module.prog_bar


def test_throughput_ignores_sanity_check_and_counts_two_towers():
    clock, trainer, module = FakeClock(), fake_trainer(), FakeModule()
    cb = Throughput(warmup_steps=0, clock=clock)
    trainer.sanity_checking = True
    evaluate(cb, trainer, module, clock, seconds=100.0, real=5)
    trainer.sanity_checking = False
    assert cb.summary()["eval_tokens_per_s"] is None
    cb.on_train_start(trainer, module)
    two_towers = {"mask": batch(3)["mask"], "mask2": batch(6)["mask"]}
    cb.on_train_batch_start(trainer, module, two_towers, 0)
    clock.now += 2.0
    trainer.global_step += 1
    cb.on_train_batch_end(trainer, module, None, two_towers, 0)
    assert cb.summary()["train_tokens_per_s"] == pytest.approx(9 / 2.0)


def test_throughput_sums_tokens_over_ranks():
    clock, trainer, module = FakeClock(), fake_trainer(world_size=2), FakeModule()
    cb = Throughput(warmup_steps=0, clock=clock)
    cb.on_train_start(trainer, module)
    train_step(cb, trainer, module, clock, seconds=1.0, real=4)
    cb.on_train_end(trainer, module)
    summary = cb.summary()
    assert summary["train_steps_per_s"] == pytest.approx(1.0)  # a step is one step on every rank
    assert summary["train_tokens_per_s"] == pytest.approx(8.0)  # the fake reduce doubles the sum


def test_peak_memory_is_rss_on_cpu():
    before, kind = peak_memory(torch.device("cpu"))
    big = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB touched
    after, _ = peak_memory(torch.device("cpu"))
    del big
    assert kind == "rss" and after >= before > 0
    trainer, module = fake_trainer(), FakeModule()
    cb = PeakMemory()
    trainer.global_step = 1
    cb.on_train_batch_end(trainer, module, None, None, 0)
    cb.on_test_end(trainer, module)
    assert cb.kind == "rss" and cb.peak_bytes >= after
    assert module.logged["memory/peak_bytes"][0] > 0


def test_speed_and_memory_reach_csv_and_results(tmp_path, listops_args):
    run_dir = tmp_path / "run"
    proc = run_cli(*listops_args, "logger=csv", run_dir=run_dir)
    record = json.loads((run_dir / "results.json").read_text())
    for key in ("train_steps_per_s", "train_tokens_per_s", "eval_tokens_per_s", "peak_memory_bytes"):
        assert isinstance(record[key], float | int) and record[key] > 0, key
    assert record["peak_memory_kind"] == "rss"
    # Real tokens only: ListOps sequences here are at most 120 tokens, batches of 16.
    assert record["train_tokens_per_s"] <= record["train_steps_per_s"] * 16 * 120

    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    assert {"speed/train_steps_per_s", "speed/train_tokens_per_s", "speed/eval_tokens_per_s"} <= columns
    assert "memory/peak_bytes" in columns
    per_step = [r for r in rows if r["speed/train_steps_per_s"] and r["train/loss"]]
    assert per_step, "throughput is logged during training, not only at the end"
    final = [r for r in rows if r["speed/eval_tokens_per_s"]][-1]
    assert float(final["speed/train_steps_per_s"]) == pytest.approx(record["train_steps_per_s"], rel=1e-6)
    assert float(final["memory/peak_bytes"]) == pytest.approx(record["peak_memory_bytes"], rel=1e-6)
    # The run drew the step bar (its counting is test_progress_bar_counts_the_runs_steps's; the
    # rate's wording is tqdm's own).
    assert "Training steps" in proc.stdout + proc.stderr


def test_progress_bar_counts_the_runs_steps(monkeypatch):
    """One bar for the whole run: it counts optimisation steps (its one rate is steps per second) up
    to max_steps, from the step a resumed run starts at, and an epoch does not restart it."""
    from lra.callbacks.progress import StepProgressBar

    class Bar:
        total = initial = n = desc = unit = None

        def reset(self, total=None):
            self.total, self.n = total, 0

        def set_description(self, desc):
            self.desc = desc

    class Trainer:
        max_steps, global_step = 40, 12

    shown = Bar()
    monkeypatch.setattr(StepProgressBar, "init_train_tqdm", lambda self: shown)
    bar = StepProgressBar()
    bar.on_train_start(Trainer(), None)
    assert bar.train_progress_bar is shown
    assert (shown.unit, shown.total, shown.initial, shown.n) == ("step", 40, 12, 12)
    assert shown.desc == "Training steps"
    bar.on_train_epoch_start(Trainer(), None)
    assert (shown.total, shown.n) == (40, 12)


def test_progress_bar_shows_short_names_and_the_steps_own_loss(monkeypatch):
    """Long metric names squeezed the bar to nothing: it shows the loss and validation accuracy under
    short names, the loss of the step itself (not only every log_every_n_steps), and one rate."""
    import torch
    from pytorch_lightning.callbacks import TQDMProgressBar

    from lra.callbacks.progress import StepProgressBar

    logged = {"train/loss": 1.25, "val/acc": 0.5, "speed/train_steps_per_s": 3.0, "v_num": 0}
    monkeypatch.setattr(TQDMProgressBar, "get_metrics", lambda self, trainer, module: dict(logged))
    bar = StepProgressBar()
    assert bar.get_metrics(None, None) == {"loss": 1.25, "val acc": 0.5}

    class Bar:
        total, n, disable = 10, 0, False
        postfix = None

        def set_postfix(self, values):
            self.postfix = values

        def refresh(self):
            pass

    class Trainer:
        global_step = 1

    shown = Bar()
    monkeypatch.setattr(StepProgressBar, "train_progress_bar", property(lambda self: shown))
    bar.on_train_batch_end(Trainer(), None, {"loss": torch.tensor(2.5)}, None, 0)
    assert shown.postfix == {"loss": "2.500", "val acc": 0.5} and shown.n == 1
