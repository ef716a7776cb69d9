"""Small helpers shared by the attention variants (masking, precision, knob checks)."""

from __future__ import annotations

import torch

from attention._landmarks import masked_value


def ceil_div(a, b):
    """``ceil(a / b)`` for non-negative integers (or symbolic sizes): written as ``(a + b - 1) // b``,
    since the compiler's shape arithmetic fails on the floor division of a negated size, ``-(-a // b)``."""
    return (a + b - 1) // b


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 -> fp32 (exponentials, softmaxes and normalisers are unstable in half precision);
    fp32 and fp64 stay as they are."""
    return torch.promote_types(dtype, torch.float32)


def check_int(value, key: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"attention.{key} must be an integer >= {minimum}; got {value!r}")


def check_bool(value, key: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"attention.{key} must be true or false; got {value!r}")


def check_probability(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"attention.{key} must be a number in [0, 1); got {value!r}")


def real_mask(key_padding_mask: torch.Tensor | None, batch: int, n: int, device) -> torch.Tensor:
    """The (batch, n) bool mask, all True when there is no padding."""
    if key_padding_mask is None:
        return torch.ones(batch, n, dtype=torch.bool, device=device)
    return key_padding_mask


def zero_padded(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` (b, h, n, d) with padded positions set to 0 by ``where`` (inf or NaN there cannot leak)."""
    if mask is None:
        return x
    return torch.where(mask[:, None, :, None], x, x.new_zeros(()))


def masked_softmax(logits: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dimension with invalid entries at the dtype's lowest finite value: a row
    with no valid entry becomes uniform (finite) instead of NaN; such rows belong to padded queries."""
    if valid is not None:
        logits = logits.masked_fill(~valid, masked_value(logits.dtype))
    return logits.softmax(dim=-1)


__all__ = [
    "check_bool",
    "check_int",
    "check_probability",
    "compute_dtype",
    "masked_softmax",
    "masked_value",
    "real_mask",
    "zero_padded",
]
