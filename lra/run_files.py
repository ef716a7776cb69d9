"""Reading files that another run wrote (``results.json``, ``.hydra/config.yaml``).

They are input from whoever made the folder, so every reader here is bounded: a size limit, a depth
limit (a deeply nested value must not exhaust the recursion of whatever walks it later), YAML without
anchors and aliases (a few lines of aliases expand to millions of nodes), and interpolations kept as
text, never resolved (``${oc.env:SECRET}`` would print the reader's environment); only references
from one key to another of the same file may be looked up (:func:`resolve_references`). Every problem
is a ValueError whose message names the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

# Far above any file the harness writes (a results.json or a Hydra config is a few KiB).
MAX_BYTES = 4 * 2**20
MAX_DEPTH = 64


def read_text(path: Path, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of ``path``; ValueError if it is larger than ``limit`` or not UTF-8, OSError if
    it cannot be read (IsADirectoryError for a folder of that name)."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit:,} bytes, more than a run's file ever is")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests mappings and lists deeper than ``limit`` (iteratively: no recursion)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def load_yaml(path: Path) -> Any:
    """The YAML document in ``path`` as plain containers, read as OmegaConf reads it (the same scalar
    types as the run saw) but with every ``${...}`` left as the text it is."""
    from omegaconf import OmegaConf

    path = Path(path)
    text = read_text(path)
    try:
        aliased = any(
            isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None)
            for event in yaml.parse(text, Loader=yaml.SafeLoader)
        )
        if not aliased:
            container = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    except Exception as exc:  # YAML syntax, OmegaConf's key and type errors, recursion
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ValueError(f"{path}: not a readable config ({type(exc).__name__}: {first})") from None
    if aliased:
        raise ValueError(f"{path}: YAML anchors and aliases are not read in a run's files")
    if too_deep(container):
        raise ValueError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    return container


# ${a.b.c}: a reference to another key (a resolver call has a colon: ${oc.env:X}).
_REFERENCE = re.compile(r"\$\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}")
MAX_RESOLVED_CHARS = 10_000


def resolve_references(config: dict, rounds: int = 8) -> dict:
    """``config`` with each ``${a.b}`` that names another key holding a plain value (a number, a
    string without ``${``) replaced by that value, as OmegaConf would (``optim.total_steps:
    ${trainer.max_steps}``); resolver calls (``${oc.env:...}``) and references to anything else stay
    the text they are. Plain lookups only: no environment, no resolver, bounded rounds and sizes."""

    def lookup(path: str):
        node: Any = config
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        plain = isinstance(node, int | float | bool) or (isinstance(node, str) and "${" not in node)
        return node if plain else None

    def substitute(text: str):
        whole = _REFERENCE.fullmatch(text)
        if whole:
            value = lookup(whole.group(1))
            return text if value is None else value

        def one(match: re.Match) -> str:
            value = lookup(match.group(1))
            return match.group(0) if value is None or isinstance(value, bool) else str(value)

        out = _REFERENCE.sub(one, text)
        return out if len(out) <= MAX_RESOLVED_CHARS else text

    for _ in range(rounds):
        changed = False
        stack: list[Any] = [config]
        while stack:
            node = stack.pop()
            items = (
                node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            )
            for key, value in list(items):
                if isinstance(value, str) and "${" in value:
                    new = substitute(value)
                    if new != value:
                        node[key] = new
                        changed = True
                elif isinstance(value, dict | list):
                    stack.append(value)
        if not changed:
            break
    return config
