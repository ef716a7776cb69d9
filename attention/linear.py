"""Linear attention (Katharopoulos et al., 2020, "Transformers are RNNs"): the feature map
``phi(x) = elu(x) + 1`` replaces the softmax kernel, so that

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + eps)

is computed in O(n d^2) time and O(n d + d^2) memory (the sums run over real keys only). No scaling
of q and k, as in the paper; ``eps = 1e-6`` as in its implementation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attention._common import compute_dtype, zero_padded
from attention.base import AttentionBase, check_inputs

EPS = 1e-6


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


class LinearAttention(AttentionBase):
    """Non-causal linear attention with the elu(x)+1 feature map; no knobs."""

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        dtype = compute_dtype(q.dtype)
        with torch.autocast(device_type=q.device.type, enabled=False):
            q32, k32, v32 = (t.to(dtype) for t in (q, k, v))
            phi_q = elu_feature_map(zero_padded(q32, key_padding_mask))
            # Padded keys: zero features (no weight) and zero values (finite even if v was inf there).
            phi_k = zero_padded(elu_feature_map(zero_padded(k32, key_padding_mask)), key_padding_mask)
            v32 = zero_padded(v32, key_padding_mask)
            kv = phi_k.transpose(-1, -2) @ v32  # (b, h, d, d_v)
            normaliser = phi_q @ phi_k.sum(dim=-2).unsqueeze(-1)  # (b, h, n, 1)
            out = (phi_q @ kv) / (normaliser + EPS)
        return out.to(v.dtype)
