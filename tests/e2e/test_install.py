"""The install is reproducible: every package the project asks for is pinned in constraints.txt (the set
the suite passes with), and this environment has the pinned versions (CI installs with them)."""

from __future__ import annotations

import importlib.metadata
import re

import tomllib

from tests.helpers.cli import REPO


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonical(name)] = version
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    return [canonical(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in wanted]


def test_every_requirement_is_pinned():
    pinned = pins()
    # PyTorch is installed first, on its own (a CPU or a CUDA build of the README's version).
    assert [r for r in requirements() if r != "torch" and r not in pinned] == []
    assert all(re.fullmatch(r"[\w.+!-]+", v) for v in pinned.values())


def test_this_environment_has_the_pinned_versions():
    installed = {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    wrong = {
        name: (installed.get(name), version)
        for name, version in pins().items()
        if name in requirements() and installed.get(name) not in (version, None)
    }
    assert wrong == {}, f"installed vs pinned: {wrong}; install with -c constraints.txt (README)"
