"""Paths of the Keras 2 adapter (tf_keras, equiv/adapters/tf_keras2.py): the layer built with
``fused=True`` or ``fused=False`` instead of the default ``fused=None``.

``fused=True`` is TensorFlow's FusedBatchNormV3 kernel, whose running variance is the unbiased one
(tensorflow/core/kernels/fused_batch_norm_op.cc, the CPU functor: the batch variance times
``rest_size_adjust`` = m/(m − 1) in the moving average); the layer refuses a float64 compute dtype
(ValueError, tf_keras/src/layers/normalization/batch_normalization.py:296-300, 2.21.0) and an input
that is not 4-D or 5-D (ValueError at the first call, :358-363). On 2-D (N, C) data the path builds the
layer for 4-D input and calls it on (N, 1, 1, C), what a user does to reach the fused kernel there: the
same statistics per channel. ``fused=False`` is the ``tf.nn.moments`` path at every rank and dtype.
"""
from dataclasses import replace

import tensorflow as tf

from equiv.backends.tf import tape_gradients


def unfused(base):
    class Unfused(base):
        fused = False
    return Unfused


def fused(base):
    class Fused(base):
        fused, layer_ndim = True, 4
        dtypes = tuple(d for d in base.dtypes if d != "float64")
        conventions = replace(base.conventions, running_var="unbiased")

        def _as_4d(self, t):
            return tf.reshape(t, (-1, 1, 1, self.num_features)) if self.ndim == 2 else t

        def _back(self, t):
            return tf.reshape(t, (-1, self.num_features)) if self.ndim == 2 and t is not None else t

        def _layer_call(self, xt, **kw):
            if len(xt.shape) != 2:   # forward_native's own layout, as given
                return self.layer(xt, **kw)
            return self._back(self.layer(self._as_4d(xt), **kw))

        def _gradients(self, x, dy):
            y, dx, dgamma, dbeta = tape_gradients(self.layer, self._as_4d(x), self._as_4d(dy))
            return self._back(y), self._back(dx), dgamma, dbeta
    return Fused
