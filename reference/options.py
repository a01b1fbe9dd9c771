"""Batch normalization under the options a user sets on the layer, written as the math.

Cumulative moving average (PyTorch's ``momentum=None``): the k-th update (k = 1, 2, …) weighs the
new batch by 1/k, so after k batches with per-batch statistics s_1 … s_k

    running_k = (1 − 1/k)·running_{k−1} + (1/k)·s_k = (1/k) Σ_{i≤k} s_i

whatever the initial values (the first update weighs them by 0). The variance entering s_i is the
layer's running-variance estimator: unbiased per batch, v_i·m_i/(m_i − 1), for PyTorch.

The statistics of the whole data (all batches concatenated, M = Σ m_i values per channel) are

    μ = Σ (m_i/M)·μ_i                  V = Σ (m_i/M)·(v_i + (μ_i − μ)²)     (biased; ×M/(M − 1) unbiased)

(the law of total variance; μ_i, v_i the biased per-batch mean and variance). The per-batch average
is not that statistic when the batches differ in size or mean; the gap is a convention, not an error:

    μ̄ − μ = Σ (1/k − m_i/M)·(μ_i − μ)
    v̄ − V = Σ (c_i/k − c·m_i/M)·v_i − c·Σ (m_i/M)·(μ_i − μ)²

with c_i = m_i/(m_i − 1), c = M/(M − 1) for the unbiased estimators (1 for the biased). Equal batches
give μ̄ = μ; the variance still misses the spread of the batch means (the second sum) and weighs
the estimators differently (the first).

Without affine parameters (``affine=False``) gamma is 1 and beta 0, and there are no parameter
gradients. Without gamma alone (``affine="no_scale"``, Keras' ``scale=False``) gamma is 1 and there
is no gamma gradient; without beta alone (``"no_center"``, ``center=False``) beta is 0 and there is
no beta gradient. Synchronized statistics on one device (``synchronized=True``) are the batch's own.
Without running statistics (``track_running_stats=False``) the batch statistics normalize in
inference mode too, and no call changes any state.

Statistics reduced in the layer's own dtype (Flax's ``force_float32_reductions=False``) change nothing
in the math: the oracle is batch normalization as ever, and only the bounds, the compute dtype's, say
how close a layer must come.

Several feature axes (Flax's ``axis=(1, 2)`` on (N, H, W, C)): one mean and variance per feature, an
index into the feature axes, over every other axis; gamma and beta have the features' shape. It is
batch normalization with the feature axes flattened into one channel axis.
"""
import numpy as np

