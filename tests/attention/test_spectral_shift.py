"""Spectral-shift attention (attention/spectral_shift/): the spec's required properties, checked against
exact float64 computations, for the kept forms (diagonal, core) and estimators (trace with either
normaliser, fixed)."""

from __future__ import annotations

import pytest
import torch

from attention._landmarks import landmark_system, nystrom_factors
from attention._pinv import newton_schulz_pinv
from attention.nystrom import NystromAttention
from attention.reference import dense_softmax_attention, dense_softmax_weights
from attention.spectral_shift import ESTIMATORS, FORMS, SpectralShiftAttention
from attention.spectral_shift.delta import (
    approximant_diagonal,
    diagonal_shift,
    diagonal_weights,
    far_counts,
    softmax_rows,
    top_singular_values,
    window_logits,
)
from lra.registry import attention_config
from tests.helpers.attention import ESTIMATOR_KNOBS


def qkv(b=2, h=2, n=50, d=8, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype, requires_grad=requires_grad) for _ in range(3)]


def self_attending(b=2, h=2, n=256, d=32, temperature=0.5, dtype=torch.float64, seed=0):
    """k = q: the diagonal logit |q|^2 / sqrt(d) ~ sqrt(d) / temperature dominates every row."""
    q, _, v = qkv(b, h, n, d, dtype, seed)
    return q / temperature, q.clone(), v


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def lengths_mask(n, lengths):
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("form", FORMS)
def test_zero_shift_reproduces_nystrom(form):
    q, k, v = qkv(n=61)
    mask = lengths_mask(61, [61, 40])
    ss = SpectralShiftAttention(
        2, 8, num_landmarks=8, conv_kernel=0, form=form, delta="fixed", fixed_delta=0.0
    )
    nys = NystromAttention(2, 8, num_landmarks=8, conv_kernel=0)
    real = mask[:, None, :, None].expand(2, 2, 61, 8)
    torch.testing.assert_close(ss(q, k, v, mask)[real], nys(q, k, v, mask)[real], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_m_at_least_n_is_exact_and_reports_zero_shift(form):
    q, k, v = qkv(n=30)
    mask = lengths_mask(30, [30, 12])
    ss = SpectralShiftAttention(2, 8, num_landmarks=32, conv_kernel=0, form=form)
    out, ref = ss(q, k, v, mask), dense_softmax_attention(q, k, v, mask)
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1, :, :12], ref[1, :, :12])
    torch.testing.assert_close(ss.diagnostics["delta"], torch.zeros(2))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("knobs", ESTIMATOR_KNOBS, ids=lambda k: "-".join(str(x) for x in k.values()))
def test_padded_positions_do_not_change_real_outputs(form, knobs):
    q, k, v = qkv(n=45)
    mask = lengths_mask(45, [45, 26])
    ss = SpectralShiftAttention(2, 8, num_landmarks=6, form=form, rank=2, **knobs)
    out = ss(q, k, v, mask)
    pad = ~mask[:, None, :, None]
    q2, k2, v2 = (torch.where(pad, torch.randn_like(t) * 1e3, t) for t in (q, k, v))
    out2 = ss(q2, k2, v2, mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out2[real], out[real], rtol=0, atol=1e-10)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("knobs", ESTIMATOR_KNOBS, ids=lambda k: "-".join(str(x) for x in k.values()))
@pytest.mark.parametrize("regime", ["peaked", "flat"])
@pytest.mark.parametrize("detach", [True, False])
def test_gradients_are_finite(form, knobs, regime, detach):
    if regime == "peaked":
        q, k, v = self_attending(n=96, d=16, temperature=0.3, dtype=torch.float32)
    else:
        q, k, v = (0.01 * t for t in qkv(n=96, d=16, dtype=torch.float32))  # near-uniform rows
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    mask = lengths_mask(96, [96, 77])
    ss = SpectralShiftAttention(2, 16, num_landmarks=16, form=form, detach_delta=detach, **knobs)
    ss(q, k, v, mask).square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    for p in ss.parameters():
        assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("form", FORMS)
def test_bf16_autocast_gradients_are_finite(form):
    q, k, v = (t.float().detach().requires_grad_() for t in self_attending(n=128, d=16))
    ss = SpectralShiftAttention(2, 16, num_landmarks=16, form=form)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ss(q.bfloat16(), k.bfloat16(), v.bfloat16(), lengths_mask(128, [128, 100]))
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    for t in (q, k, v, ss.skip.weight):
        assert torch.isfinite(t.grad).all()
    assert ss.diagnostics["delta"].dtype == torch.float32


