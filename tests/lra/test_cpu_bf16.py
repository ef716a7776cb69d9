"""bf16 mixed precision on the CPU (``trainer=cpu_bf16``): the linear layers run in bf16, the
approximate attention's landmark path in fp32, and a run trains, checkpoints and tests as in fp32."""

from __future__ import annotations

import math

import pytest
import torch

from lra.bench.step import Stepper, autocast_dtype, compose
from tests.helpers.runs import read_record, train_here

SMALL = ["model.max_len=96", "data.batch_size=2"]


def dtypes_seen(stepper: Stepper) -> dict[str, torch.dtype]:
    """The output dtype of the first linear layer and the dtype of the first attention's landmark
    factors (F, A, B)."""
    from attention.nystrom import NystromAttention

    seen: dict[str, torch.dtype] = {}
    linear = next(m for m in stepper.model.modules() if isinstance(m, torch.nn.Linear))
    core = next(m for m in stepper.model.modules() if isinstance(m, NystromAttention))

    def record(name):
        def hook(module, inputs, output):  # returns None: the output stays as it is
            seen.setdefault(name, output.dtype)

        return hook

    linear.register_forward_hook(record("linear"))
    combine = core.combine

    def recording_combine(factors):
        seen.setdefault("landmarks", factors.f.dtype)
        return combine(factors)

    core.combine = recording_combine
    stepper.step()
    return seen


@pytest.mark.parametrize(("trainer", "linear"), [("default", torch.float32), ("cpu_bf16", torch.bfloat16)])
def test_step_runs_linear_layers_in_the_runs_precision(trainer, linear):
    cfg = compose("listops", "spectral_shift", [f"trainer={trainer}", *SMALL])
    assert autocast_dtype(cfg) == (torch.bfloat16 if trainer == "cpu_bf16" else None)
    seen = dtypes_seen(Stepper(cfg, "cpu"))
    assert seen["linear"] == linear
    assert seen["landmarks"] == torch.float32  # softmaxes and pseudo-inverse stay in fp32


def test_a_cpu_bf16_run_trains_checkpoints_and_tests(tmp_path, listops_args):
    train_here(tmp_path / "run", *listops_args, "attention=nystrom", "trainer=cpu_bf16", "logger=csv")
    record = read_record(tmp_path / "run")
    assert record["status"] == "completed"
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"
    assert 0.0 <= record["test_acc"] <= 1.0 and math.isfinite(record["best_val_acc"])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
