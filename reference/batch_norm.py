"""Batch normalization, written as the math (Ioffe & Szegedy 2015).

For each channel c, over the m = N·H·W values x_i of that channel in the batch:

    mu      = (1/m) Σ x_i
    var     = (1/m) Σ (x_i − mu)²             (biased: divide by m; two-pass)
    x̂_i     = (x_i − mu) / sqrt(var + eps)    (eps inside the square root)
    y_i     = gamma · x̂_i + beta

Inference replaces (mu, var) by the running statistics.

Every Σ over a channel is taken with the channel's values contiguous (``channel_sum``), so
NumPy adds them pairwise: error ≲ u·log2(m) relative, not the u·m of adding the batch's
rows one after another, which on data of one sign (the pixels of an image) is what a
strided reduction over (N, H, W) gives (3e-13 relative on 73,728 values; the frameworks'
accurate reductions then look wrong against the oracle).
"""
import numpy as np

# true for a type checker only, as typing.TYPE_CHECKING: the oracle imports NumPy alone (tests/test_oracle.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    Float64Array = NDArray[np.float64]


def _channel_view(x: "ArrayLike", axis: int) -> "tuple[Float64Array, tuple[int, ...], tuple[int, ...]]":
    """x as float64, the axes to reduce over, and the shape a per-channel vector broadcasts to."""
    x = np.asarray(x, dtype=np.float64)
    axis = axis % x.ndim
    reduce_axes = tuple(i for i in range(x.ndim) if i != axis)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return x, reduce_axes, tuple(shape)


def channel_sum(a: "Float64Array", reduce_axes: "tuple[int, ...]", shape: "tuple[int, ...]") -> "Float64Array":
    """Σ of ``a`` over ``reduce_axes`` per channel, as an array of ``shape`` (the channel's values
    made contiguous first: NumPy's pairwise summation then applies to all of them)."""
    axis = next(i for i in range(a.ndim) if i not in reduce_axes)
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).sum(axis=1).reshape(shape)


def _per_channel(v: "ArrayLike", shape: "tuple[int, ...]") -> "Float64Array":
    return np.asarray(v, dtype=np.float64).reshape(shape)


def batch_norm_train(x: "ArrayLike", gamma: "ArrayLike", beta: "ArrayLike", *, eps: float,
                     axis: int = 1) -> "tuple[Float64Array, Float64Array, Float64Array]":
    """Training-mode forward. Returns (y, batch_mean, batch_var); batch_var is biased (÷m)."""
    x, red, shape = _channel_view(x, axis)
    m = x.size // x.shape[axis]
    mean = channel_sum(x, red, shape) / m
    var = channel_sum((x - mean) ** 2, red, shape) / m
    x_hat = (x - mean) / np.sqrt(var + eps)
    y = _per_channel(gamma, shape) * x_hat + _per_channel(beta, shape)
    return y, mean.reshape(-1), var.reshape(-1)


def batch_norm_infer(x: "ArrayLike", gamma: "ArrayLike", beta: "ArrayLike", running_mean: "ArrayLike",
                     running_var: "ArrayLike", *, eps: float, axis: int = 1) -> "Float64Array":
    """Inference-mode forward from given running statistics."""
    x, _, shape = _channel_view(x, axis)
    x_hat = (x - _per_channel(running_mean, shape)) / np.sqrt(_per_channel(running_var, shape) + eps)
    return _per_channel(gamma, shape) * x_hat + _per_channel(beta, shape)


def update_running_stats(running_mean: "ArrayLike", running_var: "ArrayLike", batch_mean: "ArrayLike",
                         batch_var: "ArrayLike", count: int, *, new_batch_weight: float,
                         unbiased: bool) -> "tuple[Float64Array, Float64Array]":
    """One running-statistics update: new = (1 − w)·old + w·batch.

    ``new_batch_weight`` w is the weight of the new batch: PyTorch's ``momentum``,
    ``1 − momentum`` in Keras, Flax and MXNet. ``batch_var`` is the biased batch
    variance; ``unbiased=True`` multiplies it by count/(count − 1) first (PyTorch),
    where ``count`` is the number of values per channel (N·H·W).
    """
    w = float(new_batch_weight)
    batch_var = np.asarray(batch_var, dtype=np.float64)
    if unbiased:
        if count < 2:
            raise ValueError("the unbiased running variance needs at least 2 values per channel")
        batch_var = batch_var * (count / (count - 1))
    mean = (1.0 - w) * np.asarray(running_mean, dtype=np.float64) + w * np.asarray(batch_mean, dtype=np.float64)
    var = (1.0 - w) * np.asarray(running_var, dtype=np.float64) + w * batch_var
    return mean, var


def cumulative_weight(num_batches_tracked: int) -> float:
    """New-batch weight of PyTorch's ``momentum=None`` (cumulative moving average).

    The k-th update (k = 1, 2, …, counted after the increment) weighs the new batch
    by 1/k, so after k updates the running statistics are the plain average of the k
    batch statistics and the initial values are forgotten at the first update.
    Use with ``update_running_stats(..., new_batch_weight=cumulative_weight(k))``.
    """
    if num_batches_tracked < 1:
        raise ValueError("num_batches_tracked counts updates and starts at 1")
    return 1.0 / num_batches_tracked


def batch_norm_backward(x: "ArrayLike", gamma: "ArrayLike", dy: "ArrayLike", *, eps: float,
                        axis: int = 1) -> "tuple[Float64Array, Float64Array, Float64Array]":
    """Analytic gradients of the training-mode forward for upstream gradient dy.

        dbeta  = Σ dy
        dgamma = Σ dy · x̂
        dx     = gamma / sqrt(var + eps) · (dy − mean(dy) − x̂ · mean(dy · x̂))

    Returns (dx, dgamma, dbeta).
    """
    x, red, shape = _channel_view(x, axis)
    dy = np.asarray(dy, dtype=np.float64)
    m = x.size // x.shape[axis]
    mean = channel_sum(x, red, shape) / m
    var = channel_sum((x - mean) ** 2, red, shape) / m
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    dbeta = channel_sum(dy, red, shape)
    dgamma = channel_sum(dy * x_hat, red, shape)
    dx = _per_channel(gamma, shape) * inv_std * (dy - dbeta / m - x_hat * (dgamma / m))
    return dx, dgamma.reshape(-1), dbeta.reshape(-1)
