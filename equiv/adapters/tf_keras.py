"""tf.keras: ``keras.layers.BatchNormalization`` (Keras 3, ``tf.keras`` in TensorFlow ≥ 2.16) on
the TensorFlow backend, channels-last.

Keras' ``momentum`` weighs the old value: new-batch weight w is momentum 1 − w (the
translation is ``Conventions.momentum_for``). The layer then weighs the batch by
1 − (1 − w), not always exactly w (w = 2.4e-10 comes back 4.6e-7 off, relatively: one
float64 ulp of the running mean), so ``self.new_batch_weight`` reports that weight.
The dtype is the layer's ``dtype`` argument, a Keras dtype policy: ``dtype="float64"``
makes float64 variables and computation; ``"float16"`` and ``"bfloat16"`` store the
variables and the output in that dtype, but the layer computes in float32 (``call``
casts its input to ``result_type(x, float32)``). The mode is the ``training`` argument;
a plain ``layer(x)`` is inference. Built layers are reused across adapters (``LayerPool``, as
tf.scratch does): a layer from the pool gets the fresh layer's values back and the adapter's
momentum and epsilon as the constructor stores them.

TensorFlow is the backend's part only: the gradient tape (equiv/backends/tf.py); tensors are
made with ``keras.ops`` (equiv/backends/keras.py, ``backend = "tensorflow"``). The module imports
Keras alone, so that the Keras backend paths
(``tf.keras+jax``, ``+torch``, ``+numpy``: equiv/paths/keras_paths.py) wrap this adapter in a
process without TensorFlow, replacing ``_gradients``.

Layer options (equiv.options): ``affine`` False, "no_scale", "no_center" (``center``/``scale`` False:
the layer makes no such variable, batch_normalization.py:242-261, and applies 1 and 0), and
``synchronized=True`` (TensorFlow backend only, batch_normalization.py:184-188). The paths take none.
Measured beyond the options (tests/test_options_keras.py): a list ``axis`` is refused (``int(axis)``,
:182), ``renorm=True`` is taken (:207-231) and is not batch normalization in training, and the mixed
dtype policies keep float32 variables and compute in float32 (:345-348), rounding the output to float16
or bfloat16.
"""
import keras
import numpy as np

from equiv.backends.keras import KerasLayerAdapter, LayerPool, native_shape, to_nchw, to_nhwc
from equiv.conventions import DECLARED
from equiv.core import Unsupported


class KerasBuiltin(KerasLayerAdapter):
    name, framework = "tf.keras", "keras"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")
    supported_options = {"affine": (False, "no_scale", "no_center"), "synchronized": (True,)}

    def build(self, momentum, eps):
        if keras.backend.backend() != self.backend:
            raise Unsupported(f"{self.name} runs on the Keras backend {self.backend!r}; this process has "
                              f"{keras.backend.backend()!r} (KERAS_BACKEND)")
        # Keras weighs the batch by 1 − momentum, which for a tiny w is not exactly w: report
        # the weight the layer really applies (as Keras computes it), not the one asked for.
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        # A built layer from the pool (as tf.scratch: building costs more than the calls), given the
        # setting as the constructor keeps it: ``self.momentum = float(momentum)``, ``self.epsilon =
        # float(epsilon)`` (keras/src/layers/normalization/batch_normalization.py:191-192).
        key = (self.backend, self.dtype, self.ndim, self.num_features, tuple(sorted(self.options.items())))
        self.layer = _pool.take(self, key, self._new_layer)
        self.layer.momentum, self.layer.epsilon = float(momentum), float(eps)

    def _new_layer(self):
        affine = self.options.get("affine", True)
        layer = keras.layers.BatchNormalization(dtype=self.dtype, center=affine in (True, "no_scale"),
                                                scale=affine in (True, "no_center"),
                                                synchronized=self.options.get("synchronized", False))
        layer.build(native_shape(self.ndim, self.num_features))
        return layer

    def _vars(self):   # without center or scale the layer has no beta or gamma (None)
        return {k: v for k, v in super()._vars().items() if v is not None}

    def get_state(self):
        c = self.num_features   # gamma 1 and beta 0 where the layer has none, as it applies them
        return {"gamma": np.ones(c), "beta": np.zeros(c), **{k: self._numpy(v) for k, v in self._vars().items()}}

    def train_step(self, x, dy):
        y, dx, dgamma, dbeta = self._gradients(self._tensor(to_nhwc(x)), self._tensor(to_nhwc(dy)))
        grad = (lambda g: None if g is None else self._numpy(g))   # noqa: E731
        return to_nchw(self._numpy(y)), to_nchw(self._numpy(dx)), grad(dgamma), grad(dbeta)

    def _gradients(self, x, dy):
        from equiv.backends.tf import tape_gradients  # TensorFlow, on its backend only
        return tape_gradients(self.layer, x, dy)


_pool = LayerPool()
