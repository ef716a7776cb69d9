"""Pytest's setup for every test folder: offline W&B / HF, one intra-op thread, the shared fixtures.
The helpers themselves live in ``tests/helpers/``."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.cli import OFFLINE_ENV
from tests.helpers.listops import tiny_listops


def pytest_configure(config):
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # In-process tests compute on small tensors, where a second intra-op thread gains little on an idle
    # machine and, on a busy one, makes every small kernel wait for a core (measured in
    # docs/results.md, "Training speed"). Subprocess runs choose their own threads (lra/resources.py).
    torch.set_num_threads(int(os.environ.get("LRA_TEST_THREADS", "1")))


@pytest.fixture
def listops_args(tmp_path_factory) -> list[str]:
    """Tiny ListOps overrides sharing one generated data folder per test session."""
    return tiny_listops(tmp_path_factory.getbasetemp() / "listops-data")