def test_beats_nystrom_on_self_attending_and_matches_it_elsewhere():
    n, d, m = 512, 64, 32
    nys = NystromAttention(2, d, num_landmarks=m, conv_kernel=0)
    ss = SpectralShiftAttention(2, d, num_landmarks=m, conv_kernel=0)  # the configured defaults
    q, k, v = self_attending(n=n, d=d, temperature=0.5)
    ref = dense_softmax_attention(q, k, v)
    assert rel_err(ss(q, k, v), ref) < 0.25 * rel_err(nys(q, k, v), ref)
    q, k, v = qkv(n=n, d=d, seed=1)
    smooth = torch.nn.functional.avg_pool1d  # locally smooth q, k: moving averages of noise
    qs, ks = (
        smooth(t.flatten(0, 1).transpose(1, 2), 33, 1, 16).transpose(1, 2).reshape(q.shape) * 4
        for t in (q, k)
    )
    for q_, k_ in [(q, k), (0.5 * q, k), (qs, ks)]:
        ref = dense_softmax_attention(q_, k_, v)
        assert rel_err(ss(q_, k_, v), ref) <= 1.02 * rel_err(nys(q_, k_, v), ref)


def test_trace_estimate_with_a_window_over_every_key_is_exact():
    """A window that covers the whole sequence takes every key into each row's normaliser exactly."""
    q, k, v = self_attending(n=60, d=8, temperature=1.0)
    mask = lengths_mask(60, [60, 37])
    f = nystrom_factors(q, k, v, mask, 6, keep_logits=True)
    truth = torch.stack([dense_softmax_weights(q[0], k[0]).diagonal(dim1=-2, dim2=-1).sum(-1)])
    s1 = dense_softmax_weights(q[1, :, :37], k[1, :, :37]).diagonal(dim1=-2, dim2=-1).sum(-1)
    exact = torch.cat([truth, s1[None]])
    for normaliser in ("free", "moments"):
        torch.testing.assert_close(diagonal_weights(f, normaliser, window=60).sum(-1), exact)
    # Without a window the free normaliser is biased upward but lands in the right range on these rows.
    free = diagonal_weights(f, "free").sum(-1)
    assert ((free - exact).abs() / exact < 0.5).all()


def test_top_singular_values_match_the_dense_approximant():
    q, k, v = qkv(n=70)
    mask = lengths_mask(70, [70, 44])
    f = nystrom_factors(q, k, v, mask, 8, keep_logits=True)
    p = newton_schulz_pinv(landmark_system(f.a, f.valid), 6)
    real_f = f.f * mask[:, None, :, None]  # S: the approximant on the real tokens
    dense = real_f @ p @ f.b  # (b, h, N, N): small enough here
    truth = torch.linalg.svdvals(dense)[..., :5].sum(-1)
    torch.testing.assert_close(top_singular_values(f, p, 5), truth, rtol=1e-6, atol=1e-8)


def test_delta_diagnostic_is_per_head_batch_mean():
    q, k, v = self_attending(n=128, d=16, temperature=0.5)
    q = torch.cat([q[:1], 0.1 * q[1:]])  # the second item is far less self-attending
    ss = SpectralShiftAttention(2, 16, num_landmarks=16, conv_kernel=0, form="core")
    ss(q, k, v)
    delta = ss.diagnostics["delta"]
    assert delta.shape == (2,) and not delta.requires_grad
    assert ((delta >= 0) & (delta <= ss.delta_max)).all() and delta.min() > 0.2
    f = nystrom_factors(q, k, v, None, 16, keep_logits=True)
    per_item = ss.estimate_delta(f)
    torch.testing.assert_close(delta, per_item.float().mean(0))


def test_detached_delta_acts_as_a_constant():
    q, k, v = (t[:1, :1].detach().requires_grad_() for t in self_attending(n=96, d=16))
    ss = SpectralShiftAttention(1, 16, num_landmarks=12, conv_kernel=0, form="core")
    out = ss(q, k, v)
    out.square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    fixed = SpectralShiftAttention(1, 16, num_landmarks=12, conv_kernel=0, delta="fixed", form="core")
    fixed.fixed_delta = float(ss.estimate_delta(nystrom_factors(q, k, v, None, 12, keep_logits=True)))
    for t in (q, k, v):
        t.grad = None
    out2 = fixed(q, k, v)
    out2.square().sum().backward()
    torch.testing.assert_close(out2, out)
    for g, t in zip(grads, (q, k, v), strict=True):
        torch.testing.assert_close(t.grad, g)


