"""The attention config files instantiate their classes, and every knob they set is a real knob."""

from __future__ import annotations

import inspect

import pytest
from hydra.utils import get_class, instantiate

from lra.registry import attention_config, attention_names


def class_knobs(cls) -> dict:
    """The constructor parameters of ``cls``, and of its bases where it passes ``**kwargs`` on."""
    params: dict = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        sig = inspect.signature(klass.__init__).parameters
        params = {**{k: p for k, p in sig.items() if p.kind is not p.VAR_KEYWORD}, **params}
        if not any(p.kind is p.VAR_KEYWORD for p in sig.values()):
            break
    return params


@pytest.mark.parametrize("name", attention_names())
def test_config_instantiates_with_class_defaults(name):
    cfg = attention_config(name)
    cls = get_class(cfg._target_)
    assert cfg.name == name and cfg._partial_ is True
    knobs = {k: v for k, v in cfg.items() if k not in ("_target_", "_partial_", "name")}
    params = class_knobs(cls)
    for key, value in knobs.items():
        assert key in params, f"{name}.yaml sets unknown knob {key}"
        assert params[key].default == value, f"{name}.yaml {key}={value} differs from the class default"
    del cfg["name"]  # the harness strips it before instantiating
    module = instantiate(cfg)(num_heads=2, head_dim=8, max_len=128)
    assert isinstance(module, cls)
