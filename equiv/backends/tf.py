"""TensorFlow's backend, its part of the Keras adapters: tensors and the gradient tape. The rest
of the protocol is backend-neutral (equiv/backends/keras.py); the Keras
backend paths (equiv/paths/keras_paths.py) replace just these two pieces.
"""
import numpy as np
import tensorflow as tf

from equiv.backends import keras as _keras
from equiv.backends.keras import native_shape, to_nchw, to_nhwc  # noqa: F401 (re-exported)


def setup():
    """Correctness tests compare against float64: no TF32 in matrix units on CUDA (process-wide; the
    BN-LeNet calls it as it builds a net; the adapters run on the CPU, where it changes nothing)."""
    tf.config.experimental.enable_tensor_float_32_execution(False)


DTYPES = {"float64": tf.float64, "float32": tf.float32,
          "float16": tf.float16, "bfloat16": tf.bfloat16}


def tensor(a, dtype):
    """A tf tensor of ``dtype`` (the canonical data are already rounded to it: the cast is exact)."""
    return tf.cast(tf.constant(np.asarray(a, dtype=np.float64)), DTYPES[dtype])


def tape_gradients(layer, x, dy):
    """(y, dx, dgamma, dbeta) of ``layer(x, training=True)`` and the backward of sum(y·dy): dy is
    the upstream gradient of y. A layer without gamma or beta (None: Keras' scale or center False) has
    no such gradient (None)."""
    params = [p for p in (layer.gamma, layer.beta) if p is not None]
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    dx, *grads = tape.gradient(y, [x, *params], output_gradients=dy)
    grads = iter(grads)
    return (y, dx, *(None if p is None else next(grads) for p in (layer.gamma, layer.beta)))


class KerasLayerAdapter(_keras.KerasLayerAdapter):
    """A Keras layer on TensorFlow (the book's layer, whose ``call`` is a tf.function)."""

    def _tensor(self, a):
        return tensor(a, self.dtype)

    def _gradients(self, x, dy):
        return tape_gradients(self.layer, x, dy)
