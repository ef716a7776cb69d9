"""Length-bucketed batching: every example once per epoch, deterministic per seed, less padding."""

from __future__ import annotations

import numpy as np
import pytest

from data.sampling import BucketBatchSampler, length_sorted_batches


def lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(5, 2000, n)


def test_every_example_once_per_epoch_with_full_batches():
    sampler = BucketBatchSampler(lengths(), batch_size=32, seed=0, pool_batches=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 32  # ceil(1000 / 32)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert sum(len(b) != 32 for b in batches) == 1  # only one short batch


def test_deterministic_per_seed_and_new_order_each_epoch():
    a = BucketBatchSampler(lengths(), 32, seed=3)
    b = BucketBatchSampler(lengths(), 32, seed=3)
    first = list(a)
    assert first == list(b)
    assert list(a) != first  # the next pass
    c = BucketBatchSampler(lengths(), 32, seed=3)
    c.resume_at(0, 5)
    assert list(c) == first[5:]
    assert list(BucketBatchSampler(lengths(), 32, seed=4)) != first


def test_padding_is_reduced_and_batch_order_is_mixed():
    lens = lengths()
    bucketed = list(BucketBatchSampler(lens, 32, seed=0, pool_batches=8))
    rng = np.random.default_rng(0)
    random = np.array_split(rng.permutation(len(lens)), len(bucketed))

    def padded(batches):
        return sum(len(b) * lens[list(b)].max() for b in batches)

    assert padded(bucketed) < 0.75 * padded(random)
    longest = [lens[b].max() for b in bucketed]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_bad_sizes():
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler(lengths(), 0)


def test_evaluation_batches_are_length_sorted_and_complete():
    lens = lengths(100)
    batches = length_sorted_batches(lens, 16)
    assert sorted(i for b in batches for i in b) == list(range(100))
    flat = [lens[i] for b in batches for i in b]
    assert flat == sorted(flat) and [len(b) for b in batches] == [16] * 6 + [4]
