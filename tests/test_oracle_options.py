"""The oracle of the layer options (reference/options.py), on hand-checked values."""
import numpy as np
import pytest

import reference as ref
from reference import options as opt

# one channel; batches of 2 and 4 values (unequal), means 1 and 4
A = np.array([[0.0], [2.0]])            # mean 1, biased var 1, unbiased 2
B = np.array([[3.0], [3.0], [5.0], [5.0]])   # mean 4, biased var 1, unbiased 4/3


def test_cumulative_average_is_the_plain_average_of_the_batch_statistics():
    (m1, v1), (m2, v2) = opt.cumulative_running_stats([A, B], [100.0], [100.0], unbiased=True)
    # the first update weighs the new batch 1: the initial values are forgotten
    assert m1 == pytest.approx([1.0], abs=0) and v1 == pytest.approx([2.0], abs=0)
    # the second 1/2: (1 + 4)/2 and (2 + 4/3)/2
    np.testing.assert_allclose(m2, [2.5], rtol=1e-15)
    np.testing.assert_allclose(v2, [5.0 / 3.0], rtol=1e-15)
    np.testing.assert_allclose(opt.batch_average([A, B], unbiased=True), [[2.5], [5.0 / 3.0]], rtol=1e-15)
    np.testing.assert_allclose(opt.batch_average([A, B], unbiased=False), [[2.5], [1.0]], rtol=1e-15)


def test_whole_data_statistics():
    # 0, 2, 3, 3, 5, 5: mean 3, Σ(x − 3)² = 9 + 1 + 0 + 0 + 4 + 4 = 18
    mean, var = opt.whole_data_stats([A, B], unbiased=False)
    np.testing.assert_allclose([mean[0], var[0]], [3.0, 3.0], rtol=1e-15)
    mean, var = opt.whole_data_stats([A, B], unbiased=True)
    np.testing.assert_allclose([mean[0], var[0]], [3.0, 3.6], rtol=1e-15)


@pytest.mark.parametrize("unbiased", [True, False])
def test_gap_formula_equals_the_difference(unbiased):
    # by hand, unbiased: μ̄ − μ = 2.5 − 3 = −0.5; v̄ − V = 5/3 − 3.6 = −29/15
    gm, gv = opt.average_gap([A, B], unbiased=unbiased)
    am, av = opt.batch_average([A, B], unbiased=unbiased)
    wm, wv = opt.whole_data_stats([A, B], unbiased=unbiased)
    np.testing.assert_allclose(gm, am - wm, rtol=1e-14)
    np.testing.assert_allclose(gv, av - wv, rtol=1e-14)
    if unbiased:
        np.testing.assert_allclose([gm[0], gv[0]], [-0.5, -29.0 / 15.0], rtol=1e-14)


def test_gap_formula_on_random_unequal_4d_batches():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((n, 3, 2, 2)) * (1 + i) + i for i, n in enumerate((1, 5, 2, 7))]
    for unbiased in (True, False):
        gm, gv = opt.average_gap(batches, unbiased=unbiased)
        am, av = opt.batch_average(batches, unbiased=unbiased)
        wm, wv = opt.whole_data_stats(batches, unbiased=unbiased)
        np.testing.assert_allclose(gm, am - wm, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gv, av - wv, rtol=1e-12, atol=1e-14)
        cumulative = opt.cumulative_running_stats(batches, np.zeros(3), np.ones(3), unbiased=unbiased)[-1]
        np.testing.assert_allclose(cumulative, (am, av), rtol=1e-14)


def test_equal_batches_same_mean_have_no_mean_gap():
    gm, gv = opt.average_gap([A, A + 0.0], unbiased=True)
    assert gm == pytest.approx([0.0], abs=0)
    # v̄ = 2; V = 4·(1/3)... values 0, 2, 0, 2: biased var 1, unbiased 4/3: gap 2/3
    np.testing.assert_allclose(gv, [2.0 / 3.0], rtol=1e-15)


