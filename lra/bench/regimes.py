"""Synthetic q, k, v for the fidelity benchmark, one generator per attention regime.

Each regime takes a ``temperature``: logits are ``q . k / (sqrt(d) * temperature)`` (q is divided by
it), so a lower temperature means peakier rows.

- ``random``: q, k, v i.i.d. standard normal: unstructured attention, a slowly decaying spectrum.
- ``smooth``: q and k vary smoothly along the sequence (Gaussian-filtered noise, renormalised), so
  neighbours attend alike: the low-rank case Nyström is built for.
- ``smooth-fine`` / ``smooth-coarse``: the same with correlation lengths of 2 tokens and n / 8.
- ``self``: k = q, so the diagonal logit ``|q_i|^2 / sqrt(d) ~ sqrt(d)`` dominates every row: tokens
  attend strongly to themselves and the spectrum of S is flat (about ``alpha I`` plus a small part).
- ``local``: neighbouring tokens attend to each other: q and k are random Fourier features of the
  position (plus some noise), so ``q_i . k_j`` is a Gaussian bump in ``i - j`` of width 8 tokens.
- ``local-narrow`` / ``local-wide``: the same bump 2 and 32 tokens wide (narrower than the
  spectral-shift window's reach, and wider than it).
- ``local-self``: a mixture, the ``local`` bump plus a shared noise part in q and k (k = q there), so a
  token attends to itself and to its neighbours.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attention.reference import dense_softmax_attention, dense_softmax_weights

REGIMES = (
    "random",
    "smooth",
    "smooth-fine",
    "smooth-coarse",
    "self",
    "local",
    "local-narrow",
    "local-wide",
    "local-self",
)
LOCAL_WIDTHS = {"local": 8.0, "local-narrow": 2.0, "local-wide": 32.0, "local-self": 8.0}
SMOOTH_WIDTHS = {
    "smooth": lambda n: max(n / 64, 2.0),
    "smooth-fine": lambda n: 2.0,
    "smooth-coarse": lambda n: n / 8,
}


def _smooth_noise(shape, generator, dtype, width: float) -> torch.Tensor:
    """Gaussian-filtered noise along the sequence (dim -2), unit variance per feature."""
    b, h, n, d = shape
    noise = torch.randn(b * h, d, n, generator=generator, dtype=dtype)
    radius = int(3 * width)
    t = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-0.5 * (t / width) ** 2)
    kernel = (kernel / kernel.sum()).expand(d, 1, -1).contiguous()
    x = F.conv1d(F.pad(noise, (radius, radius), mode="reflect"), kernel, groups=d)
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)
    return x.transpose(1, 2).reshape(b, h, n, d)


def _position_features(shape, generator, dtype, width: float) -> torch.Tensor:
    """Random Fourier features of the position: ``phi_i . phi_j ~ exp(-(i - j)^2 / (2 width^2))``,
    scaled to norm sqrt(d) like a standard normal vector (d even)."""
    b, h, n, d = shape
    freq = torch.randn(b, h, 1, d // 2, generator=generator, dtype=dtype) / width
    phase = torch.arange(n, dtype=dtype)[:, None] * freq
    return torch.cat([phase.cos(), phase.sin()], dim=-1) * math.sqrt(2.0)


def make_regime(
    name: str,
    batch: int,
    heads: int,
    n: int,
    dim: int,
    temperature: float,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, heads, n, dim)
    v = torch.randn(shape, generator=g, dtype=dtype)
    if name == "random":
        q, k = torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)
    elif name in SMOOTH_WIDTHS:
        width = SMOOTH_WIDTHS[name](n)  # smooth: a few segments of m = 64 landmarks
        q, k = (_smooth_noise(shape, g, dtype, width) for _ in range(2))
    elif name in LOCAL_WIDTHS:
        pos = _position_features(shape, g, dtype, width=LOCAL_WIDTHS[name])
        noise_q = torch.randn(shape, generator=g, dtype=dtype)
        noise_k = noise_q if name == "local-self" else torch.randn(shape, generator=g, dtype=dtype)
        q, k = pos + 0.5 * noise_q, pos + 0.5 * noise_k
    elif name == "self":
        q = torch.randn(shape, generator=g, dtype=dtype)
        k = q.clone()
    else:
        raise ValueError(f"regime must be one of {'|'.join(REGIMES)}; got {name!r}")
    return q / temperature, k, v


def _per_item(mask, b):
    return None if mask is None else mask[b : b + 1]


def exact_attention(q, k, v, mask=None) -> torch.Tensor:
    """Dense softmax attention (``attention.reference``), one batch item at a time to bound memory at
    long lengths."""
    items = range(q.shape[0])
    return torch.cat(
        [dense_softmax_attention(q[b : b + 1], k[b : b + 1], v[b : b + 1], _per_item(mask, b)) for b in items]
    )


def diagonal_mass(q, k, mask=None) -> float:
    """Mean softmax weight of each real token on itself (how self-attending the regime is)."""
    total, count = 0.0, 0
    for b in range(q.shape[0]):
        diag = dense_softmax_weights(q[b : b + 1], k[b : b + 1], _per_item(mask, b))[0].diagonal(
            dim1=-2, dim2=-1
        )
        if mask is not None:
            diag = diag[:, mask[b]]
        total += float(diag.sum())
        count += diag.numel()
    return total / max(count, 1)
