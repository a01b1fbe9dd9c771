"""NumPy batch norms with PyTorch semantics, one right and several with a planted bug.

They are external implementations (``--adapters tests.planted:correct``) and the
mutation tests' subjects: each bug must be caught by the property named beside it.
"""
import numpy as np


def _bn(x, gamma, beta, running_mean, running_var, *, training, momentum, eps,
        var_fn=None, eps_inside=True, flip_momentum=False, unbiased_running=True,
        unbiased_normalize=False, infer_with_batch=False):
    red = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    if training or infer_with_batch:
        mean = x.mean(axis=red)
        var = var_fn(x, red) if var_fn else ((x - mean.reshape(shape)) ** 2).mean(axis=red)
        norm_var = var * m / (m - 1) if unbiased_normalize else var
        run_var = var * m / (m - 1) if unbiased_running else var
        if training:
            w = 1 - momentum if flip_momentum else momentum
            running_mean = (1 - w) * running_mean + w * mean
            running_var = (1 - w) * running_var + w * run_var
    else:
        mean, norm_var = running_mean, running_var
    denom = np.sqrt(norm_var + eps) if eps_inside else np.sqrt(norm_var) + eps
    y = gamma.reshape(shape) * (x - mean.reshape(shape)) / denom.reshape(shape) + beta.reshape(shape)
    return y.astype(x.dtype), running_mean, running_var


def correct(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
    return _bn(x, gamma, beta, running_mean, running_var, training=training, momentum=momentum, eps=eps)


def _planted(**bug):
    def fn(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
        return _bn(x, gamma, beta, running_mean, running_var, training=training, momentum=momentum,
                   eps=eps, **bug)
    return fn


def _fast_var(x, red):
    return (x * x).mean(axis=red) - x.mean(axis=red) ** 2


eps_outside_sqrt = _planted(eps_inside=False)
flipped_momentum = _planted(flip_momentum=True)
biased_running_var = _planted(unbiased_running=False)
unbiased_normalization = _planted(unbiased_normalize=True)
inference_uses_batch_stats = _planted(infer_with_batch=True)
fast_variance = _planted(var_fn=_fast_var)

# bug -> the property that must catch it
PLANTED = {
    "eps_outside_sqrt": "train_forward",
    "flipped_momentum": "running_stats",
    "biased_running_var": "batch_stats",
    "unbiased_normalization": "output_moments",
    "inference_uses_batch_stats": "infer_forward",
    "fast_variance": "train_forward",
}
