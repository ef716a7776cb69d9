"""The attention registry: ``conf/attention/*.yaml`` is the one list of attention variants.

Tests, ``lra.bench efficiency`` and ``lra.bench fidelity`` build their variants from it, so a new
attention is its module and its yaml: the contract test, both benchmarks and the sweep pick it up.

A *variant* is a config name plus knob overrides, written ``name`` or ``name:key=value,key=value``
(``nystrom:conv_kernel=0``); values are parsed as YAML scalars (``0``, ``0.5``, ``true``, ``core``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

CONF = Path(__file__).resolve().parent.parent / "conf" / "attention"


@cache
def _load(name: str) -> DictConfig:
    path = CONF / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(attention_names())
        raise ValueError(f"no attention config {name!r} (conf/attention/{name}.yaml); known: {known}")
    return OmegaConf.load(path)


def attention_names() -> list[str]:
    """Every attention config, in file-name order."""
    return sorted(p.stem for p in CONF.glob("*.yaml"))


def attention_config(name: str) -> DictConfig:
    """The config of ``name`` (a copy: callers may change it)."""
    return _load(name).copy()


def knobs(name: str) -> dict:
    """The variant's knobs and their configured values (everything but _target_, _partial_, name)."""
    cfg = OmegaConf.to_container(_load(name), resolve=True)
    return {k: v for k, v in cfg.items() if k not in ("_target_", "_partial_", "name")}


def parse_variant(spec: str) -> tuple[str, dict]:
    """``"nystrom:conv_kernel=0,num_landmarks=32"`` -> ``("nystrom", {"conv_kernel": 0, ...})``."""
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"variant {spec!r}: expected key=value after ':', got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def split_variants(text: str) -> list[str]:
    """A comma-separated list of variants, where a variant's own ``key=value`` overrides are also
    comma-separated: ``"softmax,nystrom:conv_kernel=0,num_landmarks=32"`` -> two variants. (A config
    name never contains ``=``, so a piece with ``=`` and no ``:`` continues the previous variant.)"""
    out: list[str] = []
    for piece in filter(None, (p.strip() for p in text.split(","))):
        if "=" in piece and ":" not in piece and out:
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


def build_attention(
    spec: str, num_heads: int, head_dim: int, max_len: int | None = None, **overrides
) -> nn.Module:
    """The attention module of a variant (config name with optional ``:key=value`` overrides, and
    keyword overrides on top), built as the model builds it."""
    name, parsed = parse_variant(spec)
    changes = {**parsed, **overrides}
    unknown = sorted(set(changes) - set(knobs(name)))
    if unknown:
        raise ValueError(f"variant {spec!r}: {unknown} are not knobs of conf/attention/{name}.yaml")
    cfg = OmegaConf.merge(attention_config(name), changes)
    node = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "name"}
    return instantiate(node, _partial_=True)(num_heads=num_heads, head_dim=head_dim, max_len=max_len)


def has_knob(name: str, knob: str) -> bool:
    return knob in knobs(name)


def benchmark_overrides(name: str, landmarks: int | None = None) -> dict:
    """What the attention benchmarks change in every variant: no dropout (they compare the attention
    itself, and on CPU SDPA with dropout leaves its fused kernel), the conv skip as configured, and
    the landmark count under study where the variant has one."""
    out = {}
    if has_knob(name, "dropout"):
        out["dropout"] = 0.0
    if landmarks is not None and has_knob(name, "num_landmarks"):
        out["num_landmarks"] = landmarks
    return out
