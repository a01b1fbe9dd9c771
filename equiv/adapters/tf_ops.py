"""TensorFlow's ops as a user assembles batch norm from them, channels-last, state in tensors.

- ``tf.nn.moments``: ``tf.nn.moments(x, axes=all but the last)`` (the batch mean and the *biased*
  variance, nn_impl.py:1268-1280) into ``tf.nn.batch_normalization`` (x·rsqrt(var + eps)·gamma +
  (beta − mean·rsqrt(var + eps)·gamma), :1491-1497). The running statistics are the moving average
  as ``tf.train.ExponentialMovingAverage`` documents and computes it, ``old −= (1 − decay)·(old − batch)``
  (moving_averages.py:317, :93), in the state's dtype: ``decay`` weighs the old value and has no default.
- ``tf.nn.weighted_moments``: the same with ``tf.nn.weighted_moments(x, axes, w)``, w one weight per
  example, all ones (:1367-1390). Unequal weights are frequency weights: mean Σw·x/Σw, variance
  Σw·(x − mean)²/Σw (still biased: ÷Σw, never Σw − 1); w = k counts the example k times.
- ``tf.fused_batch_norm``: ``tf.compat.v1.nn.fused_batch_norm`` (:1500-1601), the kernel
  FusedBatchNormV3; ``exponential_avg_factor`` weighs the new batch (default 1.0: the running
  statistics become the batch's), the running variance is *unbiased* (the kernel's Bessel factor,
  fused_batch_norm_op.cc:179-216 at 057091d; oneDNN's kernel, on by default: ``adjust_factor`` in
  mkl_fused_batch_norm_op.cc), default eps 1e-3 (nn_impl.py:1508), no eps floor on the CPU. Input of 4
  or 5 dimensions only (nn_impl.py:1521; 2-D: "input must be 4-dimensional"): an (N, C) batch goes in
  as (N, 1, 1, C), as users reshape it. float32, float16 and bfloat16 input (no float64 kernel); scale,
  offset and statistics float32.
- ``tf.raw.FusedBatchNormV3``: ``tf.raw_ops.FusedBatchNormV3``, the same kernel with the op's own
  default eps 1e-4 (gen_nn_ops.py); its reserve_space_1 and _2 are the batch mean and the *biased*
  batch variance (what the gradient reuses), reserve_space_3 an empty tensor on the CPU.

The mode is the user's code: the batch's moments / ``is_training=True`` in training, the running
statistics / ``is_training=False`` in inference. Gradients: ``tf.GradientTape`` (both fused ops have
FusedBatchNormGradV3 as gradient). Nothing here re-derives batch norm: each step is one TF op.
"""
import numpy as np
import tensorflow as tf

from equiv.backends.tf import setup, tensor, to_nchw, to_nhwc
from equiv.conventions import DECLARED
from equiv.core import Adapter, MomentumRequired
from equiv.core import to_numpy as numpy
from equiv.dtypes import round_to


class _TFOps(Adapter):
    framework = "tensorflow-cpu"
    dtypes = ("float64", "float32", "float16", "bfloat16")
    state_dtype = None   # None: the input's dtype

    def build(self, momentum, eps):
        setup()
        if momentum is None:
            raise MomentumRequired(f"{self.name}: the moving average's decay has no default")
        self.momentum = momentum
        c = self.num_features
        self.set_state(np.ones(c), np.zeros(c), np.zeros(c), np.ones(c))

    def _t(self, a, state=False):
        return tensor(a, (state and self.state_dtype) or self.dtype)

    def set_state(self, gamma, beta, running_mean, running_var):
        self.gamma, self.beta, self.mean, self.var = (self._t(v, state=True)
                                                      for v in (gamma, beta, running_mean, running_var))

    def get_state(self):
        return dict(gamma=numpy(self.gamma), beta=numpy(self.beta),
                    running_mean=numpy(self.mean), running_var=numpy(self.var))

    def forward_train(self, x):
        return to_nchw(numpy(self._call(self._t(to_nhwc(x)), training=True)))

    def forward_infer(self, x):
        return to_nchw(numpy(self._call(self._t(to_nhwc(x)), training=False)))

    def forward_default(self, x):
        return self.forward_train(x)

    def forward_native(self, x):
        return numpy(self._call(self._t(x), training=True))

    def train_step(self, x, dy):
        x = self._t(to_nhwc(x))
        with tf.GradientTape() as tape:
            tape.watch([x, self.gamma, self.beta])
            y = self._call(x, training=True)
        dx, dgamma, dbeta = tape.gradient(y, [x, self.gamma, self.beta], output_gradients=self._t(to_nhwc(dy)))
        return to_nchw(numpy(y)), to_nchw(numpy(dx)), numpy(dgamma), numpy(dbeta)