@pytest.mark.parametrize(
    ("knobs", "key"),
    [
        ({"form": "dense"}, "attention.form must be one of core|diagonal"),
        ({"form": "sketch"}, "attention.form must be one of core|diagonal"),  # removed forms
        ({"form": "projection"}, "attention.form"),
        ({"delta": "landmark"}, "attention.delta must be one of trace|fixed"),  # removed estimators
        ({"delta": "learned"}, "attention.delta"),
        ({"normaliser": "sampled"}, "attention.normaliser must be one of free|moments"),
        ({"delta_check": "diag"}, "attention.delta_check must be one of band|none"),
        ({"rank": 64, "form": "core"}, "attention.rank"),
        ({"rank": -1}, "attention.rank"),
        ({"delta_max": 0.0}, "attention.delta_max"),
        ({"delta_max": float("inf")}, "attention.delta_max"),
        ({"fixed_delta": -0.1}, "attention.fixed_delta"),
        ({"window": -1}, "attention.window"),
        ({"num_landmarks": 0}, "attention.num_landmarks"),
    ],
)
def test_bad_knobs_name_the_config_key(knobs, key):
    with pytest.raises(ValueError, match=key):
        SpectralShiftAttention(2, 8, **knobs)


def test_every_estimator_and_form_is_listed():
    assert FORMS == ("core", "diagonal")
    assert set(ESTIMATORS) == {"trace", "fixed"}
    # The sampled normaliser's knob is gone from the config; runs recorded with it still rebuild.
    assert "num_samples" not in attention_config("spectral_shift")
    ss = SpectralShiftAttention(2, 8, num_samples=64)
    assert not hasattr(ss, "num_samples") and "num_samples" not in repr(ss)


def test_state_dict_is_nystroms():
    """No form or estimator adds a parameter or buffer: checkpoints of every kept variant hold
    Nyström's entries (the conv skip), as they did before the pruning."""
    for form in FORMS:
        for knobs in ESTIMATOR_KNOBS:
            ss = SpectralShiftAttention(2, 8, num_landmarks=4, form=form, rank=2, **knobs)
            assert list(ss.state_dict()) == list(NystromAttention(2, 8, num_landmarks=4).state_dict())


def test_diagonal_form_delta_is_the_mean_row_shift_and_restores_the_diagonal():
    """The diagonal form's shift per row is what the approximant misses of the row's own weight:
    with the exact normaliser (window over the whole sequence) out_i puts exactly s_ii on v_i."""
    q, k, v = self_attending(n=64, d=16, temperature=1.0)
    ss = SpectralShiftAttention(2, 16, num_landmarks=8, conv_kernel=0, form="diagonal", window=64, rank=2)
    f = nystrom_factors(q, k, v, None, 8, keep_logits=True)
    p = newton_schulz_pinv(landmark_system(f.a, f.valid), 6)
    own = approximant_diagonal(f.f, p, f.b)
    shift = diagonal_shift(f, own, 1.0, "free", window=64)
    truth = dense_softmax_weights(q, k).diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(own + shift, torch.maximum(truth, own))  # clip at 0: never below a_i
    ss(q, k, v)
    torch.testing.assert_close(ss.diagnostics["delta"], shift.mean(dim=-1).float().mean(0))


@pytest.mark.parametrize("chunk", [7, 64, 256])
def test_approximant_diagonal_is_the_dense_diagonal_in_any_chunks(chunk):
    q, k, v = qkv(n=100)
    f = nystrom_factors(q, k, v, None, 8)
    p = newton_schulz_pinv(landmark_system(f.a, f.valid), 6)
    dense = (f.f @ p @ f.b).diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(approximant_diagonal(f.f, p, f.b, chunk=chunk), dense)


@pytest.mark.parametrize("n, window", [(50, 1), (50, 3), (50, 16), (7, 16), (64, 16), (100, 4), (130, 20)])
def test_window_logits_are_the_band_of_the_dense_logits(n, window):
    """The block-local GEMMs (blocks of max(2w, 32) rows) read out exactly q_i . k_j for |i - j| <= w,
    with padded and out-of-range keys masked, at lengths that are not a multiple of the block."""
    q, k, v = qkv(n=n)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n - n // 3 :] = False
    f = nystrom_factors(q, k, v, mask, 4, keep_logits=True)
    near, real = window_logits(f, window)
    dense = f.q_scaled @ f.k.transpose(-1, -2)
    for i in range(n):
        for c, o in enumerate(range(-window, window + 1)):
            j = i + o
            exists = 0 <= j < n
            assert bool(real[1, i, c]) == (exists and bool(mask[1, j]))
            if exists:
                torch.testing.assert_close(near[:, :, i, c], dense[:, :, i, j])


