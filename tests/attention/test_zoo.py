"""The efficient attentions of the arena (linear, performer, linformer, local, bigbird, reformer,
skyformer), each against a direct float64 reimplementation of its own definition, written here per
sequence and head with dense n x n matrices and Python loops (small n, ragged lengths, padding); and
alone-vs-batched checks at settings small enough to exercise the blocked / sorted / sampled paths
that the registry-wide contract test (tests/attention/test_contract.py) does not reach at its lengths:
hand-picked settings of each, and every registry config with its size knobs small.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attention._random import counter_uniform, draw_seed
from attention.bigbird import BigBirdAttention
from attention.linear import LinearAttention
from attention.linformer import LinformerAttention
from attention.local import LocalAttention
from attention.performer import PerformerAttention, orthogonal_random_features
from attention.reformer import SELF_LOGIT, ReformerAttention, rotations
from attention.skyformer import SkyformerAttention
from lra.registry import attention_names, benchmark_overrides, build_attention, small_overrides
from tests.helpers.attention import assert_padding_never_reaches_real_outputs, lengths_mask

H, D = 2, 8


def qkv(b, n, seed=0, scale=1.0, d=D):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(b, H, n, d, generator=g, dtype=torch.float64) for _ in range(3)]


def run(module, *args, seed=0):
    torch.manual_seed(seed)
    return module(*args)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def check_real(out, ref, mask, tol=1e-9):
    keep = mask[:, None, :, None].expand_as(out)
    assert rel(out[keep], ref[keep]) <= tol


def softmax_over(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~allowed, float("-inf")).softmax(-1)


# -- linear ----------------------------------------------------------------------------------------


def dense_linear(q, k, v, mask):
    out = torch.zeros_like(v)
    for bi in range(q.shape[0]):
        real = mask[bi]
        for hi in range(q.shape[1]):
            phi_q = F.elu(q[bi, hi]) + 1
            phi_k = F.elu(k[bi, hi, real]) + 1
            a = phi_q @ phi_k.T
            out[bi, hi] = (a @ v[bi, hi, real]) / (a.sum(-1, keepdim=True) + 1e-6)
    return out


def test_linear_matches_its_definition():
    q, k, v = qkv(3, 40)
    mask = lengths_mask(40, [40, 23, 1])
    check_real(LinearAttention(H, D).double()(q, k, v, mask), dense_linear(q, k, v, mask), mask)


# -- performer -------------------------------------------------------------------------------------


def dense_performer(q, k, v, mask, w, generalized=False):
    """FAVOR+ with no stabiliser: phi(x) = exp(W x' - |x'|^2/2) / sqrt(m), x' = x d^-1/4."""
    d = q.shape[-1]
    out = torch.zeros_like(v)
    for bi in range(q.shape[0]):
        real = mask[bi]
        for hi in range(q.shape[1]):
            x_q, x_k = q[bi, hi] * d**-0.25, k[bi, hi, real] * d**-0.25
            if generalized:
                phi_q, phi_k = torch.relu(x_q @ w.T) + 1e-3, torch.relu(x_k @ w.T) + 1e-3
            else:
                phi_q = torch.exp(x_q @ w.T - 0.5 * (x_q**2).sum(-1, keepdim=True)) / math.sqrt(w.shape[0])
                phi_k = torch.exp(x_k @ w.T - 0.5 * (x_k**2).sum(-1, keepdim=True)) / math.sqrt(w.shape[0])
            a = phi_q @ phi_k.T
            out[bi, hi] = (a @ v[bi, hi, real]) / a.sum(-1, keepdim=True)
    return out


@pytest.mark.parametrize("generalized", [False, True])
def test_performer_matches_its_definition(generalized):
    torch.manual_seed(0)
    module = PerformerAttention(H, D, num_features=24, generalized=generalized).double()
    q, k, v = qkv(3, 30)
    mask = lengths_mask(30, [30, 17, 2])
    ref = dense_performer(q, k, v, mask, module.projection.double(), generalized)
    check_real(module(q, k, v, mask), ref, mask)


def test_performer_estimates_softmax_attention():
    # FAVOR+ is an unbiased estimate of the softmax kernel: with many features the output nears softmax.
    q, k, v = qkv(1, 64, scale=0.7)
    exact = (q @ k.transpose(-1, -2) / math.sqrt(D)).softmax(-1) @ v
    errors = []
    for m in (16, 4096):
        torch.manual_seed(1)
        errors.append(rel(PerformerAttention(H, D, num_features=m).double()(q, k, v), exact))
    assert errors[1] < 0.25 and errors[1] < errors[0] / 2


