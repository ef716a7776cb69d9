"""Keep different configurations apart: runs of one attention that differ in anything but the seed
(and bookkeeping such as paths or logging) become different rows, labelled by what differs.

A config key is a *variant key* of an attention when, within some task, its runs of that attention
disagree on it. Keys that only differ between tasks (vocabulary, length, batch size) are the task's
business and do not split rows. Each run is labelled ``attention [key=value, ...]`` with the variant
keys on which it departs from that attention's most common setting, so the same configuration gets
the same label in every task.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from fnmatch import fnmatchcase
from typing import Any

import yaml

from lra.compare.collect import Run
from lra.registry import CONF_ROOT
from lra.resume import ADDED_LATER, HOW_NOT_WHAT, REMOVED_LATER


def default_callbacks() -> tuple[str, ...]:
    """The names of the callbacks every run gets (``conf/callbacks/default.yaml``), in its order."""
    loaded = yaml.safe_load((CONF_ROOT / "callbacks" / "default.yaml").read_text()) or {}
    return tuple(name for name, node in loaded.items() if isinstance(node, dict) and "_target_" in node)


# Config keys that do not make a different experiment: repetition (seeds), where files live, logging
# and progress display, resuming, and the speed callback's warm-up.
IGNORED = (
    "seed",
    "*seed",
    "*_dir",
    "*path",
    "logger.*",
    "hydra.*",
    "ckpt_path",
    "train",
    "test",
    "speed_warmup_steps",
    "checkpoint_every_n_steps",
    "data.num_workers",
    "data.workers",
    "data.pin_memory",
    # Padding and threads change speed, never a prediction (outputs are independent of padding).
    "data.pad_to_multiple",
    "threads",
    "resume_check",
    # How the network computes, not what (declared once, lra/resume.py's HOW_NOT_WHAT: checkpoints
    # resume across them too): runs recorded before such a key existed join the rows of those after it.
    *HOW_NOT_WHAT,
    # Settings of removed variants, which older records still carry (lra/resume.py's REMOVED_LATER).
    *REMOVED_LATER,
    # A wall-clock limit is not a setting; a run it stopped is marked "stopped early" instead.
    "trainer.max_time",
    "trainer.enable_*",
    "trainer.log_every_n_steps",
    # The default callbacks (read from conf/callbacks/default.yaml) measure and checkpoint; runs recorded
    # before the callbacks group existed have none. A callback a user adds does make another row.
    *(
        f"callbacks.{name}.*"
        for name in (
            *default_callbacks(),
            "release_free_memory",  # briefly a default callback (2026-11-28)
        )
    ),
)
UNSET = "<unset>"


def _encode(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):  # keys of mixed types (a hand-written YAML's 1: and a:) do not sort
        return json.dumps(repr(value))


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys -> JSON-encoded leaf values (lists stay whole: they are one setting)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = _encode(value)
    return flat


def relevant(config: dict[str, Any]) -> dict[str, str]:
    flat = flatten(config)
    for key, value in ADDED_LATER.items():  # a run recorded before the key existed did what its value does
        if key.split(".")[0] in config:
            flat.setdefault(key, _encode(value))
    return {k: v for k, v in flat.items() if not any(fnmatchcase(k, p) for p in IGNORED)}


def setting(run: Run) -> dict[str, str]:
    """The run's relevant config, plus the data source it actually used (results.json ``data``):
    ``data.source=auto`` reads the release or generates, and the two must not share a row; and
    whether it was fine-tuned from a checkpoint (``initialized_from``)."""
    out = relevant(run.config)
    data = run.record.data if run.record is not None else None
    if isinstance(data, dict) and data.get("source"):
        out["data.used"] = json.dumps(data["source"], default=str)
    if run.role == "fine-tune":
        # Started from another run's weights: not one more seed of a run trained from scratch.
        out["fine-tuned"] = json.dumps(True)
    return out


def variant_keys(runs: list[Run]) -> dict[str, list[str]]:
    """attention -> its variant keys (sorted)."""
    values: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for run in runs:
        values[(run.attention, run.task)].append(setting(run))
    keys: dict[str, set[str]] = defaultdict(set)
    for (attention, _task), configs in values.items():
        for key in set().union(*configs):
            if len({c.get(key, UNSET) for c in configs}) > 1:
                keys[attention].add(key)
    return {a: sorted(keys.get(a, ())) for a in {r.attention for r in runs}}


def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that is still unique among ``keys``."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts) - 1, -1, -1):
            suffix = ".".join(parts[i:])
            if sum(1 for k in keys if k == suffix or k.endswith("." + suffix)) == 1:
                out[key] = suffix
                break
        else:
            out[key] = key
    return out


def _show(value: str) -> str:
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError):
        return value
    return decoded if isinstance(decoded, str) else json.dumps(decoded)


def _representatives(keys: list[str], configs: list[dict[str, str]]) -> list[str]:
    """Drop keys that split the runs exactly like another key (``optim.total_steps`` follows
    ``trainer.max_steps``; DDP sets strategy, devices and num_nodes together): one of each is enough.
    Kept: the key set in most runs, then the one with the shortest name."""
    names = short_names(keys)
    by_partition: dict[tuple, list[str]] = defaultdict(list)
    for key in keys:
        column = [c.get(key, UNSET) for c in configs]
        ids: dict[str, int] = {}
        by_partition[tuple(ids.setdefault(v, len(ids)) for v in column)].append(key)
    kept = [
        min(group, key=lambda k: (sum(c.get(k, UNSET) == UNSET for c in configs), len(names[k]), k))
        for group in by_partition.values()
    ]
    return sorted(kept)


def _most_common(values: list[str]) -> str:
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))  # ties broken the same way every time


def assign_variants(runs: list[Run]) -> dict[str, list[str]]:
    """Label every run (``run.variant``); returns the variant keys per attention.

    The label names only the keys where a run departs from the most common value among that
    attention's completed runs of the same task (the task's usual value: vocabulary sizes differ between tasks
    without making rows), so the usual configuration is just ``softmax`` and the odd ones say what
    is odd.
    """
    keys = variant_keys(runs)
    by_attention: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_attention[run.attention].append(run)
    for attention, group in by_attention.items():
        configs = [setting(r) for r in group]
        shown_keys = _representatives(keys.get(attention, []), configs)
        names = short_names(shown_keys)
        # The usual setting is what completed runs used (failed runs do not define it), unless none did.
        ok_tasks = {r.task for r in group if r.ok}
        per_task: dict[str, list[dict[str, str]]] = defaultdict(list)
        for run, config in zip(group, configs, strict=True):
            if run.ok or run.task not in ok_tasks:
                per_task[run.task].append(config)
        common = {
            (task, k): _most_common([c.get(k, UNSET) for c in task_configs])
            for task, task_configs in per_task.items()
            for k in shown_keys
        }
        for run, config in zip(group, configs, strict=True):
            odd = [k for k in shown_keys if config.get(k, UNSET) != common[(run.task, k)]]
            shown = ", ".join(f"{names[k]}={_show(config.get(k, UNSET))}" for k in odd)
            run.variant = f"{attention} [{shown}]" if shown else attention
    return keys


def same_setting(run: Run, baseline: Run, keys: list[str]) -> bool:
    """Whether ``run`` matches ``baseline`` on the baseline attention's variant keys (its own knobs,
    ``attention.*``, have no counterpart in another attention and are not compared)."""
    a, b = setting(run), setting(baseline)
    return all(a.get(k, UNSET) == b.get(k, UNSET) for k in keys if not k.startswith("attention."))
