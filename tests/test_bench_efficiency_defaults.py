"""``python -m lra.bench efficiency`` with neither ``--devices`` nor ``--variants``, as the README writes it.

The default variant list depends on whether CUDA is among the devices, so it must be computed from the
devices the benchmark settles on, not from the unset ``--devices`` option.
"""

from __future__ import annotations

import json

import pytest
import torch

from lra.bench import efficiency


def test_default_devices_and_variants_run_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--lengths", "128", "--batch", "1", "--landmarks", "16", "--reps", "1", "--warmup", "0"]
    assert efficiency.main([*argv, "--no-memory", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "efficiency.json").read_text())
    assert list(record["results"]) == ["cpu"]
    timed = {row["variant"] for row in record["results"]["cpu"] if "time_s" in row}
    assert {"softmax", "nystrom", "spectral_shift", "nystrom:conv_kernel=0"} <= timed
    assert not any(v.endswith("conv_impl=native") for v in timed)  # a GPU-only row


@pytest.mark.parametrize("cuda", [False, True])
def test_default_variants_follow_the_detected_devices(tmp_path, monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    seen = []

    class Stop(Exception):
        pass

    def record_and_stop(cuda=False):
        seen.append(cuda)
        raise Stop

    monkeypatch.setattr(efficiency, "default_variants", record_and_stop)
    with pytest.raises(Stop):
        efficiency.main(["--no-memory", "--out", str(tmp_path)])
    assert seen == [cuda]