@pytest.mark.parametrize("normaliser", ["free", "moments"])
@pytest.mark.parametrize("form", FORMS)
def test_gradients_through_the_shift_stay_finite_at_padded_rows(form, normaliser):
    """With ``detach_delta=false`` and a window, a padded row's own logit is not in its normaliser:
    its estimated diagonal weight must be masked before the exponential, or exp overflows there and
    0 * inf puts NaN into every gradient. Padded positions here have a self-logit of about 400, and
    one sequence is padding only."""
    q, k, v = qkv(n=40)
    mask = lengths_mask(40, [25, 40])
    mask = torch.cat([mask, torch.zeros(1, 40, dtype=torch.bool)])
    q, k, v = (torch.cat([t, t[:1]]) for t in (q, k, v))
    pad = ~mask[:, None, :, None]
    q = torch.where(pad, torch.full_like(q, 12.0), q).requires_grad_()
    k = torch.where(pad, torch.full_like(k, 12.0), k).requires_grad_()
    ss = SpectralShiftAttention(
        2,
        8,
        num_landmarks=6,
        conv_kernel=0,
        form=form,
        rank=2,
        detach_delta=False,
        normaliser=normaliser,
        window=3,
    )
    out = ss(q, k, v, mask)
    (out * mask[:, None, :, None]).sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_scalar_shift_is_capped_by_the_trace_the_approximant_misses(temperature):
    """On local attention the approximant already gives rows their own weight (a segment mean blurs
    neighbours into the diagonal): the tail-mean shift alone overshot every row. The unchecked
    ``core`` estimate never exceeds the estimated trace the approximant leaves missing, per row."""
    from lra.bench.regimes import make_regime

    q, k, v = make_regime("local", 1, 2, 256, 64, temperature)
    core = SpectralShiftAttention(2, 64, num_landmarks=64, conv_kernel=0, form="core", delta_check="none")
    f = nystrom_factors(q, k, v, None, 64, keep_logits=True)
    p = newton_schulz_pinv(landmark_system(f.a, f.valid), 6)
    trace = diagonal_weights(f, core.normaliser, core.window).sum(-1)
    room = (trace - approximant_diagonal(f.f, p, f.b).sum(-1)) / 256
    assert (core.estimate_delta(f) <= room.clamp_min(0) + 1e-12).all()


def test_moments_normaliser_estimates_the_diagonal_better_than_the_free_one():
    """Partly self-attending rows (T = 1): the segment means alone underestimate each row's normaliser
    (Jensen), so the free estimate of the diagonal weight is too high; the segments' variances correct
    most of that."""
    q, k, v = self_attending(n=512, d=32, temperature=1.0)
    f = nystrom_factors(q, k, v, None, 16, keep_logits=True)
    truth = dense_softmax_weights(q, k).diagonal(dim1=-2, dim2=-1)
    free = (diagonal_weights(f, "free", window=4) - truth).abs().mean()
    moments = (diagonal_weights(f, "moments", window=4) - truth).abs().mean()
    assert moments < 0.5 * free


def test_moments_normaliser_is_the_free_one_when_segments_do_not_spread():
    q, _, v = qkv(n=48)
    k = qkv(n=6, seed=3)[0].repeat_interleave(8, dim=2)  # 6 segments of 8 equal keys
    mask = lengths_mask(48, [48, 48])
    f = nystrom_factors(q, k, v, mask, 6, keep_logits=True)
    torch.testing.assert_close(diagonal_weights(f, "moments", 2), diagonal_weights(f, "free", 2))


