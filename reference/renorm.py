"""Batch renormalization (Ioffe 2017, Algorithm 1) and ghost batches, written as the math.

Batch renormalization. Per channel, with the batch mean μ_B and biased variance v_B (as
``batch_norm_train``), σ_B = sqrt(v_B + eps), and moving averages μ, σ of the mean and std:

    r  = clip(σ_B / σ, r_min, r_max)          (the paper: r_min = 1/r_max)
    d  = clip((μ_B − μ) / σ, −d_max, d_max)
    x̂  = (x − μ_B) / σ_B · r + d
    y  = γ·x̂ + β

r and d are constants to the gradient (stop_gradient): the gradient is batch normalization's with γ·r
in place of γ, and dγ = Σ dy·x̂ with the x̂ above. Without clipping (no bounds) r·(x − μ_B)/σ_B + d =
(x − μ)/σ: the output is normalized by the moving averages, not by the batch. The moving averages
are updated after the step with new-batch weight w (the paper's rate α):

    μ ← μ + w·(μ_B − μ)        σ ← σ + w·(σ_B − σ)

and inference computes (x − μ)/σ·γ + β. A layer may keep two pairs: one for r and d, updated with
its own weight, and one for inference (Keras 3: renorm_mean/renorm_stddev with ``renorm_momentum``,
moving_mean/moving_stddev with ``momentum``); the functions take the pair and the weight.

Ghost batches (Hoffer et al. 2017, "virtual batches"): the batch of N samples is split along the
batch axis into N/v consecutive groups of v samples (samples 0..v−1, v..2v−1, …); each group is
batch-normalized with its own statistics. The per-group statistics are returned; how a layer folds
them into its running statistics is its convention, and so is which samples form a group (Keras 2's
virtual_batch_size takes every (N/v)-th sample, not runs of v: tests/test_options_tf_keras.py).
"""
import numpy as np

from reference.batch_norm import _channel_view, batch_norm_backward, batch_norm_train

TYPE_CHECKING = False
if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    Float64Array = NDArray[np.float64]


def _shape(v: "ArrayLike", shape: "tuple[int, ...]") -> "Float64Array":
    return np.asarray(v, dtype=np.float64).reshape(shape)


def renorm_correction(batch_mean: "ArrayLike", batch_var: "ArrayLike", mu: "ArrayLike", sigma: "ArrayLike", *,
                      eps: float, rmin: "float | None" = None, rmax: "float | None" = None,
                      dmax: "float | None" = None) -> "tuple[Float64Array, Float64Array]":
    """(r, d) per channel; a bound that is None is not applied."""
    sigma_b = np.sqrt(np.asarray(batch_var, dtype=np.float64) + eps)
    sigma = np.asarray(sigma, dtype=np.float64)
    r = sigma_b / sigma
    d = (np.asarray(batch_mean, dtype=np.float64) - np.asarray(mu, dtype=np.float64)) / sigma
    r = np.clip(r, -np.inf if rmin is None else rmin, np.inf if rmax is None else rmax)
    d = d if dmax is None else np.clip(d, -dmax, dmax)
    return r, d


def batch_renorm_train(x: "ArrayLike", gamma: "ArrayLike", beta: "ArrayLike", mu: "ArrayLike",
                       sigma: "ArrayLike", *, eps: float, rmin: "float | None" = None, rmax: "float | None" = None,
                       dmax: "float | None" = None, axis: int = 1) -> "tuple[Float64Array, ...]":
    """Training-mode forward. Returns (y, batch_mean, batch_var, r, d)."""
    c = np.asarray(x).shape[axis]
    x_hat, mean, var = batch_norm_train(x, np.ones(c), np.zeros(c), eps=eps, axis=axis)
    r, d = renorm_correction(mean, var, mu, sigma, eps=eps, rmin=rmin, rmax=rmax, dmax=dmax)
    _, _, shape = _channel_view(x, axis)
    y = _shape(gamma, shape) * (x_hat * _shape(r, shape) + _shape(d, shape)) + _shape(beta, shape)
    return y, mean, var, r, d


def batch_renorm_backward(x: "ArrayLike", gamma: "ArrayLike", dy: "ArrayLike", r: "ArrayLike", d: "ArrayLike", *,
                          eps: float, axis: int = 1) -> "tuple[Float64Array, Float64Array, Float64Array]":
    """Gradients with r and d held constant. Returns (dx, dgamma, dbeta)."""
    gamma, r = np.asarray(gamma, dtype=np.float64), np.asarray(r, dtype=np.float64)
    dx, dgamma_bn, dbeta = batch_norm_backward(x, gamma * r, dy, eps=eps, axis=axis)
    # dγ = Σ dy·(x̂_B·r + d) = r·Σ dy·x̂_B + d·Σ dy, where Σ dy·x̂_B = dgamma_bn (its γ·r does not enter it)
    return dx, r * dgamma_bn + np.asarray(d, dtype=np.float64) * dbeta, dbeta


def update_renorm_stats(mu: "ArrayLike", sigma: "ArrayLike", batch_mean: "ArrayLike", batch_var: "ArrayLike", *,
                        eps: float, new_batch_weight: float) -> "tuple[Float64Array, Float64Array]":
    """One update of a (mean, std) pair of moving averages: μ + w(μ_B − μ), σ + w(σ_B − σ)."""
    w = float(new_batch_weight)
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    sigma_b = np.sqrt(np.asarray(batch_var, dtype=np.float64) + eps)
    return (1.0 - w) * mu + w * np.asarray(batch_mean, dtype=np.float64), (1.0 - w) * sigma + w * sigma_b


def ghost_batch_norm_train(x: "ArrayLike", gamma: "ArrayLike", beta: "ArrayLike", *, eps: float,
                           virtual_batch_size: int, axis: int = 1) -> "tuple[Float64Array, list, list]":
    """Training-mode forward over ghost batches of ``virtual_batch_size`` consecutive samples (axis 0 is
    the batch axis). Returns (y, [group means], [group biased variances]); N must be a multiple of v."""
    x = np.asarray(x, dtype=np.float64)
    v = int(virtual_batch_size)
    if v < 1 or x.shape[0] % v:
        raise ValueError(f"the batch of {x.shape[0]} is no multiple of the virtual batch size {v}")
    parts = [batch_norm_train(x[i:i + v], gamma, beta, eps=eps, axis=axis) for i in range(0, x.shape[0], v)]
    return np.concatenate([p[0] for p in parts]), [p[1] for p in parts], [p[2] for p in parts]
