from __future__ import annotations

import torch
import torch.nn.functional as F

from attention.base import AttentionBase, Knob, check_inputs


class SoftmaxAttention(AttentionBase):
    """Exact softmax attention through ``scaled_dot_product_attention``.

    SDPA picks the fused kernel available on the device (flash / memory-efficient on CUDA); the
    key-padding mask is passed as a boolean ``attn_mask`` so padded keys get zero weight.
    """

    exact = True

    knobs = {"dropout": Knob(0.1)}  # SDPA's own dropout on the weights, in training, as the published runs

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = key_padding_mask[:, None, None, :]  # broadcast over heads and queries
            # A masked key's weight is 0, but 0 * inf is NaN, and a NaN key makes its logit NaN
            # whatever the mask adds: padded keys and values must be finite.
            keep, zero = attn_mask.transpose(-1, -2), v.new_zeros(())
            k, v = torch.where(keep, k, zero), torch.where(keep, v, zero)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
