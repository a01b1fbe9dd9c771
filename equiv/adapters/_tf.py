"""TensorFlow conversions shared by the tf adapters (a backend helper, not an adapter).

Canonical data is channel-first; TensorFlow layers are channel-last: (N, C, H, W) goes in
as (N, H, W, C) and comes back transposed. (N, C) needs no change.
"""
import numpy as np
import tensorflow as tf

from equiv.core import Adapter

DTYPES = {"float64": tf.float64, "float32": tf.float32,
          "float16": tf.float16, "bfloat16": tf.bfloat16}


def tensor(a, dtype):
    """A tf tensor of ``dtype`` (the canonical data are already rounded to it: the cast is exact)."""
    return tf.cast(tf.constant(np.asarray(a, dtype=np.float64)), DTYPES[dtype])


def to_nhwc(a):
    a = np.asarray(a, dtype=np.float64)
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def to_nchw(a):
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def numpy(t):
    """Float64 NumPy copy of a tensor or variable (bfloat16 included)."""
    return np.asarray(t).astype(np.float64)


def native_shape(ndim, channels):
    """The input shape a channels-last layer is built for."""
    return (None, channels) if ndim == 2 else (None, None, None, channels)


class KerasLayerAdapter(Adapter):
    """The protocol for a Keras layer with gamma, beta, moving_mean and moving_variance
    (Keras' own BatchNormalization and the book's layer alike); ``build`` creates
    ``self.layer``."""

    def _vars(self):
        l = self.layer
        return dict(gamma=l.gamma, beta=l.beta, running_mean=l.moving_mean, running_var=l.moving_variance)

    def set_state(self, gamma, beta, running_mean, running_var):
        values = dict(gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
        for k, v in self._vars().items():
            v.assign(tensor(values[k], self.dtype))

    def get_state(self):
        return {k: numpy(v) for k, v in self._vars().items()}

    # What runs the layer: a call with the mode as given, and one training step with its tape. An
    # execution path (equiv.paths.tf_paths) replaces these two, nothing else.
    def _layer_call(self, xt, **kw):
        return self.layer(xt, **kw)

    def _grad_step(self, xt, dyt):
        return grad_step(self.layer, xt, dyt)

    def _call(self, x, **kw):
        return to_nchw(numpy(self._layer_call(tensor(to_nhwc(x), self.dtype), **kw)))

    def forward_train(self, x):
        return self._call(x, training=True)

    def forward_infer(self, x):
        return self._call(x, training=False)

    def forward_default(self, x):
        return self._call(x)

    def forward_native(self, x):
        return numpy(self._layer_call(tensor(x, self.dtype), training=True))

    def train_step(self, x, dy):
        y, dx, dgamma, dbeta = self._grad_step(tensor(to_nhwc(x), self.dtype), tensor(to_nhwc(dy), self.dtype))
        return to_nchw(numpy(y)), to_nchw(numpy(dx)), numpy(dgamma), numpy(dbeta)


def grad_step(layer, xt, dyt):
    """Training forward of ``layer`` on xt, then the backward of sum(y·dy) (dy: the upstream gradient
    of y): (y, dx, dgamma, dbeta), the running statistics updated as in a training step."""
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=True)
    dx, dgamma, dbeta = tape.gradient(y, [xt, layer.gamma, layer.beta], output_gradients=dyt)
    return y, dx, dgamma, dbeta