def test_without_affine_parameters_gamma_one_beta_zero():
    x = np.array([[1.0, -1.0], [3.0, 5.0]])
    y, mean, var = opt.batch_norm_train_plain(x, eps=0.0)
    np.testing.assert_allclose(y, [[-1.0, -1.0], [1.0, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(var, [1.0, 9.0])
    dy = np.array([[1.0, 0.0], [0.0, 0.0]])
    dx = opt.batch_norm_backward_plain(x, dy, eps=0.0)
    # x̂ = (−1, 1): dx = (dy − mean(dy) − x̂·mean(dy·x̂))/σ = ((1, 0) − 0.5 − (−1, 1)·(−0.5))/σ = 0
    np.testing.assert_allclose(dx, np.zeros_like(x), atol=1e-15)
    # x = 0, 1, 2: σ = sqrt(2/3), x̂ = (−1, 0, 1)·sqrt(3/2); dy = (1, 0, 0): mean(dy) = 1/3,
    # mean(dy·x̂) = −sqrt(3/2)/3, so dx = (1/6, −1/3, 1/6)/σ
    dx = opt.batch_norm_backward_plain([[0.0], [1.0], [2.0]], [[1.0], [0.0], [0.0]], eps=0.0)
    np.testing.assert_allclose(dx.ravel(), np.array([1 / 6, -1 / 3, 1 / 6]) / np.sqrt(2 / 3), rtol=1e-14)


def test_without_running_statistics_the_batch_normalizes_in_both_modes():
    x = np.array([[1.0], [3.0]])
    y = opt.batch_norm_untracked(x, [2.0], [0.5], eps=0.0)
    np.testing.assert_allclose(y, [[-1.5], [2.5]], rtol=1e-15)
    assert np.array_equal(y, ref.batch_norm_train(x, [2.0], [0.5], eps=0.0)[0])


def test_several_feature_axes_reduce_over_the_others():
    # (2, 2, 2), features axes 1 and 2: each of the 4 features has the 2 values along axis 0
    x = np.array([[[0.0, 1.0], [2.0, 3.0]], [[2.0, 5.0], [4.0, 7.0]]])
    gamma, beta = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.5, 0.0], [0.0, -1.0]])
    y, mean, var = opt.batch_norm_train_features(x, gamma, beta, eps=0.0, feature_axes=(1, 2))
    np.testing.assert_allclose(mean, [[1.0, 3.0], [3.0, 5.0]], rtol=1e-15)
    np.testing.assert_allclose(var, [[1.0, 4.0], [1.0, 4.0]], rtol=1e-15)
    # x̂ = ∓1 in every feature: y = ∓gamma + beta
    np.testing.assert_allclose(y[:, 0, 0], [-0.5, 1.5], rtol=1e-15)
    np.testing.assert_allclose(y[:, 0, 1], [-2.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(y[:, 1, 0], [-3.0, 3.0], rtol=1e-15)
    np.testing.assert_allclose(y[:, 1, 1], [-5.0, 3.0], rtol=1e-15)
    # the axes' order and sign do not matter
    y2, mean2, _ = opt.batch_norm_train_features(x, gamma, beta, eps=0.0, feature_axes=(-1, 1))
    np.testing.assert_array_equal(mean2, mean)
    np.testing.assert_array_equal(y2, y)


def test_one_feature_axis_is_batch_norm():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 2, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    y, mean, var = opt.batch_norm_train_features(x, gamma, beta, eps=1e-5, feature_axes=(1,))
    ry, rmean, rvar = ref.batch_norm_train(x, gamma, beta, eps=1e-5, axis=1)
    np.testing.assert_allclose(y, ry, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose((mean, var), (rmean, rvar), rtol=1e-14)
    # two feature axes: each (H, W) position its own channel, as the per-position loop computes it
    y, mean, var = opt.batch_norm_train_features(x, np.ones((2, 5)), np.zeros((2, 5)), eps=1e-5, feature_axes=(2, 3))
    for h in range(2):
        for w in range(5):
            v = x[:, :, h, w].ravel()
            np.testing.assert_allclose(y[:, :, h, w], (x[:, :, h, w] - v.mean()) / np.sqrt(v.var() + 1e-5), rtol=1e-13)
            np.testing.assert_allclose((mean[h, w], var[h, w]), (v.mean(), v.var()), rtol=1e-13)
