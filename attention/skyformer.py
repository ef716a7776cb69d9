"""Skyformer attention (Chen et al., 2021): Gaussian-kernel attention approximated by the Nyström
method on a symmetrised (positive semi-definite) kernel matrix.

Skyformer replaces softmax by the Gaussian kernel, ``kappa(q, k) = exp(-|q' - k'|^2 / 2)`` with
``x' = x d^-1/4`` (that is ``exp(q'.k' - |q'|^2/2 - |k'|^2/2)``, softmax's kernel times a normalising
factor), and uses ``kappa(Q, K) V`` without row normalisation. ``kappa(Q, K)`` is not symmetric, but it is
the off-diagonal block of the PSD Gram matrix of the 2n points ``[Q'; K']``; Nyström on that matrix with
m landmarks Z taken from the 2n points gives

    out = kappa(Q', Z) pinv(kappa(Z, Z) + ridge I) kappa(Z, K') V,       O(n m d + m^3).

Landmarks (``landmarks``): ``sampled`` (the paper's uniform sampling: ceil(m/2) of the sequence's real
queries and floor(m/2) of its real keys, at ranks ``floor(u L)`` for m uniform u hashed from one seed
per forward (fresh in training, the fixed ``eval_seed`` in evaluation; :mod:`attention._random`), so a
sequence draws the same landmarks alone or padded in any batch), or
``segments`` (deterministic: the means of ceil(m/2) and floor(m/2) contiguous segments of the real
queries and keys, the per-sequence segmentation of :mod:`attention._landmarks`). ``ridge``: added to
the landmark matrix before inverting (0.1 in the authors' LRA code); the pseudo-inverse is Newton-Schulz
on the symmetrically rescaled matrix ``D^-1/2 W D^-1/2`` (D: its row sums), or exact.
"""

from __future__ import annotations

import torch

from attention._common import compute_dtype, real_mask, zero_padded
from attention._landmarks import landmark_system, segment_means, segment_sequences
from attention._pinv import PINV_METHODS, pseudo_inverse
from attention._random import counter_uniform, eval_seed, forward_seed
from attention.base import AttentionBase, check_inputs, choice, integer, non_negative

LANDMARKS = ("sampled", "segments")


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``exp(a.b - |a|^2/2 - |b|^2/2)`` for every row pair: (..., n, d) x (..., m, d) -> (..., n, m)."""
    half_a = 0.5 * a.square().sum(dim=-1, keepdim=True)
    half_b = 0.5 * b.square().sum(dim=-1, keepdim=True)
    return torch.exp(a @ b.transpose(-1, -2) - half_a - half_b.transpose(-1, -2))


def sampled_landmarks(
    x: torch.Tensor, mask: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x`` (b, h, n, d) at real ranks ``floor(u L)``; (b, h, m, d) and validity (b, m)."""
    b, h, n, d = x.shape
    length = mask.sum(dim=-1, keepdim=True)  # (b, 1)
    rank = (u[None, :] * length).floor().long().clamp_max(length - 1).clamp_min(0)  # (b, m)
    real_first = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices  # rank -> position
    position = real_first.gather(1, rank)
    rows = x.gather(2, position[:, None, :, None].expand(b, h, u.shape[0], d))
    return rows, (length > 0).expand_as(position)


def segment_landmarks(x: torch.Tensor, mask: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of m contiguous segments of each sequence's real rows; (b, h, m, d) and validity (b, m)."""
    b, _, n, _ = x.shape
    seg = segment_sequences(mask, b, n, m, x.device)
    return segment_means(x, seg), seg.counts > 0


class SkyformerAttention(AttentionBase):
    """Knobs: ``num_landmarks`` (m), ``landmarks`` (sampled|segments), ``ridge``, ``pinv``
    (newton|exact), ``pinv_iterations``."""

    knobs = {
        "num_landmarks": integer(128, minimum=2),  # m landmarks (128 in the authors' LRA runs)
        # sampled (the paper: uniform over real queries and keys) | segments (segment means)
        "landmarks": choice("sampled", LANDMARKS),
        # added to the landmark kernel matrix before inverting (as the authors' LRA code)
        "ridge": non_negative(0.1),
        # newton (Newton-Schulz on the rescaled matrix) | exact (torch.linalg.pinv)
        "pinv": choice("newton", PINV_METHODS),
        "pinv_iterations": integer(6),  # Newton-Schulz iterations
    }

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None, **settings):
        super().__init__(num_heads, head_dim, max_len, **settings)
        self.register_buffer("eval_seed", eval_seed())  # the sampled landmarks in evaluation mode

    def select_landmarks(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor):
        """(b, h, m, d) landmarks from the scaled q and k, and their validity (b, m)."""
        m_q = (self.num_landmarks + 1) // 2
        m_k = self.num_landmarks - m_q
        if self.landmarks == "sampled":
            seed = forward_seed(self, q.device)
            u = counter_uniform(seed, torch.arange(self.num_landmarks, device=q.device), dtype=torch.float64)
            zq, vq = sampled_landmarks(q, mask, u[:m_q])
            zk, vk = sampled_landmarks(k, mask, u[m_q:])
        else:
            zq, vq = segment_landmarks(q, mask, m_q)
            zk, vk = segment_landmarks(k, mask, m_k)
        return torch.cat([zq, zk], dim=2), torch.cat([vq, vk], dim=1)

    def inverse(self, w: torch.Tensor) -> torch.Tensor:
        if self.pinv == "exact":
            return torch.linalg.pinv(w)
        # Newton-Schulz converges much faster on the symmetrically rescaled matrix D^-1/2 W D^-1/2
        # (unit row sums); W^-1 = D^-1/2 (D^-1/2 W D^-1/2)^-1 D^-1/2.
        scale = w.sum(dim=-1).clamp_min(torch.finfo(w.dtype).tiny).rsqrt()
        inner = pseudo_inverse(scale[..., :, None] * w * scale[..., None, :], "newton", self.pinv_iterations)
        return scale[..., :, None] * inner * scale[..., None, :]

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        b, h, n, d = q.shape
        dtype = compute_dtype(q.dtype)
        with torch.autocast(device_type=q.device.type, enabled=False):
            mask = real_mask(key_padding_mask, b, n, q.device)
            scale = d**-0.25
            q32, k32 = (zero_padded(t.to(dtype), key_padding_mask) * scale for t in (q, k))
            v32 = zero_padded(v.to(dtype), key_padding_mask)
            z, valid = self.select_landmarks(q32, k32, mask)
            valid_f = valid[:, None, None, :].to(dtype)  # (b, 1, 1, m)
            c_q = gaussian_kernel(q32, z) * valid_f
            c_k = zero_padded(gaussian_kernel(k32, z) * valid_f, key_padding_mask)
            w = gaussian_kernel(z, z) * valid_f * valid_f.transpose(-1, -2)
            w = landmark_system(w, valid) + self.ridge * torch.diag_embed(valid_f[:, :, 0].expand(b, h, -1))
            out = c_q @ (self.inverse(w) @ (c_k.transpose(-1, -2) @ v32))
        return out.to(v.dtype)