class TFMoments(_TFOps):
    name = "tf.nn.moments"
    conventions = DECLARED[name]
    unmeasured = {"default_eps": "tf.nn.batch_normalization's variance_epsilon is a required argument",
                  "default_mode": "no layer and no mode: the user's code calls the moments or the running "
                                  "statistics"}

    def build(self, momentum, eps):
        super().build(momentum, eps)
        # the batch's weight 1 − decay is a Python float (1 − fl(1 − w) in float64) that meets a tensor of the
        # state's dtype: rounded to it
        self.new_batch_weight = float(round_to(1.0 - momentum, self.dtype))

    def _moments(self, x, axes):
        return tf.nn.moments(x, axes)

    def _call(self, x, training):
        if training:
            mean, var = self._moments(x, list(range(x.shape.rank - 1)))
            w = 1 - self.momentum   # decay weighs the old value
            self.mean, self.var = self.mean - w * (self.mean - mean), self.var - w * (self.var - var)
        else:
            mean, var = self.mean, self.var
        return tf.nn.batch_normalization(x, mean, var, self.beta, self.gamma, self.eps)


class TFWeightedMoments(TFMoments):
    name = "tf.nn.weighted_moments"
    conventions = DECLARED[name]

    def _moments(self, x, axes):
        weights = tf.ones([x.shape[0]] + [1] * (x.shape.rank - 1), x.dtype)   # one per example
        return tf.nn.weighted_moments(x, axes, weights)


class TFFusedBatchNorm(_TFOps):
    name = "tf.fused_batch_norm"
    conventions = DECLARED[name]
    dtypes = ("float32", "float16", "bfloat16")   # the kernel's T: half, bfloat16, float
    state_dtype = "float32"                       # its U: float

    def build(self, momentum, eps):
        super().build(momentum, eps)
        # exponential_avg_factor is a float attribute: the kernel weighs the batch by fl32(w) (as eps, in
        # float32 arithmetic, where fl32(eps) is eps to the computation's own rounding)
        self.new_batch_weight = float(np.float32(momentum))

    def _fused(self, x, training):
        return tf.compat.v1.nn.fused_batch_norm(x, self.gamma, self.beta, self.mean, self.var,
                                                epsilon=self.eps, is_training=training,
                                                exponential_avg_factor=self.momentum)

    def _call(self, x, training):
        shape = x.shape
        if shape.rank == 2:   # 4-D or 5-D only: (N, C) as (N, 1, 1, C)
            x = tf.reshape(x, [shape[0], 1, 1, shape[1]])
        y, mean, var = self._fused(x, training)
        if training:
            self.mean, self.var = mean, var
        return tf.reshape(y, shape)


class TFRawFusedBatchNormV3(TFFusedBatchNorm):
    name = "tf.raw.FusedBatchNormV3"
    conventions = DECLARED[name]

    def _fused(self, x, training):
        out = tf.raw_ops.FusedBatchNormV3(x=x, scale=self.gamma, offset=self.beta, mean=self.mean,
                                          variance=self.var, epsilon=self.eps, is_training=training,
                                          exponential_avg_factor=self.momentum)
        return out.y, out.batch_mean, out.batch_variance
