"""The registries are the only source of what exists: a new attention is its module and its yaml, a new
task its yaml and its data module, and the lists derived from them follow without an edit."""

from __future__ import annotations

import shutil

import pytest
from omegaconf import OmegaConf

from lra import registry
from tests.helpers.cli import REPO

CONF = REPO / "conf"


@pytest.fixture
def one_more_attention(tmp_path, monkeypatch):
    """conf/attention/ plus a throwaway config ``zz_extra`` (softmax's class under another name)."""
    conf = tmp_path / "attention"
    shutil.copytree(CONF / "attention", conf)
    extra = OmegaConf.load(CONF / "attention" / "softmax.yaml")
    extra.name = "zz_extra"
    OmegaConf.save(extra, conf / "zz_extra.yaml")
    monkeypatch.setattr(registry, "CONF", conf)
    return "zz_extra"


def test_a_new_attention_config_reaches_every_list(one_more_attention):
    from lra.bench import efficiency, settings, step
    from tests.helpers.attention import registry_variants

    name = one_more_attention
    assert name in registry.attention_names()
    assert name in efficiency.default_variants() and name in efficiency.default_variants(cuda=True)
    assert name in step.parse_args([]).attentions
    assert name in settings.fidelity_settings(16)
    assert name in registry_variants()
    module = registry.build_attention(name, 2, 8, max_len=32, **registry.small_overrides(name))
    assert type(module).__name__ == "SoftmaxAttention"


def test_tasks_are_the_task_configs():
    assert registry.task_names() == sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
    for task in registry.task_names():
        assert registry.task_data_target(task), f"conf/task/{task}.yaml names no data module"


def test_small_overrides_cap_only_size_knobs():
    for name in registry.attention_names():
        small = registry.small_overrides(name, 16)
        assert set(small) <= set(registry.SIZE_KNOBS) & set(registry.knobs(name))
        assert all(value == 16 < registry.knobs(name)[key] for key, value in small.items())
    assert registry.small_overrides("softmax") == {}


def test_the_dashboard_ignores_what_resume_ignores_and_the_default_callbacks():
    """lra/compare/variants.py derives these entries: HOW_NOT_WHAT from lra/resume.py, the callbacks
    from conf/callbacks/default.yaml (plus the one that was briefly a default)."""
    from lra.compare.variants import IGNORED, default_callbacks
    from lra.resume import HOW_NOT_WHAT

    callbacks = [
        k for k, v in OmegaConf.to_container(OmegaConf.load(CONF / "callbacks/default.yaml")).items() if v
    ]
    assert list(default_callbacks()) == callbacks
    assert {f"callbacks.{name}.*" for name in [*callbacks, "release_free_memory"]} <= set(IGNORED)
    assert set(HOW_NOT_WHAT) <= set(IGNORED)
