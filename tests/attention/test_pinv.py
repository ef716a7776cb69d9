"""The Newton-Schulz pseudo-inverse: its hand-written backward is the exact derivative of its
iterations (the same as autograd's through the same products), and it inverts."""

from __future__ import annotations

import torch

from attention._pinv import NewtonSchulz, newton_schulz_pinv, newton_schulz_steps


def landmark_like(b: int = 3, m: int = 6) -> torch.Tensor:
    """Row-stochastic matrices with a strong diagonal, as softmax landmark matrices, in float64."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, m, m, generator=g, dtype=torch.float64) + 3 * torch.eye(m, dtype=torch.float64)
    return logits.softmax(dim=-1)


def test_backward_equals_autograd_through_the_iterations():
    a = landmark_like().requires_grad_()
    z = (a.detach().mT / 40).requires_grad_()
    grad = torch.randn(a.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mine = torch.autograd.grad(NewtonSchulz.apply(a, z, 5), (a, z), grad)
    autograd = torch.autograd.grad(newton_schulz_steps(a, z, 5)[-1], (a, z), grad)
    for x, y in zip(mine, autograd, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    a = landmark_like(2, 4).requires_grad_()
    z = (a.detach().mT / 20).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, z: NewtonSchulz.apply(a, z, 3), (a, z))


def test_inverts_and_keeps_leading_dimensions():
    a = landmark_like(6, 8).view(2, 3, 8, 8)
    z = newton_schulz_pinv(a, 20)
    assert z.shape == a.shape
    torch.testing.assert_close(z @ a, torch.eye(8, dtype=a.dtype).expand_as(a), rtol=0, atol=1e-8)