from reference.batch_norm import (
    batch_norm_backward,
    batch_norm_train,
    update_running_stats,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    Float64Array = NDArray[np.float64]


def _count(x: "ArrayLike", axis: int) -> int:
    x = np.asarray(x)
    return x.size // x.shape[axis % x.ndim]


def _batch_stats(x: "ArrayLike", axis: int) -> "tuple[Float64Array, Float64Array]":
    c = np.asarray(x).shape[axis]
    _, mean, var = batch_norm_train(x, np.ones(c), np.zeros(c), eps=1.0, axis=axis)
    return mean, var


def cumulative_running_stats(batches: "list[ArrayLike]", running_mean: "ArrayLike", running_var: "ArrayLike",
                             *, unbiased: bool, axis: int = 1) -> "list[tuple[Float64Array, Float64Array]]":
    """(running mean, running var) after each of the batches under the cumulative moving average,
    updated as the layer does: the k-th update with new-batch weight 1/k."""
    out, mean, var = [], np.asarray(running_mean, dtype=np.float64), np.asarray(running_var, dtype=np.float64)
    for k, x in enumerate(batches, start=1):
        bmean, bvar = _batch_stats(x, axis)
        mean, var = update_running_stats(mean, var, bmean, bvar, _count(x, axis), new_batch_weight=1.0 / k,
                                         unbiased=unbiased)
        out.append((mean, var))
    return out


def batch_average(batches: "list[ArrayLike]", *, unbiased: bool,
                  axis: int = 1) -> "tuple[Float64Array, Float64Array]":
    """The plain average (1/k) Σ s_i of the per-batch statistics: what the cumulative moving average
    equals after k batches (in exact arithmetic)."""
    stats = [_batch_stats(x, axis) for x in batches]
    counts = [_count(x, axis) for x in batches]
    mean = np.mean([m for m, _ in stats], axis=0)
    var = np.mean([v * (n / (n - 1) if unbiased else 1.0) for (_, v), n in zip(stats, counts)], axis=0)
    return mean, var


def whole_data_stats(batches: "list[ArrayLike]", *, unbiased: bool,
                     axis: int = 1) -> "tuple[Float64Array, Float64Array]":
    """Mean and variance of each channel over the concatenation of all batches (unbiased: ÷ M − 1)."""
    x = np.concatenate([np.asarray(b, dtype=np.float64) for b in batches], axis=0)   # the batch axis
    mean, var = _batch_stats(x, axis)
    n = _count(x, axis)
    return mean, var * (n / (n - 1) if unbiased else 1.0)


def average_gap(batches: "list[ArrayLike]", *, unbiased: bool,
                axis: int = 1) -> "tuple[Float64Array, Float64Array]":
    """(μ̄ − μ, v̄ − V): how far the per-batch average is from the whole data's statistics, by the
    formula of the module docstring (not by subtracting the two)."""
    stats = [_batch_stats(x, axis) for x in batches]
    m = np.array([_count(x, axis) for x in batches], dtype=np.float64)
    k, total = len(batches), m.sum()
    mu = sum(mi / total * s[0] for mi, s in zip(m, stats))
    c_i = m / (m - 1) if unbiased else np.ones(k)
    c = total / (total - 1) if unbiased else 1.0
    gap_mean = sum((1.0 / k - mi / total) * (s[0] - mu) for mi, s in zip(m, stats))
    gap_var = (sum((ci / k - c * mi / total) * s[1] for ci, mi, s in zip(c_i, m, stats))
               - c * sum(mi / total * (s[0] - mu) ** 2 for mi, s in zip(m, stats)))
    return gap_mean, gap_var


def batch_norm_train_plain(x: "ArrayLike", *, eps: float,
                           axis: int = 1) -> "tuple[Float64Array, Float64Array, Float64Array]":
    """Training forward without affine parameters (gamma 1, beta 0): (x̂, batch mean, biased batch var)."""
    c = np.asarray(x).shape[axis]
    return batch_norm_train(x, np.ones(c), np.zeros(c), eps=eps, axis=axis)


def batch_norm_backward_plain(x: "ArrayLike", dy: "ArrayLike", *, eps: float, axis: int = 1) -> "Float64Array":
    """dx of the training forward without affine parameters; there are no parameter gradients."""
    c = np.asarray(x).shape[axis]
    return batch_norm_backward(x, np.ones(c), dy, eps=eps, axis=axis)[0]


def batch_norm_untracked(x: "ArrayLike", gamma: "ArrayLike", beta: "ArrayLike", *, eps: float,
                         axis: int = 1) -> "Float64Array":
    """The output of a layer without running statistics, in training and in inference mode alike:
    normalized by the batch's own statistics (and no state changes)."""
    return batch_norm_train(x, gamma, beta, eps=eps, axis=axis)[0]


def batch_norm_train_features(x: "ArrayLike", gamma: "ArrayLike", beta: "ArrayLike", *, eps: float,
                              feature_axes: "tuple[int, ...]") -> "tuple[Float64Array, Float64Array, Float64Array]":
    """Training forward with several feature axes: (y, mean, biased var), the statistics and gamma, beta
    of the features' shape (the axes in increasing order), reduced over every other axis."""
    x = np.asarray(x, dtype=np.float64)
    feat = sorted(a % x.ndim for a in feature_axes)
    shape = tuple(x.shape[a] for a in feat)
    moved = np.moveaxis(x, feat, range(x.ndim - len(feat), x.ndim))    # features last, in order
    flat = moved.reshape(-1, int(np.prod(shape)))
    y, mean, var = batch_norm_train(flat, np.ravel(gamma), np.ravel(beta), eps=eps, axis=1)
    y = np.moveaxis(y.reshape(moved.shape), range(x.ndim - len(feat), x.ndim), feat)
    return y, mean.reshape(shape), var.reshape(shape)
