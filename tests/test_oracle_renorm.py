"""The oracle of batch renormalization and ghost batches (reference/renorm.py) on its own: hand-checked
values, the identities the math gives, and finite differences for the gradient (r and d constant)."""
import numpy as np
import pytest

from reference import batch_norm_backward, batch_norm_train
from reference.renorm import (
    batch_renorm_backward,
    batch_renorm_train,
    ghost_batch_norm_train,
    renorm_correction,
    update_renorm_stats,
)

RNG = np.random.default_rng(7)
X = RNG.standard_normal((6, 3, 2, 2)) * 2.0 + 1.5
GAMMA, BETA = np.array([0.5, 2.0, -1.0]), np.array([0.1, -0.3, 2.0])
MU, SIGMA = np.array([1.0, 0.0, 2.0]), np.array([0.7, 3.0, 1.9])


def test_hand_checked_values_with_and_without_clipping():
    x = np.array([[0.0], [2.0]])           # one channel: μ_B = 1, v_B = 1, σ_B = 1 (eps 0)
    y, mean, var, r, d = batch_renorm_train(x, [1.0], [0.0], [0.0], [0.5], eps=0.0)
    assert (mean, var, r, d) == ([1.0], [1.0], [2.0], [2.0])
    np.testing.assert_array_equal(y, [[0.0], [4.0]])      # x̂_B = ∓1: ∓1·2 + 2 = (x − μ)/σ = x/0.5
    y, *_, r, d = batch_renorm_train(x, [1.0], [0.0], [0.0], [0.5], eps=0.0, rmax=1.5, dmax=1.0)
    assert (r, d) == ([1.5], [1.0])
    np.testing.assert_array_equal(y, [[-0.5], [2.5]])
    *_, r, d = batch_renorm_train(x, [1.0], [0.0], [3.0], [4.0], eps=0.0, rmin=0.5)
    assert (r, d) == ([0.5], [-0.5])                        # σ_B/σ = 0.25 raised to r_min; d = (1 − 3)/4


def test_without_clipping_the_output_is_normalized_by_the_moving_averages():
    y, *_ = batch_renorm_train(X, GAMMA, BETA, MU, SIGMA, eps=1e-3)
    s = (1, 3, 1, 1)
    np.testing.assert_allclose(y, GAMMA.reshape(s) * (X - MU.reshape(s)) / SIGMA.reshape(s) + BETA.reshape(s),
                               rtol=1e-13, atol=1e-13)


def test_with_the_batch_statistics_as_averages_it_is_batch_normalization():
    _, mean, var = batch_norm_train(X, GAMMA, BETA, eps=1e-3)
    y, *_, r, d = batch_renorm_train(X, GAMMA, BETA, mean, np.sqrt(var + 1e-3), eps=1e-3, rmax=1.0, dmax=0.0)
    np.testing.assert_allclose(r, 1.0, rtol=1e-15)
    np.testing.assert_array_equal(d, 0.0)
    np.testing.assert_allclose(y, batch_norm_train(X, GAMMA, BETA, eps=1e-3)[0], rtol=1e-13, atol=1e-13)
    dx, dg, db = batch_renorm_backward(X, GAMMA, X ** 2, r, d, eps=1e-3)
    for a, b in zip((dx, dg, db), batch_norm_backward(X, GAMMA, X ** 2, eps=1e-3)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("clip", [{}, {"rmax": 1.2, "rmin": 1 / 1.2, "dmax": 0.3}])
def test_gradients_match_finite_differences_with_r_and_d_constant(clip):
    dy = RNG.standard_normal(X.shape)
    _, _, _, r, d = batch_renorm_train(X, GAMMA, BETA, MU, SIGMA, eps=1e-3, **clip)
    s = (1, 3, 1, 1)

    def loss(x, gamma, beta):   # r and d frozen at their values (stop_gradient)
        x_hat = batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-3)[0]
        return np.sum(dy * (gamma.reshape(s) * (x_hat * r.reshape(s) + d.reshape(s)) + beta.reshape(s)))

    dx, dgamma, dbeta = batch_renorm_backward(X, GAMMA, dy, r, d, eps=1e-3)
    h = 1e-6
    for arg, grad in ((0, dx), (1, dgamma), (2, dbeta)):
        args = [X.copy(), GAMMA.copy(), BETA.copy()]
        flat = grad.reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 7)):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[arg].reshape(-1)[i] += h
            minus[arg].reshape(-1)[i] -= h
            fd = (loss(*plus) - loss(*minus)) / (2 * h)
            assert fd == pytest.approx(flat[i], rel=1e-6, abs=1e-7), (arg, i)


def test_the_moving_averages_move_toward_the_batch_mean_and_std():
    mu, sigma = update_renorm_stats([0.0, 1.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0], eps=1.0, new_batch_weight=0.25)
    np.testing.assert_array_equal(mu, [0.5, 1.0])
    np.testing.assert_array_equal(sigma, [1.25, 1.75])     # σ_B = sqrt(3 + 1) = 2, sqrt(0 + 1) = 1


def test_correction_is_per_channel():
    r, d = renorm_correction([1.0, 2.0], [3.0, 8.0], [0.0, 0.0], [2.0, 1.0], eps=1.0)
    np.testing.assert_array_equal(r, [1.0, 3.0])
    np.testing.assert_array_equal(d, [0.5, 2.0])


def test_ghost_batches_are_consecutive_groups_each_normalized_on_its_own():
    y, means, vars_ = ghost_batch_norm_train(X, GAMMA, BETA, eps=1e-3, virtual_batch_size=2)
    assert len(means) == len(vars_) == 3
    for k, i in enumerate(range(0, 6, 2)):
        yk, mk, vk = batch_norm_train(X[i:i + 2], GAMMA, BETA, eps=1e-3)
        np.testing.assert_array_equal(y[i:i + 2], yk)
        np.testing.assert_array_equal(means[k], mk)
        np.testing.assert_array_equal(vars_[k], vk)
    whole, mean, var = ghost_batch_norm_train(X, GAMMA, BETA, eps=1e-3, virtual_batch_size=6)
    np.testing.assert_array_equal(whole, batch_norm_train(X, GAMMA, BETA, eps=1e-3)[0])
    assert not np.allclose(y, whole)
    with pytest.raises(ValueError, match="no multiple"):
        ghost_batch_norm_train(X, GAMMA, BETA, eps=1e-3, virtual_batch_size=4)
