"""tf_keras: Keras 2's ``tf_keras.layers.BatchNormalization`` (the ``tf_keras`` package, Keras 2 for
TensorFlow ≥ 2.16; with ``TF_USE_LEGACY_KERAS=1`` TensorFlow 2.21's ``tf.keras`` is this package,
measured), channels-last, on TensorFlow.

Keras 2's ``momentum`` weighs the old value, as Keras 3's: new-batch weight w is momentum 1 − w
(``Conventions.momentum_for``; the layer weighs the batch by 1 − (1 − w), so ``self.new_batch_weight``
reports that weight; its unfused update rounds that weight to float32 even in a float64 layer, the
divergence tf-keras2-momentum-float32). The mode is the ``training`` argument; a plain ``layer(x)`` is inference.

``fused`` picks the kernel (tf_keras/src/layers/normalization/batch_normalization.py, 2.21.0):
``fused=None`` (the default, this adapter) keeps None in the constructor when the fused kernel can be
used (:230-237; not for a float64 compute dtype, :296-300), then ``build`` sets it to ``rank in (4, 5)``
(:355-357): measured, 4-D float32, float16 and bfloat16 input runs ``tf.compat.v1.nn.fused_batch_norm``
(FusedBatchNormV3, whose running variance is the unbiased one: the divergence
tf-keras2-default-fused-unbiased-variance), 2-D input and float64 the unfused ``tf.nn.moments`` path
(the biased running variance). ``fused=True`` and ``fused=False`` are the paths ``tf_keras+fused`` and
``tf_keras+unfused`` (equiv/paths/tf_keras_paths.py). The layer's dtype is its ``dtype`` argument; float16
and bfloat16 layers keep float32 variables (``_param_dtype``, :318-324).
"""
import tensorflow as tf
import tf_keras

from equiv.backends.keras import native_shape
from equiv.backends.tf import KerasLayerAdapter
from equiv.conventions import DECLARED


class TFKeras2(KerasLayerAdapter):
    name, framework = "tf_keras", "tf_keras"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")
    fused = None           # the constructor's ``fused`` (the paths set True or False)
    layer_ndim = None      # the rank the layer is built for (None: the adapter's; the fused path: 4)

    def build(self, momentum, eps):
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        self.layer = tf_keras.layers.BatchNormalization(momentum=momentum, epsilon=eps, dtype=self.dtype,
                                                        fused=self.fused)
        self.layer.build(native_shape(self.layer_ndim or self.ndim, self.num_features))

    def set_state(self, gamma, beta, running_mean, running_var):
        # a float16 or bfloat16 layer keeps float32 variables: the values, rounded to the layer's dtype, cast
        values = dict(gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
        for k, v in self._vars().items():
            v.assign(tf.cast(self._tensor(values[k]), v.dtype))

