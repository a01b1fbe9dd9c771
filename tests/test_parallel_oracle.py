"""The data-parallel oracle (reference/parallel.py) against batch norm on the global batch."""
import numpy as np
import pytest

import reference as ref
from reference import parallel as par


def shards_of(sizes, c=3, hw=None, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    tail = (c,) if hw is None else (c, hw, hw)
    return [offset + rng.standard_normal((n,) + tail) for n in sizes]


@pytest.mark.parametrize("sizes,hw", [((4, 4), None), ((3, 5, 1, 7), None), ((2, 2, 2, 2), 3), ((1, 6), 2)])
def test_sync_forward_and_backward_are_the_global_batch(sizes, hw):
    shards = shards_of(sizes, hw=hw)
    dys = shards_of(sizes, hw=hw, seed=1)
    gamma, beta = np.array([0.5, -2.0, 1.5]), np.array([0.1, 0.0, -3.0])
    ys, mean, var, count = par.sync_batch_norm_train(shards, gamma, beta, eps=1e-5)
    y, gm, gv = ref.batch_norm_train(par.global_batch(shards), gamma, beta, eps=1e-5)
    np.testing.assert_array_equal(np.concatenate(ys), y)
    np.testing.assert_array_equal(mean, gm)
    np.testing.assert_array_equal(var, gv)
    assert count == sum(sizes) * (1 if hw is None else hw * hw)
    dxs, dgammas, dbetas = par.sync_batch_norm_backward(shards, gamma, dys, eps=1e-5)
    dx, dgamma, dbeta = ref.batch_norm_backward(par.global_batch(shards), gamma, par.global_batch(dys), eps=1e-5)
    np.testing.assert_array_equal(np.concatenate(dxs), dx)
    assert dgammas.shape == dbetas.shape == (len(sizes), 3)
    np.testing.assert_allclose(dgammas.sum(axis=0), dgamma, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dbetas.sum(axis=0), dbeta, rtol=1e-13, atol=1e-13)


def test_unsynchronized_is_batch_norm_per_shard():
    shards, dys = shards_of((3, 5)), shards_of((3, 5), seed=1)
    gamma, beta = np.ones(3), np.zeros(3)
    for s, d, (y, _m, _v), (dx, _dg, _db) in zip(shards, dys, par.local_batch_norm_train(shards, gamma, beta, eps=1e-3),
                                             par.local_batch_norm_backward(shards, gamma, dys, eps=1e-3)):
        ry, rm, rv = ref.batch_norm_train(s, gamma, beta, eps=1e-3)
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(dx, ref.batch_norm_backward(s, gamma, d, eps=1e-3)[0])
    # and it is not the global batch: a witness that the two truths differ
    assert not np.allclose(par.local_batch_norm_train(shards, gamma, beta, eps=1e-3)[0][0],
                           par.sync_batch_norm_train(shards, gamma, beta, eps=1e-3)[0][0])


@pytest.mark.parametrize("sizes", [(4, 4), (3, 5, 1, 7), (2, 0, 6)])
def test_count_weighted_merge_is_exact(sizes):
    shards = shards_of(sizes, offset=10.0)
    counts, means, variances = par.shard_moments(shards)
    mean, var = par.merge_count_weighted(counts, means, variances)
    x = par.global_batch(shards)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(var, x.var(axis=0), rtol=1e-13)


def test_equal_weighting_agrees_only_for_equal_counts():
    counts, means, variances = par.shard_moments(shards_of((4, 4, 4, 4)))
    np.testing.assert_allclose(par.merge_equal_weighted(means, variances),
                               par.merge_count_weighted(counts, means, variances), rtol=1e-12)
    counts, means, variances = par.shard_moments(shards_of((1, 7), offset=1.0))
    eq_mean, eq_var = par.merge_equal_weighted(means, variances)
    mean, var = par.merge_count_weighted(counts, means, variances)
    assert np.abs(eq_mean - mean).max() > 1e-2   # one value weighs as much as seven
    # an empty shard: equal weighting has no mean for it
    counts, means, variances = par.shard_moments(shards_of((3, 0)))
    assert counts.tolist() == [3, 0]
    assert np.isnan(par.merge_equal_weighted(means, variances)[0]).all()


def test_fast_merge_equals_two_pass_without_offset_and_loses_digits_with_one():
    for offset, rtol in ((0.0, 1e-12), (1e6, None)):
        shards = shards_of((5, 3), offset=offset)
        counts = [len(s) for s in shards]
        sums = [s.sum(axis=0) for s in shards]
        sq = [(s ** 2).sum(axis=0) for s in shards]
        mean, var = par.merge_fast(counts, sums, sq)
        exact = par.global_batch(shards).var(axis=0)
        if rtol:
            np.testing.assert_allclose(var, exact, rtol=rtol)
        else:   # (mean/std)² = 1e12: about 12 of float64's 16 digits are gone
            assert 1e-8 < np.abs(var / exact - 1).max() < 1e-1


def test_running_stats_use_the_global_count():
    shards = shards_of((2, 3))
    _, mean, var, count = par.sync_batch_norm_train(shards, np.ones(3), np.zeros(3), eps=1e-5)
    m, v = ref.update_running_stats(np.zeros(3), np.ones(3), mean, var, count, new_batch_weight=1.0, unbiased=True)
    np.testing.assert_allclose(v, par.global_batch(shards).var(axis=0, ddof=1), rtol=1e-13)


@pytest.mark.parametrize("sizes,hw", [((3, 5), None), ((1, 2, 4, 7), 2)])
def test_merged_batch_norm(sizes, hw):
    shards, dys = shards_of(sizes, hw=hw, offset=3.0), shards_of(sizes, hw=hw, seed=1)
    gamma, beta = np.array([0.5, -2.0, 1.5]), np.array([0.1, 0.0, -3.0])
    # count weighting is the global batch
    ys, mean, var = par.merged_batch_norm_train(shards, gamma, beta, eps=1e-5, weighting="count")
    sys_, smean, svar, _ = par.sync_batch_norm_train(shards, gamma, beta, eps=1e-5)
    np.testing.assert_allclose(np.concatenate(ys), np.concatenate(sys_), rtol=1e-12, atol=1e-12)
    got = par.merged_batch_norm_backward(shards, gamma, dys, eps=1e-5, weighting="count")
    want = par.sync_batch_norm_backward(shards, gamma, dys, eps=1e-5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.concatenate(g), np.concatenate(w), rtol=1e-11, atol=1e-11)
    # equal weighting: the statistics are the equal-weighted merge, the gradient the derivative of
    # the forward (central differences)
    _, emean, evar = par.merged_batch_norm_train(shards, gamma, beta, eps=1e-5, weighting="equal")
    c, m, v = par.shard_moments(shards)
    np.testing.assert_allclose((emean, evar), par.merge_equal_weighted(m, v), rtol=1e-12)
    dxs, _, _ = par.merged_batch_norm_backward(shards, gamma, dys, eps=1e-5, weighting="equal")
    loss = lambda sh: sum((y * d).sum() for y, d in zip(  # noqa: E731
        par.merged_batch_norm_train(sh, gamma, beta, eps=1e-5, weighting="equal")[0], dys))
    r, idx, h = 0, (0,) * shards[0].ndim, 1e-6
    plus = [s.copy() for s in shards]
    minus = [s.copy() for s in shards]
    plus[r][idx] += h
    minus[r][idx] -= h
    np.testing.assert_allclose(dxs[r][idx], (loss(plus) - loss(minus)) / (2 * h), rtol=1e-6)
