"""The band check of the scalar shift (attention/spectral_shift/band_check.py): its pieces against dense
computations, and what it is for: ``core`` no worse than Nyström where an unchecked shift lands near
an eigenvalue of the landmark matrix."""

from __future__ import annotations

import pytest
import torch

from attention._landmarks import landmark_system, nystrom_factors
from attention._pinv import newton_schulz_pinv
from attention.nystrom import NystromAttention
from attention.reference import dense_softmax_weights
from attention.spectral_shift import SpectralShiftAttention
from attention.spectral_shift.band_check import (
    FRACTIONS,
    candidate_residuals,
    checked_delta,
    row_pieces,
    sampled_rows,
)
from attention.spectral_shift.delta import softmax_rows
from lra.bench.regimes import exact_attention, make_regime


def ragged(n=50, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(n)[None, :] < torch.tensor([n, n - 17])[:, None]
    return q, k, v, mask


def band_of(dense: torch.Tensor, window: int) -> dict[tuple[int, int], torch.Tensor]:
    n = dense.shape[-1]
    return {
        (i, o): dense[..., i, i + o] for i in range(n) for o in range(-window, window + 1) if 0 <= i + o < n
    }


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def dense_approximant(f, p, delta):
    """``core``'s approximant ``F p B + delta I`` with ``p = pinv(A - delta I)``, (b, h, n, n)."""
    n = f.f.shape[-2]
    return f.f @ p @ f.b + delta[..., None, None] * torch.eye(n, dtype=f.f.dtype)


def checked_setup(n=50):
    q, k, v, mask = ragged(n=n)
    f = nystrom_factors(q, k, v, mask, 6, keep_logits=True)
    delta = torch.tensor([[0.3, 0.1], [0.05, 0.2]], dtype=torch.float64)
    p = newton_schulz_pinv(landmark_system(f.a, f.valid, delta), 6)
    return f, mask, delta, p


def all_rows(mask):
    return torch.arange(mask.shape[1]).expand(mask.shape[0], -1)


def test_row_pieces_and_the_gram_are_the_dense_approximant():
    f, mask, delta, p = checked_setup()
    rows = all_rows(mask)
    f_rows, y = row_pieces(f, rows, rows, torch.ones_like(mask))
    x = f_rows @ p
    dense = dense_approximant(f, p, delta)
    got = x @ y.transpose(-1, -2) + delta[..., None, None] * torch.eye(x.shape[-2], dtype=x.dtype)
    for item, length in enumerate(mask.sum(-1).tolist()):
        torch.testing.assert_close(got[item, :, :length, :length], dense[item, :, :length, :length])
        assert (y[item, :, length:] == 0).all()  # padded keys: no part in any row's norm
    torch.testing.assert_close(f.b @ f.b.transpose(-1, -2), y.transpose(-1, -2) @ y)


def dense_residual(dense, target, mask, window, rows_of):
    """Sum over the given real rows of the squared error on the estimated band, plus
    max(0, ||M_i off the band|| - (1 - band mass of the estimate))^2."""
    out = torch.zeros(dense.shape[:2], dtype=dense.dtype)
    for item, length in enumerate(mask.sum(-1).tolist()):
        for head in range(dense.shape[1]):
            total = 0.0
            for i in rows_of(item, length):
                cols = [i + o for o in range(-window, window + 1) if 0 <= i + o < length]
                est = torch.stack([target[item, head, i, j - i + window] for j in cols])
                row = dense[item, head, i, :length]
                total += (row[cols] - est).square().sum().item()
                off = [j for j in range(length) if j not in cols]
                total += max(0.0, row[off].norm().item() - max(0.0, 1 - est.sum().item())) ** 2
            out[item, head] = total
    return out


@pytest.mark.parametrize("window", [0, 3])
def test_residuals_are_the_band_error_plus_the_off_band_excess(window):
    """Every candidate's residual against the dense approximant M, over every real row when the sampled
    blocks cover the sequence."""
    f, mask, delta, p = checked_setup()
    rows = softmax_rows(f, "free", window)
    pinv = lambda a: newton_schulz_pinv(a, 6)  # noqa: E731
    got = candidate_residuals(f, delta, rows, pinv, window, blocks=64)
    target, _ = rows.band()
    for c, fraction in enumerate(FRACTIONS):
        d = delta * fraction
        p = pinv(landmark_system(f.a, f.valid, d))
        want = dense_residual(dense_approximant(f, p, d), target, mask, window, lambda b, n: range(n))
        torch.testing.assert_close(got[..., c], want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("padded", [True, False])
def test_residuals_on_sampled_blocks_are_the_dense_ones_on_those_rows(padded):
    """Two blocks (of 32 rows: band_rows) out of a longer sequence, with and without padding
    (unpadded, n a multiple of m: the segments are plain reshapes)."""
    window = 2
    q, k, v, mask = ragged(n=156)
    mask = mask if padded else torch.ones_like(mask)
    f = nystrom_factors(q, k, v, mask if padded else None, 6, keep_logits=True)
    assert (f.seg.index is None) == (not padded)
    delta = torch.tensor([[0.3, 0.1], [0.05, 0.2]], dtype=torch.float64)
    rows = softmax_rows(f, "free", window)
    pinv = lambda a: newton_schulz_pinv(a, 6)  # noqa: E731
    got = candidate_residuals(f, delta, rows, pinv, window, blocks=2)
    sampled, real = sampled_rows(mask, window, blocks=2)
    assert real.sum() < mask.sum()  # a strict subset of the rows

    def rows_of(item, length):
        return [i for i, ok in zip(sampled[item].tolist(), real[item].tolist(), strict=True) if ok]

    target, _ = rows.band()
    for c, fraction in enumerate(FRACTIONS):
        d = delta * fraction
        p = pinv(landmark_system(f.a, f.valid, d))
        want = dense_residual(dense_approximant(f, p, d), target, mask, window, rows_of)
        torch.testing.assert_close(got[..., c], want, rtol=1e-9, atol=1e-12)


def test_sampled_rows_are_blocks_spread_over_each_sequence_alone_or_padded():
    window, span = 2, 32  # blocks of 2w rows, but at least 32 (band_rows)
    mask = torch.arange(1600)[None, :] < torch.tensor([1600, 400])[:, None]
    rows, real = sampled_rows(mask, window, blocks=5)
    starts = rows[:, ::span]
    assert starts[0].tolist() == [0, 320, 640, 960, 1280]  # 50 blocks, every tenth
    assert real[0].all()
    # 400 real tokens = 13 blocks of 32: blocks floor(j * 13 / 5) = 0, 2, 5, 7, 10, all real rows
    assert starts[1].tolist() == [0, 64, 160, 224, 320] and real[1].all()
    short, short_real = sampled_rows(mask[1:, :400], window, blocks=20)  # 13 blocks: all, the last half real
    assert short[0, ::span].tolist()[:13] == list(range(0, 416, 32)) and short_real.sum() == 400
    alone, alone_real = sampled_rows(mask[1:, :400], window, blocks=5)
    assert alone.tolist() == rows[1:].tolist() and alone_real.tolist() == real[1:].tolist()


def test_band_of_the_estimated_softmax_is_exact_with_a_window_over_every_key():
    q, k, v, mask = ragged(n=40)
    window = 40  # every key of a row enters its normaliser exactly
    f = nystrom_factors(q, k, v, mask, 5, keep_logits=True)
    target, real = softmax_rows(f, "moments", window).band()
    for item, length in enumerate(mask.sum(-1).tolist()):
        s = dense_softmax_weights(q[item, :, :length], k[item, :, :length])
        for (i, o), value in band_of(s, 4).items():
            assert real[item, 0, i, window + o]
            torch.testing.assert_close(target[item, :, i, window + o], value)
        assert not real[item, 0, length:].any() and (target[item, :, length:] == 0).all()


def test_checked_delta_is_the_candidate_whose_band_fits_best():
    q, k, v = make_regime("local-self", 2, 2, 256, 32, 0.25)
    f = nystrom_factors(q, k, v, None, 32, keep_logits=True)
    rows = softmax_rows(f, "free", 16)
    delta = torch.full((2, 2), 0.4, dtype=torch.float64)
    checked = checked_delta(f, delta, rows, lambda a: newton_schulz_pinv(a, 6), 16)
    errors = candidate_residuals(f, delta, rows, lambda a: newton_schulz_pinv(a, 6), 16)
    best = torch.tensor(FRACTIONS, dtype=torch.float64)[errors.argmin(-1)]
    torch.testing.assert_close(checked, delta * best)
    assert len(set(checked.flatten().tolist())) > 1 or checked.max() < 0.4  # it did backtrack somewhere


@pytest.mark.parametrize("regime", ["self", "local-self"])
def test_band_check_keeps_core_within_2_percent_of_nystrom(regime):
    """Peaked self-attention with segments of 4 tokens: the trace estimator's delta lands near an
    eigenvalue of A and pinv(A - delta I) blows up (unchecked: 1.6-4x Nyström's error). Backtracked
    to the candidate that fits the window's band, the form stays within 1.02x."""
    q, k, v = make_regime(regime, 2, 2, 256, 64, 0.25)
    ref = exact_attention(q, k, v)
    nys = NystromAttention(2, 64, num_landmarks=64, conv_kernel=0)
    base = rel_err(nys(q, k, v), ref)

    def error(check):
        ss = SpectralShiftAttention(2, 64, num_landmarks=64, conv_kernel=0, form="core", delta_check=check)
        return rel_err(ss(q, k, v), ref)

    unchecked = error("none")
    assert error("band") <= 1.02 * base
    assert unchecked > 2 * base  # the failure the check exists for


def test_band_check_keeps_the_shift_where_it_fits():
    """Self-attention at T = 1: the unchecked shift already halves Nyström's error; the check keeps it."""
    q, k, v = make_regime("self", 2, 2, 256, 64, 1.0)
    ref = exact_attention(q, k, v)
    nys = NystromAttention(2, 64, num_landmarks=64, conv_kernel=0)
    checked = SpectralShiftAttention(2, 64, num_landmarks=64, conv_kernel=0, form="core")
    unchecked = SpectralShiftAttention(
        2, 64, num_landmarks=64, conv_kernel=0, form="core", delta_check="none"
    )
    out = checked(q, k, v)
    torch.testing.assert_close(out, unchecked(q, k, v))
    assert (checked.diagnostics["delta"] > 0.05).all()
    assert rel_err(out, ref) < 0.6 * rel_err(nys(q, k, v), ref)
