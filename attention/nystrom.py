"""Nyström attention (Xiong et al., 2021): ``out = F pinv(A) (B V)`` (+ a depthwise-conv skip on V).

Evaluated right to left so that nothing n x n is formed: O(n m d + m^3) time, O(n m + n d) memory.
The landmark pieces live in :mod:`attention._landmarks` so that spectral shift can reuse them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention._common import ceil_div, compute_dtype, zero_padded
from attention._landmarks import (
    NystromFactors,
    exact_for_short_rows,
    landmark_system,
    masked_softmax_attention,
    nystrom_factors,
)
from attention._pinv import PINV_METHODS, pseudo_inverse
from attention.base import AttentionBase, Knob, check_inputs, choice, integer

# How the skip convolves: block-Toeplitz GEMMs (the default, chosen for the CPU) or PyTorch's own
# grouped convolution (to measure on a GPU, where the GEMM form is most of Nyström's time at 16K).
CONV_IMPLS = ("gemm", "native")


class ValueConvSkip(nn.Module):
    """Depthwise convolution of V along the sequence, one kernel per head (Nyströmformer's skip),
    with zero 'same' padding (as torch's ``padding="same"``: the extra zero of an even kernel goes right).

    Computed as matrix products, not as a convolution: the sequence is cut into blocks of ``B``
    positions, and every output block is ``T(-1) x_prev + T(0) x_own + T(+1) x_next`` with three
    B x B banded Toeplitz matrices made from the head's kernel (``B`` at least the kernel's reach, so
    no output needs more than the neighbouring blocks). Autograd through these GEMMs gives the
    gradients of the convolution (to float rounding). The reason is speed where it matters: PyTorch's
    CPU depthwise-convolution backward collapsed when its threads shared cores with other work (1.4 s
    against 0.2 s for this form, two threads on a busy 2-core machine; equal on one idle thread).
    """

    def __init__(self, num_heads: int, kernel: int, impl: str = "gemm"):
        super().__init__()
        if impl not in CONV_IMPLS:
            raise ValueError(f"attention.conv_impl must be one of {'|'.join(CONV_IMPLS)}; got {impl!r}")
        self.kernel = kernel
        self.impl = impl
        # Same initialisation as nn.Conv2d's default (kaiming-uniform, fan_in = kernel).
        bound = kernel**-0.5
        self.weight = nn.Parameter(torch.empty(num_heads, 1, kernel).uniform_(-bound, bound))
        left = (kernel - 1) // 2
        self.left = left
        self.block = max(32, left, kernel - 1 - left)
        b = self.block
        offset = torch.arange(-1, 2)[:, None, None] * b  # source block relative to the output block
        tap = offset + torch.arange(b)[None, None, :] - torch.arange(b)[None, :, None] + left
        self.register_buffer("tap", tap.clamp(0, kernel - 1), persistent=False)  # (3, B, B) kernel index
        self.register_buffer("band", (tap >= 0) & (tap < kernel), persistent=False)

    def toeplitz(self, dtype: torch.dtype) -> torch.Tensor:
        """(heads, 3, B, B): the blocks for the previous, own and next source block."""
        w = self.weight[:, 0, :].to(dtype)
        return w[:, self.tap] * self.band.to(dtype)

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # (b, h, n, d), zero at padded positions
        if self.impl == "native":
            # PyTorch's grouped convolution (cuDNN on a GPU): heads as channels, the sequence as height.
            weight = self.weight[..., None].to(v.dtype)
            right = self.kernel - 1 - self.left
            if right != self.left:  # an even kernel: its extra zero goes right, as in the GEMM form
                v = F.pad(v, (0, 0, 0, right - self.left))
            return F.conv2d(v, weight, groups=v.shape[1], padding=(self.left, 0))
        b, h, n, d = v.shape
        size = self.block
        blocks = ceil_div(n, size)
        t = self.toeplitz(v.dtype)
        padded = F.pad(v, (0, 0, size, blocks * size - n + size)).view(b, h, blocks + 2, size, d)
        # One GEMM per head and source offset: (B x B) @ (B x [blocks, batch, d]). With the block
        # index outermost of the right operand, each offset's operand is a strided slice of one copy
        # (a view, not a copy per offset), and the three products accumulate in place. Of the
        # neighbouring blocks only the rows within the kernel's reach enter (the last `left` rows of
        # the previous block, the first `right` of the next): B + left + right multiply-adds per
        # output instead of 3 B (66 against 96 for kernel 35).
        left, right = self.left, self.kernel - 1 - self.left
        columns = padded.permute(1, 3, 2, 0, 4).contiguous()  # (h, B, blocks + 2, b, d)
        cols = blocks * b * d
        y = torch.bmm(t[:, 1], columns[:, :, 1 : blocks + 1].reshape(h, size, cols))
        y = y.baddbmm(t[:, 0, :, size - left :], columns[:, size - left :, :blocks].reshape(h, left, cols))
        y = y.baddbmm(t[:, 2, :, :right], columns[:, :right, 2 : blocks + 2].reshape(h, right, cols))
        y = y.view(h, size, blocks, b, d).permute(3, 0, 2, 1, 4).reshape(b, h, blocks * size, d)
        return y[:, :, :n]


class NystromAttention(AttentionBase):
    """Nyström attention with masked segment-mean landmarks.

    Knobs: ``num_landmarks`` (m), ``pinv`` (newton|exact), ``pinv_iterations`` (Newton-Schulz steps),
    ``conv_kernel`` (depthwise-conv skip on V; 0 = off), ``conv_impl`` (gemm|native: how the skip
    convolves, same result). For ``n <= m`` it is exact softmax.
    """

    knobs = {
        # m: landmarks = masked means of m contiguous segments (n need not divide by m)
        "num_landmarks": integer(64),
        # newton (Newton-Schulz, regularising) | exact (torch.linalg.pinv)
        "pinv": choice("newton", PINV_METHODS),
        "pinv_iterations": integer(6),  # Newton-Schulz iterations (per-matrix initialisation)
        # depthwise-conv skip on V along the sequence (as in the published LRA runs); 0 = off
        "conv_kernel": integer(35, minimum=0),
        # how the skip convolves: gemm (block-Toeplitz GEMMs, fast on CPU) | native (torch's grouped conv);
        # checked by ValueConvSkip, when there is a skip
        "conv_impl": Knob("gemm"),
    }

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None, **settings):
        super().__init__(num_heads, head_dim, max_len, **settings)
        kernel = self.conv_kernel
        self.skip = ValueConvSkip(num_heads, kernel, self.conv_impl) if kernel > 0 else None

    # Whether combine() needs the logits of F (spectral shift's normalisers do).
    keep_logits = False

    def pseudo_inverse(self, system: torch.Tensor) -> torch.Tensor:
        return pseudo_inverse(system, self.pinv, self.pinv_iterations)

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        n = q.shape[-2]
        dtype = compute_dtype(q.dtype)
        factors = None
        # Autocast off: the three softmaxes and the pseudo-inverse run in fp32 even under bf16/fp16.
        with torch.autocast(device_type=q.device.type, enabled=False):
            q32, k32, v32 = (t.to(dtype) for t in (q, k, v))
            if self.num_landmarks >= n:
                core = masked_softmax_attention(q32, k32, v32, key_padding_mask)
                self.on_exact_fallback(q32)
            else:
                factors = nystrom_factors(
                    q32, k32, v32, key_padding_mask, self.num_landmarks, keep_logits=self.keep_logits
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
                if factors is not None and factors.v.dtype == v.dtype:
                    v = factors.v  # already zeroed at the padding: one full pass fewer each way
                else:
                    v = zero_padded(v, key_padding_mask)
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
