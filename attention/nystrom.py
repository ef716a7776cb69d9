"""Nyström attention (Xiong et al., 2021): ``out = F pinv(A) (B V)`` (+ a depthwise-conv skip on V).

Evaluated right to left so that nothing n x n is formed: O(n m d + m^3) time, O(n m + n d) memory.
The landmark pieces live in :mod:`attention._landmarks` so that spectral shift can reuse them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention._landmarks import (
    NystromFactors,
    exact_for_short_rows,
    landmark_system,
    masked_softmax_attention,
    nystrom_factors,
)
from attention._pinv import PINV_METHODS, pseudo_inverse
from attention.base import AttentionBase, check_inputs


class ValueConvSkip(nn.Module):
    """Depthwise convolution of V along the sequence, one kernel per head (Nyströmformer's skip).

    Run as a depthwise ``conv1d`` over ``heads * head_dim`` channels (each head's kernel repeated over
    its ``head_dim`` channels): on CPU this is about 4x faster forward+backward than the equivalent
    grouped ``conv2d`` with a (kernel, 1) filter, which otherwise dominates the layer's time.
    """

    def __init__(self, num_heads: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        # Same initialisation as nn.Conv2d's default (kaiming-uniform, fan_in = kernel).
        bound = kernel**-0.5
        self.weight = nn.Parameter(torch.empty(num_heads, 1, kernel).uniform_(-bound, bound))

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # (b, h, n, d), zero at padded positions
        b, h, n, d = v.shape
        x = v.transpose(-1, -2).reshape(b, h * d, n)
        weight = self.weight.to(x.dtype).repeat_interleave(d, dim=0)
        # Zero 'same' padding (as torch's padding="same": the extra zero of an even kernel goes right).
        total = self.kernel - 1
        y = F.conv1d(F.pad(x, (total // 2, total - total // 2)), weight, groups=h * d)
        return y.reshape(b, h, d, n).transpose(-1, -2)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16/bf16 -> fp32 (softmax and Newton-Schulz are unstable in half precision); fp64 stays fp64.
    return torch.promote_types(dtype, torch.float32)


def _check_positive_int(value, key: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"attention.{key} must be an integer >= {minimum}; got {value!r}")


class NystromAttention(AttentionBase):
    """Nyström attention with masked segment-mean landmarks.

    Knobs: ``num_landmarks`` (m), ``pinv`` (newton|exact), ``pinv_iterations`` (Newton-Schulz steps),
    ``conv_kernel`` (depthwise-conv skip on V; 0 = off). For ``n <= m`` it is exact softmax.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_len: int | None = None,
        num_landmarks: int = 64,
        pinv: str = "newton",
        pinv_iterations: int = 6,
        conv_kernel: int = 35,
    ):
        super().__init__(num_heads, head_dim, max_len)
        _check_positive_int(num_landmarks, "num_landmarks")
        if pinv not in PINV_METHODS:
            raise ValueError(f"attention.pinv must be one of {'|'.join(PINV_METHODS)}; got {pinv!r}")
        _check_positive_int(pinv_iterations, "pinv_iterations")
        _check_positive_int(conv_kernel, "conv_kernel", minimum=0)
        self.num_landmarks = num_landmarks
        self.pinv = pinv
        self.pinv_iterations = pinv_iterations
        self.conv_kernel = conv_kernel
        self.skip = ValueConvSkip(num_heads, conv_kernel) if conv_kernel > 0 else None

    # Whether combine() needs each row's max logit of F (spectral shift's free normaliser does).
    keep_row_max = False

    def extra_repr(self) -> str:
        return (
            f"num_landmarks={self.num_landmarks}, pinv={self.pinv}, "
            f"pinv_iterations={self.pinv_iterations}, conv_kernel={self.conv_kernel}"
        )

    def pseudo_inverse(self, system: torch.Tensor) -> torch.Tensor:
        return pseudo_inverse(system, self.pinv, self.pinv_iterations)

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        n = q.shape[-2]
        dtype = _compute_dtype(q.dtype)
        # Autocast off: the three softmaxes and the pseudo-inverse run in fp32 even under bf16/fp16.
        with torch.autocast(device_type=q.device.type, enabled=False):
            q32, k32, v32 = (t.to(dtype) for t in (q, k, v))
            if self.num_landmarks >= n:
                core = masked_softmax_attention(q32, k32, v32, key_padding_mask)
                self.on_exact_fallback(q32)
            else:
                factors = nystrom_factors(
                    q32, k32, v32, key_padding_mask, self.num_landmarks, keep_row_max=self.keep_row_max
                )
                core = self.combine(factors)
                if key_padding_mask is not None:
                    # A sequence of at most m real tokens is answered exactly, as it would be alone.
                    core, short = exact_for_short_rows(
                        core, q32, k32, v32, key_padding_mask, self.num_landmarks
                    )
                    self.on_short_rows(short)
        out = core.to(v.dtype)
        if self.skip is not None:
            if key_padding_mask is not None:
                v = torch.where(key_padding_mask[:, None, :, None], v, v.new_zeros(()))
            out = out + self.skip(v)
        return out

    def combine(self, f: NystromFactors) -> torch.Tensor:
        """Evaluate the approximation from the landmark pieces; subclasses change this step only."""
        p = self.pseudo_inverse(landmark_system(f.a, f.valid))
        return f.f @ (p @ (f.b @ f.v))

    def on_exact_fallback(self, q: torch.Tensor) -> None:
        """Hook for subclasses: called when ``m >= n`` made the layer exact softmax."""

    def on_short_rows(self, short: torch.Tensor) -> None:
        """Hook for subclasses: ``short`` (b,) marks the sequences answered by exact softmax."""
