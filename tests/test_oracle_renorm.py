"""The batch renormalization oracle (reference/renorm.py) on its own: its limits and invariants."""
import numpy as np
import pytest

import reference as ref
from reference.renorm import batch_renorm_train, update_renorm_averages

EPS = 1e-3


def _x(shape=(16, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape) * 3 + 2


def test_r_one_d_zero_is_batch_normalization():
    """rmax = rmin = 1 and dmax = 0 clip r to 1 and d to 0: the output is batch normalization's."""
    x, gamma, beta = _x(), np.array([0.5, 2.0, -1.0]), np.array([0.3, -0.7, 1.5])
    y, r, d, _, _ = batch_renorm_train(x, gamma, beta, np.full(3, 9.0), np.full(3, 0.1), eps=EPS,
                                       rmin=1.0, rmax=1.0, dmax=0.0)
    np.testing.assert_array_equal(r, 1.0)
    np.testing.assert_array_equal(d, 0.0)
    np.testing.assert_allclose(y, ref.batch_norm_train(x, gamma, beta, eps=EPS)[0], rtol=1e-14, atol=1e-14)


def test_unclipped_with_the_batch_own_averages_is_batch_normalization():
    """With μ = μB and σ = σB (the averages equal to this batch's), r = 1 and d = 0 unclipped."""
    x = _x(seed=1)
    _, mb, vb = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=EPS)
    y, r, d, bm, bs = batch_renorm_train(x, 1.0, 0.0, mb, np.sqrt(vb + EPS), eps=EPS)
    np.testing.assert_allclose(r, 1.0, rtol=1e-15)
    np.testing.assert_allclose(d, 0.0, atol=1e-15)
    np.testing.assert_allclose(y, ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=EPS)[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(bs, np.sqrt(vb + EPS))


def test_output_is_the_batch_normalized_value_in_the_moving_frame():
    """Unclipped, x̂·r + d = (x − μ)/σ: the batch renormalized output is x normalized by the moving averages."""
    x, mean, std = _x(seed=2), np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])
    y, *_ = batch_renorm_train(x, 1.0, 0.0, mean, std, eps=EPS)
    np.testing.assert_allclose(y, (x - mean) / std, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("rmax,dmax", [(1.5, 0.5), (3.0, 5.0)])
def test_clipping_bounds_r_and_d(rmax, dmax):
    x = _x(seed=3)
    _, r, d, _, _ = batch_renorm_train(x, 1.0, 0.0, np.full(3, -10.0), np.full(3, 0.01), eps=EPS,
                                       rmin=1 / rmax, rmax=rmax, dmax=dmax)
    assert np.all((r >= 1 / rmax) & (r <= rmax)) and np.all(np.abs(d) <= dmax)
    np.testing.assert_array_equal(r, rmax)     # σB/σ ≫ rmax and (μB − μ)/σ ≫ dmax here
    np.testing.assert_array_equal(d, dmax)


def test_update_moves_each_average_by_the_new_batch_weight():
    mean, std = update_renorm_averages(np.zeros(2), np.ones(2), np.array([4.0, -2.0]), np.array([3.0, 5.0]),
                                       new_batch_weight=0.25)
    np.testing.assert_allclose(mean, [1.0, -0.5])
    np.testing.assert_allclose(std, [1.5, 2.0])
