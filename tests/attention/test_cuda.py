"""CUDA-only paths: skipped without a GPU, run by ``python -m lra.gpu_check`` (or ``pytest -m cuda``).

bf16 autocast in the approximate attentions, the CUDA-event timing and ``max_memory_allocated`` of the
benchmarks, and a real run.py run on the GPU with its speed and memory record.
"""

from __future__ import annotations

import json

import pytest
import torch

from attention.nystrom import NystromAttention
from attention.softmax import SoftmaxAttention
from attention.spectral_shift import FORMS, SpectralShiftAttention
from lra import results
from lra.registry import (
    attention_names,
    benchmark_overrides,
    build_attention,
    parse_variant,
    small_overrides,
)
from tests.helpers.attention import registry_variants
from tests.helpers.cli import run_cli

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def qkv(n=300, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(3, 2, n, 32, device="cuda", generator=g, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize(
    "make",
    [lambda: NystromAttention(2, 32, num_landmarks=32)]
    + [lambda: NystromAttention(2, 32, num_landmarks=32, conv_impl="native")]
    + [lambda form=f: SpectralShiftAttention(2, 32, num_landmarks=32, form=form) for f in FORMS],
)
def test_bf16_autocast_on_cuda_keeps_gradients_finite(make):
    attn = make().cuda()
    q, k, v = qkv()
    mask = torch.arange(300, device="cuda")[None, :] < torch.tensor([300, 200, 20], device="cuda")[:, None]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


def test_cuda_matches_cpu_and_is_batch_independent():
    q, k, v = (t.detach() for t in qkv(n=257))
    mask = torch.arange(257, device="cuda")[None, :] < torch.tensor([101, 257, 180], device="cuda")[:, None]
    attn = SpectralShiftAttention(2, 32, num_landmarks=16, form="diagonal", window=8).cuda()
    gpu = attn(q, k, v, mask)
    cpu = attn.cpu()(q.cpu(), k.cpu(), v.cpu(), mask.cpu())
    torch.testing.assert_close(
        gpu.cpu()[mask.cpu()[:, None, :, None].expand_as(cpu)],
        cpu[mask.cpu()[:, None, :, None].expand_as(cpu)],
        rtol=1e-3,
        atol=1e-4,
    )
    alone = attn.cuda()(q[:1, :, :101], k[:1, :, :101], v[:1, :, :101], None)
    torch.testing.assert_close(gpu[0, :, :101], alone[0], rtol=1e-4, atol=1e-5)


def test_native_conv_skip_equals_the_gemm_form_on_cuda():
    from attention.nystrom import ValueConvSkip

    gemm = ValueConvSkip(2, 35).double().cuda()
    native = ValueConvSkip(2, 35, impl="native").double().cuda()
    native.load_state_dict(gemm.state_dict())
    v = torch.randn(3, 2, 1000, 32, dtype=torch.float64, device="cuda", requires_grad=True)
    out_gemm = gemm(v)
    (g_gemm,) = torch.autograd.grad(out_gemm.square().sum(), v)
    out_native = native(v)
    (g_native,) = torch.autograd.grad(out_native.square().sum(), v)
    torch.testing.assert_close(out_native, out_gemm)
    torch.testing.assert_close(g_native, g_gemm)


def test_softmax_sdpa_with_dropout_on_cuda():
    q, k, v = qkv()
    attn = SoftmaxAttention(2, 32, dropout=0.1).cuda().train()
    attn(q, k, v, None).sum().backward()
    assert torch.isfinite(q.grad).all()


def test_efficiency_bench_times_with_cuda_events_and_measures_cuda_memory(tmp_path):
    from lra.bench import efficiency

    argv = ["--lengths", "256,512", "--batch", "2", "--reps", "2", "--devices", "cuda"]
    argv += ["--variants", ",".join(attention_names()), "--out", str(tmp_path)]
    assert efficiency.main(argv) == 0
    rows = json.loads((tmp_path / "efficiency.json").read_text())["results"]["cuda"]
    assert {r["variant"] for r in rows} == set(attention_names())
    assert all(r["time_s"] > 0 for r in rows)
    assert all(r["method"] == "cuda_max_memory_allocated" and r["peak_bytes"] > 0 for r in rows)


def test_run_on_the_gpu_records_cuda_memory_and_speed(tmp_path, listops_args):
    run_dir = tmp_path / "run"
    gpu = ["trainer=gpu", "trainer.accelerator=gpu", "logger=csv"]  # quick pins the CPU: undo it
    run_cli(*listops_args, "attention=nystrom", *gpu, run_dir=run_dir)
    record = results.read(run_dir).to_dict()
    assert record["status"] == "completed"
    assert record["peak_memory_kind"] == "cuda_max_allocated" and record["peak_memory_bytes"] > 0
    assert record["train_steps_per_s"] > 0 and record["compute"]["workers"] >= 0


@pytest.mark.parametrize("variant", registry_variants())
def test_every_attention_bf16_autocast_and_cpu_agreement_on_cuda(variant):
    """Every registry variant, with its size knobs small (``small_overrides``: blocks, windows, buckets,
    landmarks, features) so that every path runs at n = 300."""
    name, _ = parse_variant(variant)
    torch.manual_seed(0)
    small = {**benchmark_overrides(name), **small_overrides(name)}
    attn = build_attention(variant, 2, 32, max_len=512, **small).cuda()
    q, k, v = qkv()
    mask = torch.arange(300, device="cuda")[None, :] < torch.tensor([300, 200, 20], device="cuda")[:, None]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        torch.manual_seed(1)
        out = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    # float64 on both devices: the same random draws (seeded from the CPU generator) give the same output
    attn = attn.double()
    q, k, v = (t.detach().double() for t in (q, k, v))
    torch.manual_seed(1)
    gpu = attn(q, k, v, mask)
    torch.manual_seed(1)
    cpu = attn.cpu()(q.cpu(), k.cpu(), v.cpu(), mask.cpu())
    real = mask.cpu()[:, None, :, None].expand_as(cpu)
    torch.testing.assert_close(gpu.cpu()[real], cpu[real], rtol=1e-6, atol=1e-8)


def test_band_check_runs_without_a_device_sync():
    """The band check runs on every forward of the scalar (``core``) form: nothing in it may wait for
    the device (a host-to-device copy of the candidate fractions did)."""
    from attention._landmarks import nystrom_factors
    from attention._pinv import newton_schulz_pinv
    from attention.spectral_shift.band_check import checked_delta
    from attention.spectral_shift.delta import softmax_rows

    q, k, v = (t.detach() for t in qkv(n=700))
    mask = torch.arange(700, device="cuda")[None, :] < torch.tensor([700, 500, 90], device="cuda")[:, None]
    f = nystrom_factors(q, k, v, mask, 32, keep_logits=True)
    rows = softmax_rows(f, "free", 16)
    delta = torch.full((3, 2), 0.3, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        checked = checked_delta(f, delta, rows, lambda a: newton_schulz_pinv(a, 6), 16)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert checked.shape == (3, 2) and bool(((checked <= 0.3) & (checked >= 0)).all())
