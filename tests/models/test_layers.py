"""The lower layers never import the pipeline: ``attention/``, ``models/`` and ``data/`` know nothing of
``lra/`` (what they share with it, such as the error types, lives in the lower package)."""

from __future__ import annotations

import ast

import pytest

from tests.helpers.cli import REPO


def imported_packages(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", ["attention", "models", "data"])
def test_lower_layers_do_not_import_the_pipeline(layer):
    offenders = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / layer).rglob("*.py"))
        if "lra" in imported_packages(p)
    ]
    assert offenders == []
