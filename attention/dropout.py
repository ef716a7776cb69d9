"""Dropout with a faster mask on CPU.

``F.dropout`` draws its CPU mask with ``bernoulli_``, one generator call per element. Here one
``random_`` call on int64 serves four elements (its bits read as four 16-bit lanes, compared with a
threshold): for a 32 x 2000 x 128 activation, forward+backward took 63 ms with ``F.dropout``, 43–60
ms with uniform floats compared with ``p`` (an earlier form) and 36 ms with these lanes (one thread;
the mask alone 18 against 8.5 ms), 2026-11-28. The boolean mask is then turned into a float one (the
scale in it, in fp32 and fp64) and multiplied: ``torch.where`` with a boolean mask ran at a fifth of
a multiplication's rate on this CPU (9.1 against 2.4 ms for that activation), so forward+backward
fell from 33 to 20 ms (one thread, ``F.dropout`` 44 ms), at the cost of a float mask kept for
backward instead of a boolean one. At the ListOps setting the masks were the second largest item of
a Nyström training step. Each element is dropped with probability ``p`` rounded to a
multiple of 2^-15 (0.1 -> 0.100006) and kept ones are scaled by ``1 / (1 - p)`` of that rounded
``p``, so the expectation is kept exactly, as in ``F.dropout``; only the random stream differs
(``p`` within 2^-16 of 1 goes to ``F.dropout``; ``p`` below 2^-16 drops nothing). On other devices
``F.dropout`` is already fused and is used as is, as it is under ``torch.compile``. (Softmax attention keeps SDPA's own dropout:
written out by hand with this mask it was slower, 2.8 s against 2.1 s for one layer at
8 x 2 x 2000 x 2000.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    levels = round(p * _LEVELS)  # p as the mask draws it, in steps of 2^-15
    # Compiled, F.dropout is generated fused with its neighbours (and random_ cannot be traced).
    if x.device.type != "cpu" or levels >= _LEVELS or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    if levels == 0:  # p < 2^-16: no element would ever be dropped
        return x
    # A float mask, so that forward and backward are each a plain multiplication; autograd saves only
    # the mask. In fp32 and fp64 the scale is in it. A bf16 or fp16 mask would round the scale itself
    # (1 / 0.9 to 1.109375 in bf16: every kept element 0.16% too small, as with F.dropout), so there
    # the product is scaled by the exact Python float instead, one more pass.
    scale = _LEVELS / (_LEVELS - levels)
    keep = keep_mask(x.shape, p, x.device).to(x.dtype)
    if torch.finfo(x.dtype).bits >= 32:
        return x * keep.mul_(scale)
    return (x * keep).mul_(scale)


_LEVELS = 2**15


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Bool mask, each element True with probability ``1 - round(p 2^15) / 2^15``, independently
    (``p`` in [0, 1 - 2^-16), where that rounding stays below 1).

    ``random_`` fills an int64 with 63 uniform bits (the sign bit is 0). Shifted left by one, its
    four 16-bit lanes are uniform over [-2^15, 2^15), except that the lowest lane only takes even
    values; against an even threshold ``t``, ``P(lane < t) = (t + 2^15) / 2^16`` holds for that lane
    too, and the lanes are independent (disjoint bits), whichever the byte order."""
    levels = round(p * _LEVELS)
    if not 0 <= levels < _LEVELS:
        raise ValueError(f"keep_mask needs 0 <= p < 1 - 2^-16; got p={p}")
    numel = math.prod(shape)
    draws = -(-numel // 4)
    bits = torch.empty(draws, dtype=torch.int64, device=device).random_().bitwise_left_shift_(1)
    threshold = -_LEVELS + 2 * levels
    return (bits.view(torch.int16) >= threshold)[:numel].view(shape)


class Dropout(nn.Module):
    """``nn.Dropout`` with :func:`dropout`'s faster CPU mask."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
