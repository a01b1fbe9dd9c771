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
        return (y,) + tuple(np.array(g, dtype=np.float64) for g in _backward(x, s["gamma"], s["beta"], dy, eps=self.eps))


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
