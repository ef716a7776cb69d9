"""Third-party checks: our attentions against the published PyTorch packages (the ``test`` extra),
fed the same q, k, v through the wrappers of :mod:`lra.bench.packages`. Each test skips when its
package is missing. Settings are chosen so that both compute the same thing; the documented
differences are noted per test.
"""

from __future__ import annotations

import functools

import pytest
import torch

from attention.linformer import LinformerAttention
from attention.local import LocalAttention
from attention.performer import PerformerAttention
from attention.reformer import ReformerAttention, hash_buckets
from lra.bench import packages

H, D = 2, 16


def qkv(b, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, H, n, D, generator=g, dtype=dtype) for _ in range(3)]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("generalized", [False, True])
def test_performer_matches_performer_pytorch(generalized, monkeypatch):
    # performer-pytorch adds eps = 1e-4 to every softmax feature (we do not); set it to 0 here. Its key
    # stabiliser is the max over all keys of the batch item and head, ours over its real keys: the
    # same without padding (and both cancel in the normalised output).
    module = pytest.importorskip("performer_pytorch.performer_pytorch")
    monkeypatch.setattr(module, "softmax_kernel", functools.partial(module.softmax_kernel, eps=0.0))
    torch.manual_seed(0)
    ours = PerformerAttention(H, D, num_features=64, generalized=generalized).double()
    theirs = packages.PackagePerformer(D, num_features=64, generalized=generalized).double()
    theirs.inner.projection_matrix.copy_(ours.projection)
    q, k, v = qkv(2, 96)
    assert rel(ours(q, k, v), theirs(q, k, v)) < 1e-10


@pytest.mark.parametrize("share_kv", [True, False])
def test_linformer_matches_linformer(share_kv):
    # The package's share_kv means "values are the keys"; ours means E = F (the paper's key-value
    # sharing). So its separate proj_k / proj_v are set to our E and F.
    pytest.importorskip("linformer")
    torch.manual_seed(0)
    ours = LinformerAttention(H, D, max_len=128, proj_len=32, share_kv=share_kv, dropout=0.0).double()
    theirs = packages.PackageLinformer(H, D, max_len=128, proj_len=32).double()
    with torch.no_grad():
        theirs.inner.proj_k.copy_(ours.proj_k[0])
        theirs.inner.proj_v.copy_(ours.proj_k[0] if share_kv else ours.proj_v[0])
    q, k, v = qkv(2, 100)  # shorter than max_len: both use the first 100 rows of E and F
    assert rel(ours(q, k, v), theirs(q, k, v)) < 1e-10


@pytest.mark.parametrize("window,n", [(8, 64), (8, 61), (16, 40)])
def test_local_matches_local_attention(window, n):
    # local-attention with exact_windowsize and one block of look-around on each side is the same band
    # |i - j| <= window; it takes a key-padding mask too.
    pytest.importorskip("local_attention")
    ours = LocalAttention(H, D, window=window, dropout=0.0).double()
    theirs = packages.PackageLocal(window=window).double()
    q, k, v = qkv(2, n)
    mask = torch.arange(n)[None, :] < torch.tensor([n, n // 2])[:, None]
    out, ref = ours(q, k, v, mask), theirs(q, k, v, mask)
    real = mask[:, None, :, None].expand_as(out)
    assert rel(out[real], ref[real]) < 1e-10


@pytest.mark.parametrize("rounds", [1, 2, 4])
def test_reformer_matches_reformer_pytorch_given_the_same_buckets(rounds):
    # Hashing draws different random rotations, so the package is given our buckets (same convention:
    # argmax over [xR, -xR], n / c buckets when 2c divides n). With attention inside buckets only and
    # duplicate-corrected rounds, the rest (sort, chunks of c, one chunk back, self only when alone,
    # logsumexp combination) must agree; its wrap-around look-back only meets other buckets.
    pytest.importorskip("reformer_pytorch")
    c, n = 8, 64
    ours = ReformerAttention(H, D, num_hashes=rounds, bucket_size=c, dropout=0.0).double()
    theirs = packages.PackageReformer(num_hashes=rounds, bucket_size=c).double()
    q, k, v = qkv(2, n)
    torch.manual_seed(0)
    out = ours(q, k, v)
    torch.manual_seed(0)
    from attention._random import draw_seed

    seed = draw_seed("cpu")
    s = (q + k) * 0.5
    buckets = hash_buckets(s, torch.ones(2, n, dtype=torch.bool), seed, rounds, c)  # (b, h, R, n)
    n_buckets = n // c
    offsets = torch.arange(rounds)[None, None, :, None] * n_buckets
    flat = (buckets + offsets).reshape(2 * H, rounds * n)
    theirs.inner.hash_vectors = lambda n_buckets, vecs, **kwargs: flat
    # (It subtracts log(N + 1e-9), a relative shift of about 1e-9 from our log N.)
    assert rel(out, theirs(q, k, v)) < 1e-7
