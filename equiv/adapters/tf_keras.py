"""tf.keras: ``tf.keras.layers.BatchNormalization`` (Keras 3 in TensorFlow ≥ 2.16), channels-last.

Keras' ``momentum`` weighs the old value: new-batch weight w is momentum 1 − w (the
translation is ``Conventions.momentum_for``). The layer then weighs the batch by
1 − (1 − w), not always exactly w (w = 2.4e-10 comes back 4.6e-7 off, relatively: one
float64 ulp of the running mean), so ``self.new_batch_weight`` reports that weight.
The dtype is the layer's ``dtype`` argument, a Keras dtype policy: ``dtype="float64"``
makes float64 variables and computation; ``"float16"`` and ``"bfloat16"`` store the
variables and the output in that dtype, but the layer computes in float32 (``call``
casts its input to ``result_type(x, float32)``). The mode is the ``training`` argument;
a plain ``layer(x)`` is inference.
"""
import tensorflow as tf

from equiv.adapters import TF
from equiv.adapters._tf import KerasLayerAdapter, native_shape
from equiv.conventions import DECLARED

class KerasBuiltin(KerasLayerAdapter):
    name, framework, install = "tf.keras", "keras", TF
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")

    def build(self, momentum, eps):
        # Keras weighs the batch by 1 − momentum, which for a tiny w is not exactly w: report
        # the weight the layer really applies (as Keras computes it), not the one asked for.
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        self.layer = tf.keras.layers.BatchNormalization(momentum=momentum, epsilon=eps, dtype=self.dtype)
        self.layer.build(native_shape(self.ndim, self.num_features))