@pytest.mark.parametrize("normaliser", ["free", "moments"])
@pytest.mark.parametrize("padded", [False, True])
def test_log_normaliser_gradients_are_those_of_its_formula(normaliser, padded):
    """With ``detach_delta=false`` gradients flow through the estimated normaliser; they must be those
    of ``log Z_i = logaddexp(s_ii, log sum_j count_j exp(l_ij))`` written out, with ``l`` the landmark
    logits (``moments``: raised by ``q^2 . var / 2``). (The free normaliser's offset, read off F's row
    maxima, was once detached, which left its gradient 30-90% off.)"""
    q, k, v = qkv(n=48, requires_grad=True)
    mask = lengths_mask(48, [48, 37]) if padded else None
    f = nystrom_factors(q, k, v, mask, 6, keep_logits=True)
    real = f.mask[:, None, :].double()
    weights = torch.randn(f.q.shape[:3], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (softmax_rows(f, normaliser, 0).log_z * weights * real).sum().backward()
    got = q.grad.clone(), k.grad.clone()

    q.grad, k.grad = None, None
    qs, kz, logits = formula_landmark_logits(f, q, k, normaliser)
    log_sum = (logits + f.counts.double().log()[:, None, None, :]).logsumexp(dim=-1)
    log_z = torch.logaddexp((qs * kz).sum(-1), log_sum)
    (log_z * weights * real).sum().backward()
    torch.testing.assert_close(got[0], q.grad)
    torch.testing.assert_close(got[1], k.grad)


@pytest.mark.parametrize("n, m, window", [(40, 6, 3), (64, 8, 0), (57, 16, 9), (30, 4, 40)])
def test_far_counts_count_each_segments_keys_outside_the_window(n, m, window):
    """The closed form against a count key by key: masks with a tail of padding, holes, padding in
    front, no real token, and none at all (equal segments)."""
    g = torch.Generator().manual_seed(n + window)
    masks = torch.rand(5, n, generator=g) > 0.3
    masks[0] = True
    masks[1, n // 2 :] = False
    masks[2, : n // 3] = False
    masks[3] = False
    for mask in (masks, None):
        b = 5 if mask is not None else 2
        q, k, v = (torch.randn(b, 2, n, 4, generator=g, dtype=torch.float64) for _ in range(3))
        f = nystrom_factors(q, k, v, mask, m)
        torch.testing.assert_close(far_counts(f, window), window_split(f, window)[1], rtol=0, atol=0)


@pytest.mark.parametrize("normaliser", ["free", "moments"])
@pytest.mark.parametrize("padded", [False, True])
def test_windowed_log_normaliser_is_its_formula_in_value_and_gradient(normaliser, padded):
    """With a window, ``log Z_i = logaddexp(logsumexp_{|j - i| <= w, j real} s_ij, log sum_l c_il
    exp(l_il))``, ``c_il`` the real keys of segment l outside row i's window, written out key by key:
    the values with and without autograd (which skips the padding passes), and the gradients."""
    w, n = 3, 48
    q, k, v = qkv(n=n, requires_grad=True)
    mask = lengths_mask(n, [n, 37]) if padded else None
    f = nystrom_factors(q, k, v, mask, 6, keep_logits=True)
    real = f.mask[:, None, :].double()
    weights = torch.randn(f.q.shape[:3], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_z = softmax_rows(f, normaliser, w).log_z
    (log_z * weights * real).sum().backward()
    got = q.grad.clone(), k.grad.clone()
    with torch.no_grad():
        plain = softmax_rows(nystrom_factors(q, k, v, mask, 6, keep_logits=True), normaliser, w).log_z
    torch.testing.assert_close((plain * real), (log_z * real).detach())

    q.grad, k.grad = None, None
    qs, kz, logits = formula_landmark_logits(f, q, k, normaliser)
    near, far = window_split(f, w)
    exact = torch.where(near[:, None], qs @ kz.transpose(-1, -2), float("-inf")).logsumexp(dim=-1)
    log_far = (logits + far.log()[:, None]).logsumexp(dim=-1)
    want = torch.logaddexp(exact, log_far)
    torch.testing.assert_close(log_z * real, want * real)
    (want * weights * real).sum().backward()
    torch.testing.assert_close(got[0], q.grad)
    torch.testing.assert_close(got[1], k.grad)


def formula_landmark_logits(f, q, k, normaliser):
    """The landmark logits of a normaliser written out (``moments``: raised by ``q^2 . var / 2``) from
    the raw q and k: the scaled queries, the keys zeroed at padding, and the logits."""
    from attention._landmarks import segment_means

    qs, kz = q * f.scale, torch.where(f.mask[:, None, :, None], k, 0.0)
    k_land = segment_means(kz, f.seg)
    logits = qs @ k_land.transpose(-1, -2)
    if normaliser == "moments":
        var = segment_means(kz * kz, f.seg) - k_land * k_land
        logits = logits + 0.5 * (qs * qs) @ var.clamp_min(0).transpose(-1, -2)
    return qs, kz, logits


def window_split(f, window):
    """Key by key: (b, n, n) whether real key j is in row i's window, and (b, n, m) how many real keys
    of each segment lie outside it."""
    b, n = f.mask.shape
    m = f.seg.m
    seg_of = f.seg.index if f.seg.index is not None else (torch.arange(n) // (n // m)).expand(b, n)
    near = torch.zeros(b, n, n, dtype=torch.bool)
    far = torch.zeros(b, n, m, dtype=torch.float64)
    for item in range(b):
        for i in range(n):
            for j in range(n):
                if f.mask[item, j]:
                    if abs(i - j) <= window:
                        near[item, i, j] = True
                    else:
                        far[item, i, seg_of[item, j]] += 1
    return near, far
