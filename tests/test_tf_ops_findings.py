"""Measured behaviours of TensorFlow's batch-norm ops (the tf.nn.* and fused adapters,
equiv/adapters/tf_ops.py) that the generic properties do not express: the fused op's input rank,
dtypes, defaults, eps on the CPU, its outputs (running statistics, reserve spaces) and its docs;
weighted_moments with unequal weights."""
import numpy as np
import pytest

import reference as ref

tf = pytest.importorskip("tensorflow", reason="install it with: pip install tensorflow-cpu")


def _x(shape=(4, 2, 3, 5), seed=0, mean=1.0):
    return mean + np.random.default_rng(seed).standard_normal(shape)


def _c(shape):
    return tf.ones(shape[-1]), tf.zeros(shape[-1])


def test_fused_takes_4d_only_and_a_2d_batch_reshaped_is_the_2d_batch_norm():
    """nn_impl.py:1521 ("Input Tensor of 4 or 5 dimensions"): (N, C) is refused; as (N, 1, 1, C) it is
    batch norm over the batch, what the adapter feeds it."""
    x = _x((8, 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="4-dimensional"):
        tf.compat.v1.nn.fused_batch_norm(tf.constant(x, tf.float32), *_c(x.shape))
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(tf.constant(x.reshape(8, 1, 1, 3), tf.float32), *_c(x.shape))
    expected, _, _ = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-3)
    np.testing.assert_allclose(y.numpy().reshape(8, 3), expected, atol=1e-5)


def test_fused_has_no_float64_kernel():
    x = _x()
    with pytest.raises(tf.errors.InvalidArgumentError, match="of double is not in the list of allowed values"):
        tf.compat.v1.nn.fused_batch_norm(tf.constant(x), *(tf.cast(t, tf.float64) for t in _c(x.shape)))


