"""``python -m lra.bench efficiency`` with neither ``--devices`` nor ``--variants``, as the README writes it.

The default variant list depends on whether CUDA is among the devices, so it must be computed from the
devices the benchmark settles on, not from the unset ``--devices`` option.
"""

from __future__ import annotations

import json

import pytest
import torch

from lra.bench import efficiency
from lra.registry import attention_names, has_knob


def test_default_devices_and_variants_run_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--lengths", "128", "--batch", "1", "--landmarks", "16", "--reps", "1", "--warmup", "0"]
    assert efficiency.main([*argv, "--no-memory", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "efficiency.json").read_text())
    assert list(record["results"]) == ["cpu"]
    timed = {row["variant"] for row in record["results"]["cpu"] if "time_s" in row}
    names = attention_names()  # every config of the registry, and each without its conv skip
    assert {*names, *(f"{n}:conv_kernel=0" for n in names if has_knob(n, "conv_kernel"))} <= timed
    assert not any(v.endswith("conv_impl=native") for v in timed)  # a GPU-only row


@pytest.mark.parametrize("cuda", [False, True])
def test_default_variants_follow_the_detected_devices(tmp_path, monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    seen = []

    class Stop(Exception):
        pass

    def record_and_stop(cuda=False, compiled=None):
        seen.append(cuda)
        raise Stop

    monkeypatch.setattr(efficiency, "default_variants", record_and_stop)
    with pytest.raises(Stop):
        efficiency.main(["--no-memory", "--out", str(tmp_path)])
    assert seen == [cuda]


@pytest.mark.parametrize("cuda", [False, True])
def test_default_variants_are_the_registry(cuda):
    """Every attention config is a default row, on every device: a new attention's yaml adds it."""
    variants = efficiency.default_variants(cuda=cuda)
    assert [v for v in variants if v in attention_names()] == attention_names()
    native = [v for v in variants if v.endswith(":conv_impl=native")]
    assert native == (
        [f"{n}:conv_impl=native" for n in attention_names() if has_knob(n, "conv_impl")] if cuda else []
    )


def test_compiled_rows_sit_beside_their_eager_rows():
    variants = efficiency.default_variants(cuda=True, compiled=["nystrom", "softmax"])
    compiled = [v for v in variants if v.endswith(efficiency.COMPILED)]
    assert compiled == ["nystrom+compile", "softmax+compile", "nystrom:conv_impl=native+compile"]
    assert all(efficiency.eager_of(v) in variants for v in compiled)
    every = efficiency.default_variants(compiled=["all"])
    assert [v for v in every if v.endswith(efficiency.COMPILED)] == [
        f"{n}+compile" for n in attention_names()
    ]


def test_given_variants_get_their_compiled_rows_and_padding_drops_maskless_packages():
    argv = [
        "--variants",
        "nystrom,nystrom:conv_kernel=0,softmax,performer-pytorch-pkg",
        "--compiled",
        "nystrom",
    ]
    args = efficiency.parse_args(argv)
    assert efficiency.resolve_variants(args, ["cpu"]) == [
        "nystrom",
        "nystrom:conv_kernel=0",
        "softmax",
        "performer-pytorch-pkg",
        "nystrom+compile",
        "nystrom:conv_kernel=0+compile",
    ]
    padded = efficiency.parse_args([*argv, "--min-real", "0.5"])
    assert "performer-pytorch-pkg" not in efficiency.resolve_variants(padded, ["cpu"])
