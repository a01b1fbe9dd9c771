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
    if training and m < 2 and unbiased_running:   # as PyTorch: the unbiased variance of one value is undefined
        raise ValueError(f"expected more than 1 value per channel when training, got {m}")
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


def _backward(x, gamma, beta, dy, *, eps, flip=False):
    """Training-mode gradients of sum(y·dy), written out as a user would."""
    red = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    mean = x.mean(axis=red, keepdims=True)
    inv = 1 / np.sqrt(((x - mean) ** 2).mean(axis=red, keepdims=True) + eps)
    x_hat = (x - mean) * inv
    dbeta = dy.sum(axis=red)
    dgamma = (dy * x_hat).sum(axis=red)
    dx = gamma.reshape(shape) * inv / m * (m * dy - dbeta.reshape(shape) - x_hat * dgamma.reshape(shape))
    return dx.astype(x.dtype), (-dgamma if flip else dgamma).astype(x.dtype), dbeta.astype(x.dtype)


def correct_with_backward(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
    return correct(x, gamma, beta, running_mean, running_var, training=training, momentum=momentum, eps=eps)


correct_with_backward.backward = _backward


def dgamma_sign_flipped(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
    return correct(x, gamma, beta, running_mean, running_var, training=training, momentum=momentum, eps=eps)


dgamma_sign_flipped.backward = lambda x, gamma, beta, dy, *, eps: _backward(x, gamma, beta, dy, eps=eps, flip=True)


def keras_style(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
    """Keras' conventions: channels last, momentum weighs the old value, a biased running variance."""
    y, mean, var = _bn(np.moveaxis(x, -1, 1), gamma, beta, running_mean, running_var, training=training,
                       momentum=1 - momentum, eps=eps, unbiased_running=False)
    return np.moveaxis(y, 1, -1), mean, var


keras_style.conventions = "keras"


def keras_style_declared_torch(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
    """Keras' momentum and biased running variance, channels first, wrongly declared as PyTorch's."""
    return _bn(x, gamma, beta, running_mean, running_var, training=training, momentum=1 - momentum, eps=eps,
               unbiased_running=False)


keras_style_declared_torch.conventions = {"preset": "torch"}


class CorrectAdapter:
    """A duck-typed adapter class (no equiv import): state in NumPy, the correct function and its backward."""

    name, framework, install = "", "numpy", ""
    conventions = "torch"
    dtypes = ("float64", "float32")
    devices = ("cpu",)
    has_gradients = True

    def build(self, momentum, eps):
        self.momentum, c = momentum, self.num_features
        self.state = dict(gamma=np.ones(c), beta=np.zeros(c), running_mean=np.zeros(c), running_var=np.ones(c))

    def set_state(self, gamma, beta, running_mean, running_var):
        self.state = {k: np.array(v, dtype=self.dtype) for k, v in dict(
            gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var).items()}

    def get_state(self):
        return {k: np.array(v, dtype=np.float64) for k, v in self.state.items()}

    def _call(self, x, training):
        s = self.state
        y, s["running_mean"], s["running_var"] = correct(
            np.asarray(x, dtype=self.dtype), s["gamma"], s["beta"], s["running_mean"].copy(),
            s["running_var"].copy(), training=training, momentum=self.momentum, eps=self.eps)
        s["running_mean"], s["running_var"] = (np.asarray(v, dtype=self.dtype)
                                               for v in (s["running_mean"], s["running_var"]))
        return np.array(y, dtype=np.float64)

    def forward_train(self, x):
        return self._call(x, True)

    def forward_infer(self, x):
        return self._call(x, False)

    forward_default = forward_native = forward_train

    def train_step(self, x, dy):
        s = {k: v.copy() for k, v in self.state.items()}
        y = self._call(x, True)
        x, dy = np.asarray(x, dtype=self.dtype), np.asarray(dy, dtype=self.dtype)
        return (y,) + tuple(np.array(g, dtype=np.float64)
                            for g in _backward(x, s["gamma"], s["beta"], dy, eps=self.eps))


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
    "dgamma_sign_flipped": "gradients",
}


def fast_variance_declared(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
    """E[x²] − E[x]², declared as such (Flax's conventions, channels first): excused where Flax's is."""
    return fast_variance(x, gamma, beta, running_mean, running_var, training=training, momentum=momentum, eps=eps)


fast_variance_declared.conventions = {"variance": "fast"}


# Correct implementations written differently: every one must pass the whole suite, in every profile
# (tests/test_planted.py, tests/test_whole_suite.py). Each differs from ``correct`` only in how it
# computes what the oracle computes: the form of the running-statistics update, the variance
# algorithm, the precision and order of the sums, in-place updates, the layout.

def _stats_two_pass(x, red):
    mean = x.mean(axis=red)
    return mean, ((x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))) ** 2).mean(axis=red)


def _channels(x):
    """x as (C, m): each channel's values in one row."""
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def _stats_welford(x, red):
    """Welford's one-pass update, value by value, in the input's dtype."""
    rows = _channels(x)
    mean = np.zeros(rows.shape[0], dtype=x.dtype)
    m2 = np.zeros(rows.shape[0], dtype=x.dtype)
    for k in range(rows.shape[1]):
        delta = rows[:, k] - mean
        mean = mean + delta / x.dtype.type(k + 1)
        m2 = m2 + delta * (rows[:, k] - mean)
    return mean, m2 / x.dtype.type(rows.shape[1])


def _stats_sequential(x, red):
    """Two-pass, each sum taken value after value (a running sum, as a naive loop does), in the input's
    dtype: float32 for float32 input."""
    rows = _channels(x)
    n = x.dtype.type(rows.shape[1])
    mean = np.cumsum(rows, axis=1, dtype=x.dtype)[:, -1] / n
    d = rows - mean[:, None]
    return mean, np.cumsum(d * d, axis=1, dtype=x.dtype)[:, -1] / n


def _stats_pairwise_f32(x, red):
    """Two-pass with NumPy's pairwise sums kept in the input's dtype (float32 accumulators for float32)."""
    rows = _channels(x)
    n = x.dtype.type(rows.shape[1])
    mean = rows.sum(axis=1, dtype=x.dtype) / n
    d = rows - mean[:, None]
    return mean, (d * d).sum(axis=1, dtype=x.dtype) / n


def _update_blend(old, new, w):
    return (1 - w) * old + w * new


def _update_lerp(old, new, w):
    return old + w * (new - old)


def _update_assign_sub(old, new, w):
    """Keras 2's form: ``running.assign_sub((running − batch) · (1 − momentum))``, 1 − momentum = w."""
    return old - (old - new) * w


def _update_in_place(old, new, w):
    """The update written into the array the function was given (it is the caller's copy)."""
    old *= 1 - w
    old += w * new
    return old


def _written_differently(stats=_stats_two_pass, update=_update_blend, *, old_weight=False, unbiased=True,
                         channels_last=False, batch_of_one="error"):
    """A correct batch norm: ``stats`` gives the batch mean and biased variance, ``update`` blends the
    running statistics with new-batch weight w (1 − momentum when the momentum weighs the old value).
    A batch of one: an error (as PyTorch) or the oracle's output, beta."""
    def fn(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
        if channels_last:
            x = np.moveaxis(x, -1, 1)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        red = (0,) + tuple(range(2, x.ndim))
        m = x.size // x.shape[1]
        if training:
            if m < 2 and batch_of_one == "error":
                raise ValueError(f"expected more than 1 value per channel when training, got {m}")
            mean, var = stats(x, red)
            w = running_mean.dtype.type(1 - momentum if old_weight else momentum)
            run_var = var * x.dtype.type(m / (m - 1)) if unbiased else var
            running_mean = update(running_mean, mean.astype(running_mean.dtype), w)
            running_var = update(running_var, run_var.astype(running_var.dtype), w)
        else:
            mean, var = running_mean, running_var
        y = gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) \
            + beta.reshape(shape)
        y = y.astype(x.dtype)
        return (np.moveaxis(y, 1, -1) if channels_last else y), running_mean, running_var
    return fn


correct_lerp = _written_differently(update=_update_lerp)
correct_welford = _written_differently(stats=_stats_welford)
correct_sequential = _written_differently(stats=_stats_sequential)
correct_pairwise_f32 = _written_differently(stats=_stats_pairwise_f32)
correct_in_place = _written_differently(update=_update_in_place)
correct_assign_sub_keras = _written_differently(update=_update_assign_sub, old_weight=True, unbiased=False,
                                                channels_last=True, batch_of_one="beta")
correct_assign_sub_keras.conventions = "keras"
correct_torch_last = _written_differently(update=_update_lerp, channels_last=True)
correct_torch_last.conventions = {"preset": "torch", "channel_axis": -1}
correct_flax_last = _written_differently(stats=_stats_welford, old_weight=True, unbiased=False, channels_last=True,
                                         batch_of_one="beta")
correct_flax_last.conventions = {"preset": "flax", "variance": "two-pass"}
correct_mxnet_last = _written_differently(update=_update_in_place, old_weight=True, unbiased=False,
                                          channels_last=True, batch_of_one="beta")
correct_mxnet_last.conventions = {"preset": "mxnet", "channel_axis": -1}

# every correct implementation, and the adapter class: tests/test_planted.py runs each through the suite
CORRECT = ("correct", "correct_with_backward", "CorrectAdapter", "correct_lerp", "correct_welford",
           "correct_sequential", "correct_pairwise_f32", "correct_in_place", "correct_assign_sub_keras",
           "correct_torch_last", "correct_flax_last", "correct_mxnet_last")


def nan_for_a_batch_of_one(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
    """Keras' conventions, but a channel with one value gives NaN (its variance divided by m − 1 = 0)
    where Keras, Flax, MXNet and the oracle give beta."""
    y, mean, var = correct_assign_sub_keras(x, gamma, beta, running_mean, running_var, training=training,
                                            momentum=momentum, eps=eps)
    m = x.size // x.shape[-1]
    return (np.full_like(y, np.nan) if training and m == 1 else y), mean, var


nan_for_a_batch_of_one.conventions = "keras"
PLANTED["nan_for_a_batch_of_one"] = "train_forward"
