"""Performer attention (Choromanski et al., 2021): FAVOR+, softmax attention through positive
orthogonal random features.

With ``x' = x d^-1/4`` and a random projection ``W`` (m x d, m = ``num_features``) whose rows are
orthogonal in blocks of d and scaled to the norms of independent Gaussian vectors,

    phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m),        E[phi(q)^T phi(k)] = exp(q^T k / sqrt(d)),

and ``out = D^-1 phi(Q) (phi(K)^T V)`` with ``D = diag(phi(Q) phi(K)^T 1)``, in O(n m d).

Stabilisers (they cancel exactly in the normalised output): each query's features are divided by
their row maximum, and the keys' by the maximum over the sequence's *real* keys and all features, so
the output never depends on the batch's padding. ``generalized: true`` is the paper's generalized
attention with ReLU features, ``phi(x) = relu(W x') + 1e-3`` (the kernel of the Nyströmformer authors'
LRA Performer runs). The projection is a buffer: drawn from torch's global generator at construction
and redrawn every ``redraw_interval`` training steps by :meth:`on_train_step` (called before every
training batch by ``lra.callbacks.AttentionDiagnostics``); it is saved in checkpoints.
"""

from __future__ import annotations

import math

import torch

from attention._common import compute_dtype, zero_padded
from attention.base import AttentionBase, check_inputs, flag, integer

RELU_EPS = 1e-3  # generalized attention: keeps every feature positive (as the reference code)


def orthogonal_random_features(num_features: int, dim: int, generator=None) -> torch.Tensor:
    """(num_features, dim): blocks of ``dim`` orthonormal rows (QR of a Gaussian matrix), each row
    scaled by the norm of an independent Gaussian vector, so rows are marginally N(0, I)."""
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        q = q * torch.sign(torch.diagonal(r))  # a Haar-distributed orthogonal matrix
        blocks.append(q.T)
    rows = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=-1)
    return (rows * norms[:, None]).float()


def softmax_features(
    x: torch.Tensor, projection: torch.Tensor, stabiliser: str, mask: torch.Tensor | None
) -> torch.Tensor:
    """Positive random features of ``x`` (b, h, n, d), already scaled by d^-1/4, up to a constant
    factor per row (queries, ``stabiliser="row"``) or per sequence (keys, ``"sequence"``), factors that
    cancel in the normalised output. Exponents are shifted by their maximum (per row; for keys over
    the sequence's *real* keys and all features). Padded key rows come out zero."""
    raw = x @ projection.T.to(x.dtype)  # (b, h, n, m): W x'
    half = 0.5 * x.square().sum(dim=-1, keepdim=True)  # |x'|^2 / 2
    with torch.no_grad():
        row_max = raw.amax(dim=-1, keepdim=True)
        if stabiliser == "row":
            shift = row_max - half  # the row's largest exponent W x' - |x'|^2/2
        else:
            top = row_max - half
            if mask is not None:
                top = top.masked_fill(~mask[:, None, :, None], -math.inf)
            shift = top.amax(dim=-2, keepdim=True)  # (b, h, 1, 1): over the real keys
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    features = torch.exp(raw - (half + shift))
    if stabiliser != "row" and mask is not None:
        features = zero_padded(features, mask)
    return features


def relu_features(x: torch.Tensor, projection: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    features = torch.relu(x @ projection.T.to(x.dtype)) + RELU_EPS
    return zero_padded(features, mask) if mask is not None else features


def linear_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``D^-1 phi_q (phi_k^T v)`` with ``D = diag(phi_q phi_k^T 1)``; phi_k and v zero at padded keys.
    The normaliser rides along as an extra column of ones in v."""
    ones = v.new_ones(v.shape[:-1] + (1,))
    context = phi_k.transpose(-1, -2) @ torch.cat([v, ones], dim=-1)  # (b, h, m, d_v + 1)
    out = phi_q @ context
    normaliser = out[..., -1:]
    return out[..., :-1] / normaliser.clamp_min(torch.finfo(normaliser.dtype).tiny)


class PerformerAttention(AttentionBase):
    """FAVOR+ attention. Knobs: ``num_features`` (m), ``redraw_interval`` (training steps between
    feature redraws; 0 = never), ``generalized`` (ReLU features instead of the softmax kernel's)."""

    knobs = {
        "num_features": integer(256),  # m random features (256 in the Nyströmformer authors' LRA runs)
        # training steps between feature redraws (0 = never); as performer-pytorch
        "redraw_interval": integer(1000, minimum=0),
        # true: generalized attention with ReLU features (the Nyströmformer LRA runs' kernel)
        "generalized": flag(False),
    }

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None, **settings):
        super().__init__(num_heads, head_dim, max_len, **settings)
        self.register_buffer("projection", orthogonal_random_features(self.num_features, head_dim))

    @torch.no_grad()
    def redraw(self) -> None:
        """New random features (from torch's global generator)."""
        fresh = orthogonal_random_features(self.num_features, self.head_dim)
        self.projection.copy_(fresh.to(self.projection.device, self.projection.dtype))

    def on_train_step(self, step: int) -> None:
        if self.redraw_interval and step > 0 and step % self.redraw_interval == 0:
            self.redraw()

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        dtype = compute_dtype(q.dtype)
        mask = key_padding_mask
        with torch.autocast(device_type=q.device.type, enabled=False):
            scale = q.shape[-1] ** -0.25
            q32 = zero_padded(q.to(dtype), mask) * scale  # padded rows: finite, discarded
            k32 = zero_padded(k.to(dtype), mask) * scale
            v32 = zero_padded(v.to(dtype), mask)
            projection = self.projection.to(dtype)
            if self.generalized:
                phi_q = relu_features(q32, projection, None)
                phi_k = relu_features(k32, projection, mask)
            else:
                phi_q = softmax_features(q32, projection, "row", None)
                phi_k = softmax_features(k32, projection, "sequence", mask)
            out = linear_attention(phi_q, phi_k, v32)
        return out.to(v.dtype)
