"""TensorFlow conversions shared by the tf adapters (a backend helper, not an adapter).

Canonical data is channel-first; TensorFlow layers are channel-last: (N, C, H, W) goes in
as (N, H, W, C) and comes back transposed. (N, C) needs no change.
"""
import numpy as np
import tensorflow as tf

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
