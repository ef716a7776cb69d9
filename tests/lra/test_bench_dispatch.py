"""What a step asks of a device (``lra.bench.dispatch``): kernels and operators dispatched, and the
bytes autograd saves for backward, on steps whose answer is known."""

from __future__ import annotations

import torch

from lra.bench.dispatch import count_ops, saved_bytes


def test_views_are_dispatched_but_launch_no_kernel():
    x = torch.randn(4, 6)

    def fn():
        y = x.view(6, 4).t()  # two views
        return (y + 1).sum()  # two kernels

    assert count_ops(fn) == {"ops": 2, "ops_all": 4}


def test_backward_counts_too():
    x = torch.randn(8, requires_grad=True)
    forward_only = count_ops(lambda: x.exp().sum())
    both = count_ops(lambda: x.exp().sum().backward())
    assert both["ops"] > forward_only["ops"]


def test_saved_bytes_are_the_activations_not_the_inputs():
    x = torch.randn(1000, requires_grad=True)
    w = torch.randn(1000, requires_grad=True)
    # exp saves its output (4,000 bytes); the product saves x and w, which are left out as live anyway.
    assert saved_bytes(lambda: (x.exp() * w).sum().backward(), exclude=[x, w]) == 4000
    assert saved_bytes(lambda: (x * w).sum().backward(), exclude=[x, w]) == 0
