"""The attention config files instantiate their classes; each knob's default is written once, in its
class, and reaches every composed run config from there."""

from __future__ import annotations

import pytest
from hydra.utils import get_class, instantiate

from lra.registry import attention_config, attention_names, compose, knob_defaults, knobs


@pytest.mark.parametrize("name", attention_names())
def test_config_instantiates_and_repeats_no_class_default(name):
    cfg = attention_config(name)
    cls = get_class(cfg._target_)
    assert cfg.name == name and cfg._partial_ is True
    own = {k: v for k, v in cfg.items() if k not in ("_target_", "_partial_", "name")}
    defaults = knob_defaults(name)
    for key, value in own.items():
        assert key in defaults, f"{name}.yaml sets unknown knob {key}"
        assert defaults[key] != value, f"{name}.yaml repeats {key}={value}: the default lives in the class"
    del cfg["name"]  # the harness strips it before instantiating
    module = instantiate(cfg)(num_heads=2, head_dim=8, max_len=128)
    assert isinstance(module, cls)
    assert {k: getattr(module, k) for k in defaults} == knobs(name)


@pytest.mark.parametrize("name", attention_names())
def test_every_class_knob_is_in_the_composed_run_config(name):
    """A knob set nowhere but in its class is overridable as ``attention.<knob>=...`` and recorded."""
    cfg = compose([f"attention={name}"])
    assert {k: cfg.attention[k] for k in knob_defaults(name)} == knobs(name)
    for key, value in knob_defaults(name).items():
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            changed = compose([f"attention={name}", f"attention.{key}={value - 1}"])
            assert changed.attention[key] == value - 1


def test_a_yaml_value_wins_over_the_class_default(tmp_path, monkeypatch):
    """A config that sets a knob (a second config of a class, say) overrides the class's default in
    the registry's view and in the composed run."""
    import shutil

    from lra import registry

    conf = tmp_path / "conf"
    shutil.copytree(registry.CONF_ROOT, conf)
    (conf / "attention" / "nystrom_small.yaml").write_text(
        "_target_: attention.nystrom.NystromAttention\n_partial_: true\nname: nystrom_small\nnum_landmarks: 8\n"
    )
    monkeypatch.setattr(registry, "CONF_ROOT", conf)
    monkeypatch.setattr(registry, "CONF", conf / "attention")
    registry._load.cache_clear()
    try:
        assert registry.knobs("nystrom_small")["num_landmarks"] == 8
        assert registry.compose(["attention=nystrom_small"]).attention.num_landmarks == 8
        assert registry.compose(["attention=nystrom"]).attention.num_landmarks == 64
    finally:
        registry._load.cache_clear()
