"""Bounds for batch renormalization (reference/renorm.py), in the form of equiv.tolerance.

Per channel, with the batch's m values, g = growth(m), κ = kappa(x, eps) (so |x̂_B| ≤ κ), u the unit
roundoff and K the safety factor of equiv.tolerance:

- σ_B = sqrt(v_B + eps): the two-pass variance is off by ≲ g·u·κ²·(v_B + eps) (relative g·u·κ²), the
  root halves it and rounds once: relative e_σ = g·u·κ²/2 + u.
- r = σ_B/σ (then clipped, which rounds nothing): e_r = |r|·(e_σ + 2u) (the division, and the max that
  keeps σ off zero).
- d = (μ_B − μ)/σ: the mean is off by ≲ g·u·max|x|, the subtraction and division round:
  e_d = (g·u·max|x| + 2u·(|μ_B| + |μ|))/|σ|.
- y = γ·(x̂_B·r + d) + β is batch normalization with γ·r and γ·d + β (equiv.tolerance.train_forward on
  those), plus what the errors of r and d carry: K·|γ|·(e_r·κ + e_d). The two terms x̂_B·r and d may
  cancel (unclipped, their sum is (x − μ)/σ): the bound is taken on the terms, not on the sum.
- Gradients with r, d constant: batch normalization's with γ·r (equiv.tolerance.gradients), dx scaled by
  the relative error of r, and dγ = r·Σ dy·x̂_B + d·Σ dy with both factors' errors.
- The moving averages: the mean as equiv.tolerance.running_stats; the std σ' = (1 − w)·σ + w·σ_B:
  K·(u·(|σ| + |σ'| + w·σ_B) + w·σ_B·e_σ); a variance derived as σ'² − eps: 2|σ'|·(its bound) +
  K·u·(σ'² + eps).
"""
import numpy as np

from equiv import tolerance as tol
from equiv.dtypes import UNIT_ROUNDOFF


def _parts(x, mu, sigma, r, d, eps, dtype, axis):
    u = UNIT_ROUNDOFF[dtype]
    x, _, m, mean, var, max_abs = tol._stats(x, eps, axis)
    g, k = tol.growth(m), tol.kappa(x, eps, axis)
    e_sigma = g * u * k ** 2 / 2 + u
    e_r = np.abs(r) * (e_sigma + 2 * u)
    e_d = (g * u * max_abs + 2 * u * (np.abs(mean) + np.abs(mu))) / np.abs(sigma)
    return x, u, k, e_sigma, e_r, e_d, np.sqrt(var + eps)


def train_forward(x, gamma, beta, mu, sigma, r, d, eps, dtype, axis=1):
    """Elementwise bound on |y − y_oracle| for the renormalized training forward."""
    x, _, k, _, e_r, e_d, _ = _parts(x, mu, sigma, r, d, eps, dtype, axis)
    gamma = np.asarray(gamma, dtype=np.float64)
    bn = tol.train_forward(x, gamma * r, gamma * d + np.asarray(beta, dtype=np.float64), eps, dtype, axis)
    return bn + tol._bcast(tol.K * np.abs(gamma) * (e_r * k + e_d), x, axis)


def gradients(x, gamma, dy, mu, sigma, r, d, eps, dtype, axis=1, *, dx=None, sums=None):
    """Bounds on (dx, dgamma, dbeta); ``dx`` the oracle's dx and ``sums`` its (Σ dy·x̂_B, Σ dy) per channel."""
    x, u, _, _, e_r, e_d, _ = _parts(x, mu, sigma, r, d, eps, dtype, axis)
    b_dx, b_dg, b_db = tol.gradients(x, np.asarray(gamma, dtype=np.float64) * r, dy, eps, dtype, axis)
    s1, s0 = (np.abs(s) for s in sums)
    rel_r = e_r / np.maximum(np.abs(r), np.finfo(np.float64).tiny)
    dgamma = (np.abs(r) * b_dg + np.abs(d) * b_db + e_r * s1 + e_d * s0
              + tol.K * u * (np.abs(r) * s1 + np.abs(d) * s0))
    return b_dx + tol.K * tol._bcast(rel_r, x, axis) * np.abs(dx), dgamma, b_db


def moving_std(x, old, new, w, eps, dtype, axis=1):
    """Bound on a moving std after one update with new-batch weight w."""
    x, u, _, e_sigma, _, _, sigma_b = _parts(x, 0.0, 1.0, 1.0, 0.0, eps, dtype, axis)
    return tol.K * (u * (np.abs(old) + np.abs(new) + w * sigma_b) + w * sigma_b * e_sigma)


def variance_from_std(std, std_bound, eps, dtype):
    """Bound on σ² − eps (a variance derived from a moving std)."""
    std = np.asarray(std, dtype=np.float64)
    return 2 * np.abs(std) * std_bound + tol.K * UNIT_ROUNDOFF[dtype] * (std ** 2 + eps)
