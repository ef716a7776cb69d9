"""Learning-rate schedules: onecycle equals PyTorch's OneCycleLR (lr and beta1) and resumes past its end."""

from __future__ import annotations

import pytest
import torch

from lra.schedule import OneCycle, make_schedule


def optimiser():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4, betas=(0.9, 0.999), eps=1e-6)


@pytest.mark.parametrize(("warmup", "total"), [(1000, 5000), (30, 300)])
def test_onecycle_equals_torch_onecyclelr(warmup, total):
    ref_opt, opt = optimiser(), optimiser()
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=1e-4, total_steps=total, pct_start=warmup / total, anneal_strategy="linear"
    )
    mine = OneCycle(opt, warmup, total)
    for _ in range(total - 1):
        a, b = ref_opt.param_groups[0], opt.param_groups[0]
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-9)
        assert b["betas"][0] == pytest.approx(a["betas"][0], abs=1e-12)
        ref_opt.step(), opt.step(), ref.step(), mine.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 / 25 / 1e4, rel=1e-6)


def test_onecycle_resumes_with_a_longer_run():
    opt = optimiser()
    sched = make_schedule("onecycle", opt, 2, 8)
    for _ in range(8):
        opt.step(), sched.step()
    state = sched.state_dict()
    opt2 = optimiser()
    longer = make_schedule("onecycle", opt2, 2, 12)
    longer.load_state_dict(state)
    lrs = []
    for _ in range(3):
        opt2.step(), longer.step()
        lrs.append(opt2.param_groups[0]["lr"])
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] > 0


def test_unknown_schedule_names_the_key():
    with pytest.raises(ValueError, match="optim.schedule"):
        make_schedule("cosine", optimiser(), 1, 10)


def test_onecycle_restores_lr_and_beta1_of_its_step_without_a_warning(recwarn):
    """A resumed run continues with the lr and beta1 of the step it was saved at (and says nothing a
    user cannot act on: step(epoch) is deprecated in PyTorch)."""
    opt = optimiser()
    ran = OneCycle(opt, 30, 300)
    for _ in range(57):
        opt.step(), ran.step()
    resumed_opt = optimiser()
    resumed = OneCycle(resumed_opt, 30, 300)
    resumed.load_state_dict(ran.state_dict())
    assert resumed_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert resumed_opt.param_groups[0]["betas"] == opt.param_groups[0]["betas"]
    assert resumed.get_last_lr() == ran.get_last_lr()
    assert not [w for w in recwarn if "epoch parameter" in str(w.message)]
