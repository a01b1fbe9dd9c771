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
from equiv.adapters._tf import native_shape, numpy, tensor, to_nchw, to_nhwc
from equiv.conventions import DECLARED
from equiv.core import Adapter


class KerasBuiltin(Adapter):
    name, framework, install = "tf.keras", "keras", TF
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")

    def build(self, momentum, eps):
        # Keras weighs the batch by 1 − momentum, which for a tiny w is not exactly w: report
        # the weight the layer really applies (as Keras computes it), not the one asked for.
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        self.layer = tf.keras.layers.BatchNormalization(momentum=momentum, epsilon=eps, dtype=self.dtype)
        self.layer.build(native_shape(self.ndim, self.num_features))

    def _vars(self):
        l = self.layer
        return dict(gamma=l.gamma, beta=l.beta, running_mean=l.moving_mean, running_var=l.moving_variance)

    def set_state(self, gamma, beta, running_mean, running_var):
        values = dict(gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
        for k, v in self._vars().items():
            v.assign(tensor(values[k], self.dtype))

    def get_state(self):
        return {k: numpy(v) for k, v in self._vars().items()}

    def _call(self, x, **kw):
        return to_nchw(numpy(self.layer(tensor(to_nhwc(x), self.dtype), **kw)))

    def forward_train(self, x):
        return self._call(x, training=True)

    def forward_infer(self, x):
        return self._call(x, training=False)

    def forward_default(self, x):
        return self._call(x)

    def forward_native(self, x):
        return numpy(self.layer(tensor(x, self.dtype), training=True))

    def train_step(self, x, dy):
        l = self.layer
        xt = tensor(to_nhwc(x), self.dtype)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = l(xt, training=True)
        # backward of sum(y·dy): dy is the upstream gradient of y
        dx, dgamma, dbeta = tape.gradient(y, [xt, l.gamma, l.beta],
                                          output_gradients=tensor(to_nhwc(dy), self.dtype))
        return to_nchw(numpy(y)), to_nchw(numpy(dx)), numpy(dgamma), numpy(dbeta)
