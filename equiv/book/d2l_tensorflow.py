"""Dive into Deep Learning, "Batch Normalization", TensorFlow tab: verbatim.

Only the imports are added. Quirks kept on purpose:
- ``assign_moving_average`` hard-codes momentum 0.1 as the weight of the *new* value
  (new = 0.9·old + 0.1·batch): PyTorch's meaning, not Keras' (where 0.99 weighs the old);
- ``call`` hard-codes eps 1e-5 (Keras' own default is 1e-3);
- the variance is ``reduce_mean(squared_difference(x, stop_gradient(mean)))``: two-pass,
  biased, and no gradient flows through the mean inside it (that term is zero anyway);
- ``batch_norm`` is only the affine step, y = x·inv + (beta − mean·inv) with
  inv = gamma·rsqrt(var + eps); it serves both modes;
- channels-last (the statistics reduce over every axis but the last);
- the mode is the ``training`` argument, which has no default;
- ``call`` is a ``@tf.function``;
- it calls ``self.add_update``, a Keras 2 method that Keras 3 (tf.keras since TF 2.16)
  removed: on Keras 3 a training call raises AttributeError (see equiv/adapters/tf_scratch.py).
"""
import tensorflow as tf


def batch_norm(X, gamma, beta, moving_mean, moving_var, eps):
    # Compute reciprocal of square root of the moving variance elementwise
    inv = tf.cast(tf.math.rsqrt(moving_var + eps), X.dtype)
    # Scale and shift
    inv *= gamma
    Y = X * inv + (beta - moving_mean * inv)
    return Y


class BatchNorm(tf.keras.layers.Layer):
    def __init__(self, **kwargs):
        super(BatchNorm, self).__init__(**kwargs)

    def build(self, input_shape):
        weight_shape = [input_shape[-1], ]
        # The scale parameter and the shift parameter (model parameters) are
        # initialized to 1 and 0, respectively
        self.gamma = self.add_weight(name='gamma', shape=weight_shape,
            initializer=tf.initializers.ones, trainable=True)
        self.beta = self.add_weight(name='beta', shape=weight_shape,
            initializer=tf.initializers.zeros, trainable=True)
        # The variables that are not model parameters are initialized to 0
        self.moving_mean = self.add_weight(name='moving_mean',
            shape=weight_shape, initializer=tf.initializers.zeros,
            trainable=False)
        self.moving_variance = self.add_weight(name='moving_variance',
            shape=weight_shape, initializer=tf.initializers.ones,
            trainable=False)
        super(BatchNorm, self).build(input_shape)

    def assign_moving_average(self, variable, value):
        momentum = 0.1
        delta = (1.0 - momentum) * variable + momentum * value
        return variable.assign(delta)

    @tf.function
    def call(self, inputs, training):
        if training:
            axes = list(range(len(inputs.shape) - 1))
            batch_mean = tf.reduce_mean(inputs, axes, keepdims=True)
            batch_variance = tf.reduce_mean(tf.math.squared_difference(
                inputs, tf.stop_gradient(batch_mean)), axes, keepdims=True)
            batch_mean = tf.squeeze(batch_mean, axes)
            batch_variance = tf.squeeze(batch_variance, axes)
            mean_update = self.assign_moving_average(
                self.moving_mean, batch_mean)
            variance_update = self.assign_moving_average(
                self.moving_variance, batch_variance)
            self.add_update(mean_update)
            self.add_update(variance_update)
            mean, variance = batch_mean, batch_variance
        else:
            mean, variance = self.moving_mean, self.moving_variance
        output = batch_norm(inputs, moving_mean=mean, moving_var=variance,
            beta=self.beta, gamma=self.gamma, eps=1e-5)
        return output
