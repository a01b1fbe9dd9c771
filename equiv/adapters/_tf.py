"""TensorFlow's part of the Keras adapters (a backend helper, not an adapter): tensors and the
gradient tape. The rest of the protocol is backend-neutral (equiv/adapters/_keras.py); the Keras
backend paths (equiv/paths/keras_paths.py) replace just these two pieces.
"""
import numpy as np
import tensorflow as tf

from equiv.adapters import _keras
from equiv.adapters._keras import native_shape, to_nchw, to_nhwc  # noqa: F401 (re-exported)

DTYPES = {"float64": tf.float64, "float32": tf.float32,
          "float16": tf.float16, "bfloat16": tf.bfloat16}


def tensor(a, dtype):
    """A tf tensor of ``dtype`` (the canonical data are already rounded to it: the cast is exact)."""
    return tf.cast(tf.constant(np.asarray(a, dtype=np.float64)), DTYPES[dtype])


def tape_gradients(layer, x, dy):
    """(y, dx, dgamma, dbeta) of ``layer(x, training=True)`` and the backward of sum(y·dy): dy is
    the upstream gradient of y."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    dx, dgamma, dbeta = tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=dy)
    return y, dx, dgamma, dbeta


class KerasLayerAdapter(_keras.KerasLayerAdapter):
    """A Keras layer on TensorFlow (the book's layer, whose ``call`` is a tf.function)."""

    def _tensor(self, a):
        return tensor(a, self.dtype)

    def _gradients(self, x, dy):
        return tape_gradients(self.layer, x, dy)
