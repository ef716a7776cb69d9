"""The attention registry: ``conf/attention/*.yaml`` is the one list of attention variants.

Tests, ``lra.bench efficiency`` and ``lra.bench fidelity`` build their variants from it, so a new
attention is its module and its yaml: the contract test, both benchmarks and the sweep pick it up.

Each knob's default lives in its class (``knobs = {...}``, :mod:`attention.base`); the yaml names the
class and sets only what differs from it. :func:`store_knob_defaults` hands the classes' defaults to
Hydra as the ``attention_knobs`` group, which ``conf/config.yaml`` merges under the chosen attention, so
``attention.<knob>=...`` overrides, ``--cfg job`` and every run's recorded config see them.

A *variant* is a config name plus knob overrides, written ``name`` or ``name:key=value,key=value``
(``nystrom:conv_kernel=0``); values are parsed as YAML scalars (``0``, ``0.5``, ``true``, ``core``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lra.errors import ConfigError

CONF_ROOT = Path(__file__).resolve().parent.parent / "conf"
CONF = CONF_ROOT / "attention"


@cache
def _load(name: str) -> DictConfig:
    # Membership, not a file test: a name such as "../../x" must not pick a yaml outside conf/.
    if name not in attention_names():
        known = ", ".join(attention_names())
        raise ValueError(f"no attention config {name!r} (conf/attention/{name}.yaml); known: {known}")
    return OmegaConf.load(CONF / f"{name}.yaml")


def attention_names() -> list[str]:
    """Every attention config, in file-name order."""
    return sorted(p.stem for p in CONF.glob("*.yaml"))


def task_names() -> list[str]:
    """Every task config (``conf/task/*.yaml``), in file-name order: a new task is its yaml and its
    data module."""
    return _group_names("task")


def attention_config(name: str) -> DictConfig:
    """The config of ``name`` (a copy: callers may change it)."""
    return _load(name).copy()


SHAPE_ARGUMENTS = ("self", "num_heads", "head_dim", "max_len")


def class_knob_defaults(cls: type) -> dict:
    """The knobs of an attention class and their defaults: its ``knobs`` declaration, or for a class
    written without one, its constructor's keyword arguments beyond the shape arguments."""
    declared = getattr(cls, "knobs", None)
    if isinstance(declared, dict):
        return {key: knob.default for key, knob in declared.items()}
    params = inspect.signature(cls).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name not in SHAPE_ARGUMENTS and p.default is not inspect.Parameter.empty
    }


def knob_defaults(name: str) -> dict:
    """The defaults of the class that ``conf/attention/<name>.yaml`` builds."""
    target = _load(name).get("_target_")
    return class_knob_defaults(get_class(target)) if isinstance(target, str) else {}


def knobs(name: str) -> dict:
    """The variant's knobs and their configured values: the class's defaults, then what the yaml sets
    (everything but _target_, _partial_, name)."""
    cfg = OmegaConf.to_container(_load(name), resolve=True)
    own = {k: v for k, v in cfg.items() if k not in ("_target_", "_partial_", "name")}
    return {**knob_defaults(name), **own}


KNOB_GROUP = "attention_knobs"


def store_knob_defaults() -> None:
    """Register every attention class's knob defaults with Hydra (group ``attention_knobs``, one entry
    per ``conf/attention`` yaml). Call it before composing a config: ``run.py`` does at import, and
    :func:`compose` does."""
    store = ConfigStore.instance()
    for name in attention_names():
        store.store(group=KNOB_GROUP, name=name, node=knob_defaults(name), provider="lra")


def compose(overrides: list[str] | tuple[str, ...] = (), **kwargs) -> DictConfig:
    """The run config ``python run.py <overrides>`` would compose (``kwargs``: hydra.compose's)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    store_knob_defaults()
    with initialize_config_dir(config_dir=str(CONF_ROOT), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), **kwargs)


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


# Knobs that count positions, keys or features (a window, a block, a bucket, a projected length,
# landmarks, random features): what decides which code path a short sequence takes.
SIZE_KNOBS = ("num_landmarks", "proj_len", "num_features", "window", "block_size", "bucket_size")


def small_overrides(name: str, size: int = 16) -> dict:
    """The variant's size knobs (:data:`SIZE_KNOBS`) capped at ``size``, so that tests on a few hundred
    tokens reach its blocked, windowed, bucketed or approximate paths instead of one dense block. A
    variant without such knobs, or with knobs of other names, runs at its configured values: still
    tested, without an entry anywhere."""
    return {
        key: size
        for key, value in knobs(name).items()
        if key in SIZE_KNOBS and isinstance(value, int) and not isinstance(value, bool) and value > size
    }


# -- what a recorded run config may build --------------------------------------------------------------
# A run's results.json (or .hydra/config.yaml) is input from whoever wrote it: rebuilding its model
# with ``hydra.utils.instantiate`` must not call whatever ``_target_`` it names. The registries are
# conf/attention/, conf/model/ and conf/task/; nothing else is built from a recorded config.
BUILT_GROUPS = ("attention", "model", "data")


def _group_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_ROOT / group).glob("*.yaml"))


@cache
def _group_yaml(group: str, name: str) -> dict:
    if name not in _group_names(group):
        return {}
    loaded = yaml.safe_load((CONF_ROOT / group / f"{name}.yaml").read_text())
    return loaded if isinstance(loaded, dict) else {}


def model_targets() -> set[str]:
    """The model classes of conf/model/*.yaml."""
    targets = (_group_yaml("model", name).get("_target_") for name in _group_names("model"))
    return {t for t in targets if isinstance(t, str)}


def task_data_target(task: str, _seen: tuple[str, ...] = ()) -> str | None:
    """The data module class of conf/task/<task>.yaml, or of the task file it extends (Path-X is
    Pathfinder's); None for a task that is not in conf/task/."""
    cfg = _group_yaml("task", task)
    own = (cfg.get("data") or {}).get("_target_") if isinstance(cfg.get("data"), dict) else None
    if isinstance(own, str):
        return own
    for parent in cfg.get("defaults") or []:
        if isinstance(parent, str) and parent != "_self_" and parent not in (task, *_seen):
            found = task_data_target(parent, (*_seen, task))
            if found:
                return found
    return None


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, key, value) of every mapping entry and list item below ``node`` (a stack, not
    recursion: a recorded config may be nested deeper than Python's recursion limit)."""
    stack = [(node, path)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            items = [(f"{path}.{key}", key, value) for key, value in node.items()]
        elif isinstance(node, list):
            items = [(f"{path}[{i}]", i, value) for i, value in enumerate(node)]
        else:
            continue
        for here, key, value in items:
            yield here, key, value
            stack.append((value, here))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_buildable(config: dict, where: str) -> None:
    """Refuse a recorded run config (plain containers, interpolations resolved) whose ``attention``,
    ``model`` or ``data`` would build anything but the registered classes: the attention's
    ``_target_`` must be the one of ``conf/attention/<attention.name>.yaml``, the model's one of
    ``conf/model/``, the data module's the one of ``conf/task/<task.name>.yaml``; no other
    ``_target_`` may appear at any depth, and no ``${...}`` anywhere in ``config`` (instantiate
    would resolve it). A ConfigError naming ``where`` and the key otherwise."""
    task = (config.get("task") or {}).get("name") if isinstance(config.get("task"), dict) else None
    attention = config.get("attention") if isinstance(config.get("attention"), dict) else {}
    name = attention.get("name")
    expected = {
        "attention": {attention_config(name).get("_target_")} if name in attention_names() else set(),
        "model": model_targets(),
        "data": {task_data_target(task)} - {None} if isinstance(task, str) else set(),
    }
    why = {
        "attention": f"the one of conf/attention/<attention.name>.yaml (attention.name={_short(name)})",
        "model": "one of conf/model/*.yaml",
        "data": f"the one of conf/task/<task.name>.yaml (task.name={_short(task)})",
    }
    for path, _key, value in _walk(config, "config"):
        if isinstance(value, str) and ("${" in value or value == "???"):
            raise ConfigError(
                f"{where}: {path.removeprefix('config.')}={_short(value)} is an interpolation or a missing "
                "value; a recorded config is already resolved, so it is refused rather than resolved"
            )
    for group in BUILT_GROUPS:
        node = config.get(group)
        if not isinstance(node, dict):
            raise ConfigError(
                f"{where}: {group} is {_short(node)}, not a mapping; this run cannot be rebuilt"
            )
        target = node.get("_target_")
        if target not in expected[group]:
            raise ConfigError(
                f"{where}: {group}._target_={_short(target)} is not {why[group]}; refused: only the "
                "harness's registered classes are built from a recorded config"
            )
        for path, key, value in _walk(node, group):
            if key == "_target_" and path != f"{group}._target_":
                raise ConfigError(
                    f"{where}: {path}={_short(value)}: a nested _target_ is refused (only {group}._target_ "
                    "is built from a recorded config)"
                )