def test_fused_defaults_and_the_unbiased_running_variance():
    """epsilon 1e-3 (nn_impl.py:1508) and 1e-4 for the raw op (gen_nn_ops.py); exponential_avg_factor 1.0
    returns the batch mean and the batch variance times m/(m − 1) (fused_batch_norm_op.cc:179-183, 204-207 at 057091d;
    oneDNN's kernel: ``adjust_factor``), factor f: (1 − f)·old + f·that (:213-216)."""
    x = _x()
    m = 4 * 2 * 3
    y, mean, var = tf.compat.v1.nn.fused_batch_norm(tf.constant(x, tf.float32), *_c(x.shape))
    y_ref, mu, v = ref.batch_norm_train(x, np.ones(5), np.zeros(5), eps=1e-3, axis=-1)
    np.testing.assert_allclose(y.numpy(), y_ref, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var.numpy(), v * m / (m - 1), rtol=1e-5)
    raw = tf.raw_ops.FusedBatchNormV3(x=tf.constant(x, tf.float32), scale=tf.ones(5), offset=tf.zeros(5),
                                      mean=tf.zeros(5), variance=tf.ones(5))
    y_raw, _, _ = ref.batch_norm_train(x, np.ones(5), np.zeros(5), eps=1e-4, axis=-1)
    np.testing.assert_allclose(raw.y.numpy(), y_raw, atol=1e-5)
    f = 0.1
    _, mean, var = tf.compat.v1.nn.fused_batch_norm(tf.constant(x, tf.float32), *_c(x.shape), mean=tf.zeros(5),
                                                    variance=tf.ones(5), exponential_avg_factor=f)
    np.testing.assert_allclose(mean.numpy(), f * mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(var.numpy(), (1 - f) + f * v * m / (m - 1), rtol=1e-6)


def test_fused_without_running_statistics_refuses_factor_other_than_1():
    """nn_impl.py:1575-1581 ( mean and variance are required when is_training is False or the factor is not 1."""
    x = tf.constant(_x(), tf.float32)
    with pytest.raises(ValueError, match="must be a 1D tensor"):
        tf.compat.v1.nn.fused_batch_norm(x, *_c(x.shape), exponential_avg_factor=0.1)


def test_fused_honours_a_tiny_eps_on_the_cpu():
    """No floor on the CPU: eps 1e-12 on a batch of variance 2.5e-7 (older releases raised eps to 1.001e-5
    in Python; nn_impl.py of this release passes it through, :1595)."""
    x = np.array([0.0, 1e-3]).reshape(2, 1, 1, 1)
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(tf.constant(x, tf.float32), tf.ones(1), tf.zeros(1), epsilon=1e-12)
    np.testing.assert_allclose(y.numpy().ravel(), [-1.0, 1.0], rtol=1e-5)


def test_raw_op_agrees_with_fused_batch_norm_and_its_reserve_spaces():
    """The same kernel: equal outputs bit for bit. reserve_space_1 and _2 are the batch mean and the *biased*
    batch variance (what FusedBatchNormGradV3 reuses; on a GPU cuDNN's saved inverse std), reserve_space_3 is
    empty on the CPU (oneDNN's workspace, none without a fused ReLU). The op's docs say mean and variance
    are "used for inference only; must be empty for training", yet with exponential_avg_factor != 1 they
    are the running statistics it updates."""
    x = tf.constant(_x(), tf.float32)
    state = dict(scale=tf.ones(5), offset=tf.zeros(5), mean=tf.fill([5], 0.5), variance=tf.fill([5], 2.0))
    fused = tf.compat.v1.nn.fused_batch_norm(x, state["scale"], state["offset"], state["mean"], state["variance"],
                                             epsilon=1e-3, exponential_avg_factor=0.3)
    raw = tf.raw_ops.FusedBatchNormV3(x=x, **state, epsilon=1e-3, exponential_avg_factor=0.3, is_training=True)
    for a, b in zip(fused, (raw.y, raw.batch_mean, raw.batch_variance)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    _, mu, v = ref.batch_norm_train(x.numpy().astype(np.float64), np.ones(5), np.zeros(5), eps=1e-3, axis=-1)
    np.testing.assert_allclose(raw.reserve_space_1.numpy(), mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw.reserve_space_2.numpy(), v, rtol=1e-5)
    assert raw.reserve_space_3.shape == (0,)
    np.testing.assert_allclose(raw.batch_mean.numpy(), 0.7 * 0.5 + 0.3 * mu, rtol=1e-5)


def test_weighted_moments_unequal_weights_are_frequency_weights():
    """nn_impl.py:1367-1390: weight k counts the example k times (mean Σw·x/Σw, variance Σw·(x − mean)²/Σw:
    biased, ÷ Σw); all ones is tf.nn.moments."""
    x = _x((4, 3))
    w = np.array([1.0, 2.0, 1.0, 3.0]).reshape(4, 1)
    mean, var = tf.nn.weighted_moments(tf.constant(x), [0], tf.constant(w))
    repeated = np.repeat(x, [1, 2, 1, 3], axis=0)
    np.testing.assert_allclose(mean.numpy(), repeated.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(var.numpy(), repeated.var(axis=0), rtol=1e-13)
    ones = tf.nn.weighted_moments(tf.constant(x), [0], tf.ones((4, 1), tf.float64))
    for a, b in zip(ones, tf.nn.moments(tf.constant(x), [0])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-14)


def test_exponential_moving_average_rounds_decay_to_float32_for_float64_variables():
    """tf.train.ExponentialMovingAverage converts decay to float32 (moving_averages.py:580-581) whatever the
    variable's dtype: a float64 average weighs the new value by 1 − fl32(0.9) = 0.10000002384, not 0.1 (the
    adapters write the documented update, old −= (1 − decay)·(old − batch), in the state's dtype)."""
    v = tf.Variable([0.0], dtype=tf.float64)
    ema = tf.train.ExponentialMovingAverage(decay=0.9)
    ema.apply([v])
    v.assign([1.0])
    ema.apply([v])
    assert ema.average(v).numpy()[0] == 1.0 - float(np.float32(0.9))
    assert abs(ema.average(v).numpy()[0] - 0.1) > 2e-8