def test_performer_features_are_orthogonal_blocks_with_gaussian_norms():
    torch.manual_seed(0)
    w = orthogonal_random_features(20, 8).double()  # blocks of 8, 8, 4 rows
    for block in (w[:8], w[8:16], w[16:]):
        unit = block / block.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(unit @ unit.T, torch.eye(len(block), dtype=torch.float64))
    norms = orthogonal_random_features(4096, 8).norm(dim=-1)
    assert abs(norms.square().mean().item() - 8) < 0.5  # E|g|^2 = d for g ~ N(0, I_d)


def test_performer_redraws_on_its_interval_only():
    torch.manual_seed(0)
    module = PerformerAttention(H, D, num_features=16, redraw_interval=3)
    first = module.projection.clone()
    for step in (0, 1, 2):
        module.on_train_step(step)
        assert torch.equal(module.projection, first)
    module.on_train_step(3)
    assert not torch.equal(module.projection, first)
    never = PerformerAttention(H, D, num_features=16, redraw_interval=0)
    kept = never.projection.clone()
    never.on_train_step(1000)
    assert torch.equal(never.projection, kept)
    assert "projection" in module.state_dict()  # saved in checkpoints


# -- linformer -------------------------------------------------------------------------------------


@pytest.mark.parametrize("share_kv,per_head", [(True, False), (False, False), (False, True)])
def test_linformer_matches_its_definition(share_kv, per_head):
    torch.manual_seed(0)
    module = LinformerAttention(H, D, max_len=48, proj_len=6, share_kv=share_kv, per_head=per_head).double()
    q, k, v = qkv(3, 40)
    mask = lengths_mask(40, [40, 29, 3])
    ref = torch.zeros_like(v)
    for bi, length in enumerate([40, 29, 3]):
        for hi in range(H):
            e = module.proj_k[hi if per_head else 0, :length]
            f = e if share_kv else module.proj_v[hi if per_head else 0, :length]
            kp, vp = e.T @ k[bi, hi, :length], f.T @ v[bi, hi, :length]
            ref[bi, hi] = (q[bi, hi] @ kp.T / math.sqrt(D)).softmax(-1) @ vp
    check_real(module.eval()(q, k, v, mask), ref, mask)


def test_linformer_needs_max_len_and_respects_it():
    with pytest.raises(ValueError, match="max_len"):
        LinformerAttention(H, D)
    q, k, v = qkv(1, 20)
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        LinformerAttention(H, D, max_len=16, proj_len=4)(q, k, v)


# -- local -----------------------------------------------------------------------------------------


def dense_local(q, k, v, mask, window, num_global):
    out = torch.zeros_like(v)
    n = q.shape[-2]
    pos = torch.arange(n)
    for bi in range(q.shape[0]):
        real = mask[bi]
        glob = torch.zeros(n, dtype=torch.bool)
        glob[real.nonzero().flatten()[:num_global]] = True
        allowed = ((pos[:, None] - pos[None, :]).abs() <= window) | glob[None, :] | glob[:, None]
        allowed &= real[None, :]
        for hi in range(q.shape[1]):
            s = q[bi, hi] @ k[bi, hi].T / math.sqrt(q.shape[-1])
            out[bi, hi] = softmax_over(s, allowed) @ v[bi, hi]
    return out


@pytest.mark.parametrize("window,num_global", [(4, 0), (4, 3), (5, 1), (30, 2)])  # blocked, and dense
def test_local_matches_its_definition(window, num_global):
    module = LocalAttention(H, D, window=window, num_global=num_global, dropout=0.0).double()
    q, k, v = qkv(3, 50)
    mask = lengths_mask(50, [50, 31, 2])
    check_real(module(q, k, v, mask), dense_local(q, k, v, mask, window, num_global), mask)


# -- bigbird ---------------------------------------------------------------------------------------


