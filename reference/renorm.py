"""Batch renormalization (Ioffe 2017), written as the math.

Per channel, with the batch mean μB and σB = sqrt(var_B + eps) (biased batch variance, eps inside),
and moving averages μ, σ of the mean and of σB (the corrections use them before this step's update):

    r = clip(σB/σ, rmin, rmax)        d = clip((μB − μ)/σ, −dmax, dmax)
    y = gamma · ((x − μB)/σB · r + d) + beta

r and d are constants of the step (no gradient flows through them). The paper clips r to
[1/rmax, rmax]; a bound left out (None) does not clip. Then μ ← μ + w·(μB − μ), σ ← σ + w·(σB − σ)
with the new-batch weight w. With r = 1 and d = 0 (rmax = 1, dmax = 0) it is batch normalization;
inference is batch normalization with (μ, σ² − eps).
"""
import numpy as np

from reference.batch_norm import _channel_view, _per_channel, batch_norm_train

TYPE_CHECKING = False
if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    Float64Array = NDArray[np.float64]


def batch_renorm_train(x: "ArrayLike", gamma: "ArrayLike", beta: "ArrayLike", mean: "ArrayLike", std: "ArrayLike",
                       *, eps: float, rmin: "float | None" = None, rmax: "float | None" = None,
                       dmax: "float | None" = None, axis: int = 1
                       ) -> "tuple[Float64Array, Float64Array, Float64Array, Float64Array, Float64Array]":
    """Training-mode forward from the moving averages ``mean`` and ``std`` (μ, σ). Returns
    (y, r, d, batch_mean, batch_std): batch_std is σB = sqrt(biased var + eps)."""
    x, _, shape = _channel_view(x, axis)
    c = x.shape[axis]
    x_hat, batch_mean, batch_var = batch_norm_train(x, np.ones(c), np.zeros(c), eps=eps, axis=axis)
    batch_std = np.sqrt(batch_var + eps)
    std = np.asarray(std, dtype=np.float64)
    r = batch_std / std
    d = (batch_mean - np.asarray(mean, dtype=np.float64)) / std
    r = np.clip(r, -np.inf if rmin is None else rmin, np.inf if rmax is None else rmax)
    d = np.clip(d, -np.inf if dmax is None else -dmax, np.inf if dmax is None else dmax)
    gamma, beta = (_per_channel(np.broadcast_to(v, (c,)), shape) for v in (gamma, beta))
    y = gamma * (x_hat * _per_channel(r, shape) + _per_channel(d, shape)) + beta
    return y, r, d, batch_mean, batch_std


def update_renorm_averages(mean: "ArrayLike", std: "ArrayLike", batch_mean: "ArrayLike", batch_std: "ArrayLike", *,
                           new_batch_weight: float) -> "tuple[Float64Array, Float64Array]":
    """The moving averages (μ, σ) after one step: each moves by w toward the batch's."""
    w = new_batch_weight
    return ((1 - w) * np.asarray(mean, dtype=np.float64) + w * np.asarray(batch_mean, dtype=np.float64),
            (1 - w) * np.asarray(std, dtype=np.float64) + w * np.asarray(batch_std, dtype=np.float64))
