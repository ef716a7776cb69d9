"""The attention interface: the shape arguments, the knobs, the diagnostics slot, the input check.

A variant declares its knobs once, as ``knobs = {"name": Knob(default, check), ...}``; the constructor
``Variant(num_heads, head_dim, max_len=None, *, <knobs>)`` then checks every knob (a ValueError naming
``attention.<name>``), keeps it as an attribute of that name, and ``repr`` lists them. A variant that
builds more (parameters, buffers) writes ``__init__(self, num_heads, head_dim, max_len=None, **settings)``,
calls ``super().__init__(num_heads, head_dim, max_len, **settings)`` and builds from the checked
attributes; one that builds nothing more writes no ``__init__``. Either way the class's ``__init__``
carries the signature with every knob and its default (``inspect.signature``, Hydra's and the
registry's view of the variant), from :meth:`AttentionBase.__init_subclass__`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attention._common import check_bool, check_int, check_probability
from attention.dropout import dropout


@dataclass(frozen=True)
class Knob:
    """A constructor knob: its ``default``, ``check(value, key)`` (raises a ValueError naming
    ``attention.<key>`` for a value it refuses; None: any value) and ``cast`` (what is kept of the
    value; None: the value itself)."""

    default: Any
    check: Callable[[Any, str], None] | None = None
    cast: Callable[[Any], Any] | None = None


def integer(default: int, minimum: int = 1) -> Knob:
    """An integer >= ``minimum`` (not a bool)."""
    return Knob(default, lambda value, key: check_int(value, key, minimum))


def flag(default: bool) -> Knob:
    return Knob(default, check_bool)


def probability(default: float) -> Knob:
    """A number in [0, 1), e.g. a dropout rate."""
    return Knob(default, check_probability)


def choice(default: str, options: Sequence[str]) -> Knob:
    """One of ``options``."""

    def check(value, key: str) -> None:
        if value not in options:
            raise ValueError(f"attention.{key} must be one of {'|'.join(options)}; got {value!r}")

    return Knob(default, check)


def non_negative(default: float) -> Knob:
    """A number >= 0, kept as a float."""

    def check(value, key: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"attention.{key} must be a number >= 0; got {value!r}")

    return Knob(default, check, float)


class AttentionBase(nn.Module):
    """Common shape arguments, knobs and the diagnostics slot shared by all variants (module doc).

    ``exact``: the variant computes softmax attention exactly (the contract test then compares it with
    a dense reference). ``knobs``: the variant's knobs, in the order ``repr`` shows them."""

    exact = False
    knobs: dict[str, Knob] = {}

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None, **settings):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.max_len = max_len
        # Tensors from the most recent forward (detached), e.g. {"delta": (heads,)}.
        self.diagnostics: dict[str, torch.Tensor] = {}
        unknown = sorted(set(settings) - set(self.knobs))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}")
        for key, knob in self.knobs.items():
            value = settings.get(key, knob.default)
            if knob.check is not None:
                knob.check(value, key)
            setattr(self, key, value if knob.cast is None else knob.cast(value))

    def __init_subclass__(cls, **kwargs):
        """A class that declares ``knobs`` gets an ``__init__`` (its own, or one that passes the
        arguments on) whose signature names every knob with its default."""
        super().__init_subclass__(**kwargs)
        if "knobs" not in vars(cls):
            return
        if "__init__" not in vars(cls):

            def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None, **settings):
                super(cls, self).__init__(num_heads, head_dim, max_len, **settings)

            __init__.__qualname__ = f"{cls.__qualname__}.__init__"
            cls.__init__ = __init__
        cls.__init__.__signature__ = knob_signature(cls.knobs)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={getattr(self, key)}" for key in self.knobs)

    def drop(self, weights: torch.Tensor) -> torch.Tensor:
        """Dropout on attention weights at the ``dropout`` knob's rate, in training only."""
        return dropout(weights, self.dropout, self.training)

    def forward(self, q, k, v, key_padding_mask=None):  # pragma: no cover - interface
        raise NotImplementedError


def knob_signature(knobs: dict[str, Knob]) -> inspect.Signature:
    """``(self, num_heads, head_dim, max_len=None, *, <knob>=<default>, ...)``."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    shape = [
        inspect.Parameter("self", positional),
        inspect.Parameter("num_heads", positional, annotation=int),
        inspect.Parameter("head_dim", positional, annotation=int),
        inspect.Parameter("max_len", positional, default=None, annotation=int | None),
    ]
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature(
        shape + [inspect.Parameter(k, keyword, default=v.default) for k, v in knobs.items()]
    )


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask) -> None:
    if q.dim() != 4 or k.shape != q.shape[:2] + k.shape[2:] or v.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"expected q, k, v of shape (batch, heads, n, head_dim); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(
                "key_padding_mask must be a bool tensor of shape (batch, n) with True at real tokens; "
                f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