def dense_bigbird(q, k, v, mask, bs, r, g, seed):
    """Per sequence: nb blocks up to its last real token; global blocks: the first ceil(g/2) and last
    floor(g/2) of them; other query blocks: neighbours, globals, and the r non-neighbour non-global
    blocks of highest hashed score (seed, head, query block, key block)."""
    b, h, n, d = q.shape
    out = torch.zeros_like(v)
    blocks_total = -(-n // bs)
    for bi in range(b):
        real = mask[bi]
        nb = -(-(int(real.nonzero().max()) + 1) // bs)
        glob = set(range(-(-g // 2))) | set(range(nb - g // 2, nb))
        glob = {x for x in glob if 0 <= x < nb}
        for hi in range(h):
            allowed = torch.zeros(n, n, dtype=torch.bool)
            for qb in range(blocks_total):
                rows = slice(qb * bs, (qb + 1) * bs)
                if qb in glob:
                    allowed[rows] = True
                    continue
                keys = {x for x in (qb - 1, qb, qb + 1) if 0 <= x < nb} | glob
                candidates = [x for x in range(nb) if abs(x - qb) > 1 and x not in glob]
                score = {
                    x: counter_uniform(seed, torch.tensor(hi), torch.tensor(qb), torch.tensor(x)).item()
                    for x in candidates
                }
                keys |= set(sorted(candidates, key=lambda x: -score[x])[:r])
                for kb in keys:
                    allowed[rows, kb * bs : (kb + 1) * bs] = True
            allowed &= real[None, :]
            s = q[bi, hi] @ k[bi, hi].T / math.sqrt(d)
            out[bi, hi] = softmax_over(s, allowed | ~real[:, None]) @ v[bi, hi]
    return out


@pytest.mark.parametrize("bs,r,g", [(4, 2, 2), (5, 1, 3), (4, 3, 0), (3, 0, 1)])
def test_bigbird_matches_its_definition(bs, r, g):
    module = BigBirdAttention(
        H, D, block_size=bs, num_random_blocks=r, num_global_blocks=g, dropout=0.0
    ).double()
    q, k, v = qkv(3, 43)
    mask = lengths_mask(43, [43, 30, 6])
    out = run(module, q, k, v, mask)
    torch.manual_seed(0)
    seed = draw_seed("cpu")
    check_real(out, dense_bigbird(q, k, v, mask, bs, r, g, seed), mask)


RANDOMISED = [
    pytest.param(
        lambda: BigBirdAttention(H, D, block_size=4, num_random_blocks=2, dropout=0.0), id="bigbird"
    ),
    pytest.param(lambda: ReformerAttention(H, D, num_hashes=2, bucket_size=4, dropout=0.0), id="reformer"),
    pytest.param(lambda: SkyformerAttention(H, D, num_landmarks=8), id="skyformer"),
]


@pytest.mark.parametrize("make", RANDOMISED)
def test_random_draws_change_in_training_and_are_fixed_in_evaluation(make):
    torch.manual_seed(0)
    module = make().double()
    q, k, v = qkv(1, 64)
    a, b_, c = run(module, q, k, v, seed=0), run(module, q, k, v, seed=1), run(module, q, k, v, seed=0)
    assert torch.equal(a, c) and rel(a, b_) > 1e-3  # training: every forward draws, from torch's seed
    module.eval()
    d, e = run(module, q, k, v, seed=0), run(module, q, k, v, seed=1)
    assert torch.equal(d, e)  # evaluation: the module's eval_seed, whatever the global generator
    assert "eval_seed" in module.state_dict()


# -- reformer --------------------------------------------------------------------------------------


def dense_reformer(q, k, v, mask, rounds, c, seed):
    """Softmax over the union of the keys a query attends in any round: per round, real tokens hashed
    by argmax([xR; -xR]) with R the first ceil(L/2c) columns of the round's rotation, sorted by (bucket,
    position), chunks of c; a query attends to its bucket in its chunk and the one before; itself only
    at logit -1e5."""
    b, h, n, d = q.shape
    s_all = (q + k) / 2
    out = torch.zeros_like(v)
    columns = max(1, -(-n // (2 * c)))
    rot = rotations(seed, rounds, d, columns, torch.float64)
    for bi in range(b):
        real = mask[bi].nonzero().flatten().tolist()
        length = len(real)
        half = max(1, -(-length // (2 * c)))
        for hi in range(h):
            s = s_all[bi, hi]
            union = torch.zeros(n, n, dtype=torch.bool)
            for r in range(rounds):
                x = s[real] @ rot[r, :, :half]
                bucket = torch.cat([x, -x], -1).argmax(-1).tolist()
                order = sorted(range(length), key=lambda t: (bucket[t], real[t]))
                chunk = {real[t]: slot // c for slot, t in enumerate(order)}
                bk = {real[t]: bucket[t] for t in range(length)}
                for i in real:
                    for j in real:
                        if bk[i] == bk[j] and chunk[j] in (chunk[i], chunk[i] - 1):
                            union[i, j] = True
            logits = s @ (s / s.norm(dim=-1, keepdim=True)).T / math.sqrt(d)
            logits.diagonal().fill_(SELF_LOGIT)
            weights = softmax_over(logits, union | ~mask[bi][:, None])
            out[bi, hi] = weights @ v[bi, hi]
    return out


@pytest.mark.parametrize("rounds,c", [(1, 4), (2, 4), (3, 5), (2, 64)])
def test_reformer_matches_its_definition(rounds, c):
    module = ReformerAttention(H, D, num_hashes=rounds, bucket_size=c, dropout=0.0).double()
    q, k, v = qkv(3, 41)
    mask = lengths_mask(41, [41, 26, 1])
    out = run(module, q, k, v, mask)
    torch.manual_seed(0)
    seed = draw_seed("cpu")
    check_real(out, dense_reformer(q, k, v, mask, rounds, c, seed), mask)


# -- skyformer -------------------------------------------------------------------------------------


def kernel(a, b):
    return torch.exp(-torch.cdist(a, b).square() / 2)


def dense_skyformer(q, k, v, mask, m, landmarks, ridge, u=None):
    b, h, n, d = q.shape
    m_q, m_k = (m + 1) // 2, m // 2
    out = torch.zeros_like(v)
    for bi in range(b):
        real = mask[bi].nonzero().flatten()
        length = len(real)
        for hi in range(h):
            Q, K, V = q[bi, hi, real] * d**-0.25, k[bi, hi, real] * d**-0.25, v[bi, hi, real]
            if landmarks == "segments":
                zq = [Q[[r for r in range(length) if r * m_q // length == j]] for j in range(m_q)]
                zk = [K[[r for r in range(length) if r * m_k // length == j]] for j in range(m_k)]
                z = torch.stack([g.mean(0) for g in zq + zk if len(g)])
            else:
                rank = (u * length).floor().long()
                z = torch.cat([Q[rank[:m_q]], K[rank[m_q:]]])
            w = kernel(z, z) + ridge * torch.eye(len(z), dtype=z.dtype)
            out[bi, hi, real] = kernel(Q, z) @ torch.linalg.pinv(w) @ kernel(z, K) @ V
    return out


@pytest.mark.parametrize("landmarks", ["segments", "sampled"])
def test_skyformer_matches_its_definition(landmarks):
    m = 9
    module = SkyformerAttention(H, D, num_landmarks=m, landmarks=landmarks, ridge=0.1, pinv="exact").double()
    q, k, v = qkv(3, 30)
    mask = lengths_mask(30, [30, 19, 3])  # the last has empty segments
    out = run(module, q, k, v, mask)
    torch.manual_seed(0)
    u = counter_uniform(draw_seed("cpu"), torch.arange(m), dtype=torch.float64)
    check_real(out, dense_skyformer(q, k, v, mask, m, landmarks, 0.1, u), mask, tol=1e-8)


def test_skyformer_is_exact_gaussian_kernel_attention_when_every_point_is_a_landmark():
    q, k, v = qkv(1, 12)
    module = SkyformerAttention(
        H, D, num_landmarks=24, landmarks="segments", ridge=0.0, pinv="exact"
    ).double()
    exact = kernel(q * D**-0.25, k * D**-0.25) @ v
    assert rel(module(q, k, v), exact) < 1e-6


def test_skyformer_newton_schulz_converges_to_the_exact_inverse():
    # On the rescaled landmark matrix Newton-Schulz converges in ~15 iterations; the default 6 (as the
    # authors' code) stop early and damp the smallest eigen-directions, a regularisation.
    q, k, v = qkv(2, 200, seed=3)
    exact = SkyformerAttention(H, D, num_landmarks=32, landmarks="segments", pinv="exact").double()(q, k, v)

    def newton(iterations):
        module = SkyformerAttention(H, D, num_landmarks=32, landmarks="segments", pinv_iterations=iterations)
        return module.double()(q, k, v)

    assert rel(newton(20), exact) < 1e-10
    assert 1e-3 < rel(newton(6), exact) < 0.5


# -- alone vs batched at small settings (every path) -----------------------------------------------

SMALL = [
    pytest.param(lambda: LinearAttention(H, D), id="linear"),
    pytest.param(lambda: PerformerAttention(H, D, num_features=16), id="performer"),
    pytest.param(lambda: PerformerAttention(H, D, num_features=16, generalized=True), id="performer-relu"),
    pytest.param(lambda: LinformerAttention(H, D, max_len=128, proj_len=8, dropout=0.0), id="linformer"),
    pytest.param(
        lambda: LinformerAttention(H, D, max_len=128, proj_len=8, share_kv=False, per_head=True, dropout=0.0),
        id="linformer-separate",
    ),
    pytest.param(lambda: LocalAttention(H, D, window=4, dropout=0.0), id="local"),
    pytest.param(lambda: LocalAttention(H, D, window=5, num_global=3, dropout=0.0), id="local-global"),
    pytest.param(
        lambda: BigBirdAttention(H, D, block_size=4, num_random_blocks=2, num_global_blocks=2, dropout=0.0),
        id="bigbird",
    ),
    pytest.param(
        lambda: BigBirdAttention(H, D, block_size=5, num_random_blocks=3, num_global_blocks=3, dropout=0.0),
        id="bigbird-odd",
    ),
    pytest.param(lambda: ReformerAttention(H, D, num_hashes=1, bucket_size=4, dropout=0.0), id="reformer-1"),
    pytest.param(lambda: ReformerAttention(H, D, num_hashes=3, bucket_size=4, dropout=0.0), id="reformer-3"),
    pytest.param(lambda: SkyformerAttention(H, D, num_landmarks=10), id="skyformer"),
    pytest.param(
        lambda: SkyformerAttention(H, D, num_landmarks=10, landmarks="segments"), id="skyformer-segments"
    ),
]


# And every config of the registry (conf/attention/), its size knobs at most 16 (lra.registry's
# small_overrides: blocks, windows, buckets, landmarks, features): a new attention gets these checks at
# settings that reach its blocked or approximate paths, without an entry here.
SMALL += [
    pytest.param(
        lambda name=name: build_attention(
            name, H, D, max_len=128, **benchmark_overrides(name), **small_overrides(name)
        ),
        id=f"registry-{name}",
    )
    for name in attention_names()
]


@pytest.mark.parametrize("length", [37, 9, 1])
@pytest.mark.parametrize("make", SMALL)
def test_alone_equals_padded_in_a_longer_batch(make, length):
    torch.manual_seed(0)
    module = make().double()
    q, k, v = qkv(3, 101, seed=length, scale=1.5)
    mask = lengths_mask(101, [length, 101, 64])
    batched = run(module, q, k, v, mask)[0, :, :length]
    alone = run(module, q[:1, :, :length], k[:1, :, :length], v[:1, :, :length], None)[0]
    assert rel(batched, alone) <= 1e-9
    assert torch.isfinite(run(module, q, k, v, mask)).all()  # padded rows too: finite


@pytest.mark.parametrize("make", SMALL)
def test_padding_never_reaches_real_outputs_at_small_settings(make):
    torch.manual_seed(0)
    q, k, v = qkv(2, 60)
    assert_padding_never_reaches_real_outputs(make().double(), q, k, v, lengths_mask(60, [60, 33]))


@pytest.mark.parametrize(
    "cls,kwargs,message",
    [
        (LinformerAttention, {"proj_len": 0, "max_len": 8}, "attention.proj_len"),
        (LinformerAttention, {"share_kv": "yes", "max_len": 8}, "attention.share_kv"),
        (PerformerAttention, {"num_features": 0}, "attention.num_features"),
        (PerformerAttention, {"redraw_interval": -1}, "attention.redraw_interval"),
        (LocalAttention, {"window": 0}, "attention.window"),
        (LocalAttention, {"dropout": 1.5}, "attention.dropout"),
        (BigBirdAttention, {"block_size": 0}, "attention.block_size"),
        (BigBirdAttention, {"num_random_blocks": -1}, "attention.num_random_blocks"),
        (ReformerAttention, {"num_hashes": 0}, "attention.num_hashes"),
        (ReformerAttention, {"bucket_size": 1.5}, "attention.bucket_size"),
        (SkyformerAttention, {"landmarks": "kmeans"}, "attention.landmarks"),
        (SkyformerAttention, {"ridge": -1}, "attention.ridge"),
    ],
)
def test_bad_knobs_name_their_key(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(H, D, **kwargs)


@pytest.mark.parametrize("make", SMALL)
def test_non_contiguous_inputs(make):
    # q, k, v as a model makes them: (b, n, h, d) views transposed to (b, h, n, d).
    torch.manual_seed(0)
    module = make().double()
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in qkv(2, 48))
    assert not q.is_contiguous()
    mask = lengths_mask(48, [48, 20])
    torch.testing.assert_close(
        run(module, q, k, v, mask), run(module, *(t.contiguous() for t in (q, k, v)), mask)
    )
