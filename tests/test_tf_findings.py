"""Measured behaviours of tf.keras (Keras 3) and of the book's TensorFlow layer that the
generic properties do not express: modes, Keras' momentum and eps, the book's layer on
Keras 3, float16, batch of one, ``synchronized=True``."""
import numpy as np
import pytest

import reference as ref

tf = pytest.importorskip("tensorflow", reason="install it with: pip install tensorflow-cpu")


def _x(shape=(8, 3), seed=0, mean=1.0, std=1.0):
    return mean + std * np.random.default_rng(seed).standard_normal(shape)


def _keras(**kw):
    layer = tf.keras.layers.BatchNormalization(dtype="float64", **kw)
    layer.build((None, 3))
    return layer


def test_keras_plain_call_is_inference_and_updates_nothing():
    layer = _keras()
    layer.moving_mean.assign([5.0, 5.0, 5.0])
    layer.moving_variance.assign([4.0, 4.0, 4.0])
    x = _x()
    y = layer(x).numpy()
    expected = ref.batch_norm_infer(x, np.ones(3), np.zeros(3), np.full(3, 5.0), np.full(3, 4.0), eps=1e-3)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), 5.0)


def test_keras_momentum_weighs_the_old_value_and_eps_is_1e_3():
    layer = _keras()
    assert (layer.momentum, layer.epsilon) == (0.99, 1e-3)
    x = _x()
    y = layer(x, training=True).numpy()
    y_ref, mean, var = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-3)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.01 * mean, rtol=1e-12)           # weight 0.01
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.99 + 0.01 * var, rtol=1e-12)  # biased var


def test_keras_trainable_false_forces_inference_even_with_training_true():
    layer = _keras()
    layer.trainable = False
    x = _x()
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(y, ref.batch_norm_infer(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3),
                                                       eps=1e-3), rtol=1e-12)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), 0.0)


def test_keras_training_none_inside_a_model_is_inference():
    """training=None (the default) propagates through a Sequential: model(x) predicts,
    model(x, training=True) trains."""
    model = tf.keras.Sequential([tf.keras.Input((3,), dtype="float64"), _keras()])
    x = _x()
    np.testing.assert_allclose(model(x).numpy(), x / np.sqrt(1 + 1e-3), rtol=1e-12)
    y = model(x, training=True).numpy()
    np.testing.assert_allclose(y, ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-3)[0], rtol=1e-10, atol=1e-12)


def test_keras_float16_layer_computes_in_float32():
    """Finding: a float16 Keras layer casts its input to float32 (``result_type(x, float32)``) and
    returns float16: Σ(x − mean)² = 7e4 (beyond float16) still gives the right output."""
    x = np.round(_x((16, 1), seed=6, mean=0.0, std=66.0)).astype(np.float16).astype(np.float64)
    assert ((x - x.mean()) ** 2).sum() > 65504
    layer = tf.keras.layers.BatchNormalization(dtype="float16")
    y = layer(tf.constant(x, tf.float16), training=True)
    assert y.dtype == tf.float16 and layer.moving_variance.dtype == "float16"
    y_ref = ref.batch_norm_train(x, np.ones(1), np.zeros(1), eps=1e-3)[0]
    np.testing.assert_allclose(y.numpy().astype(np.float64), y_ref, atol=4e-3)
    assert np.isfinite(layer.moving_variance.numpy()).all()


def test_keras_batch_of_one_outputs_beta_and_decays_moving_variance():
    layer = _keras(beta_initializer="zeros")
    layer.beta.assign([0.5, 0.5, 0.5])
    y = layer(np.array([[1.0, 2.0, 3.0]]), training=True).numpy()
    np.testing.assert_array_equal(y, 0.5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.99, rtol=1e-12)


def test_keras_synchronized_uses_the_fast_variance_even_without_a_strategy():
    """Finding: ``synchronized=True`` takes E[x²] − E[x]² (keras/src/backend/tensorflow/nn.py,
    _compute_moments_sync) whenever a replica context exists, and outside any strategy
    TensorFlow returns the default one, never None. In float32 at |mean|/std = 1e3 the
    batch variance is then ~7% off (measured 1.0625 for 1.1402); synchronized=False is exact."""
    x = (1e3 + np.random.default_rng(3).standard_normal((64, 1))).astype(np.float32)
    var = x.astype(np.float64).var()
    batch_var = {}
    for sync in (False, True):
        layer = tf.keras.layers.BatchNormalization(synchronized=sync, momentum=0.0)
        layer(x, training=True)
        batch_var[sync] = float(layer.moving_variance.numpy()[0])
    assert abs(batch_var[False] - var) < 1e-3 * var
    assert abs(batch_var[True] - var) > 1e-2 * var


def test_book_layer_verbatim_on_keras3():
    """Finding: the book's TensorFlow layer, as printed, does not train on Keras 3 (tf.keras since
    TF 2.16): ``self.add_update`` no longer exists. Its ``training`` argument has no default and
    Keras 3 binds the call signature before filling ``training`` in: a plain call raises
    TypeError, only ``training=False`` works as printed, and a Sequential refuses the layer
    (``training`` counts as a second required positional argument)."""
    from equiv.book.d2l_tensorflow import BatchNorm
    layer = BatchNorm(dtype="float64")
    x = _x()
    with pytest.raises(TypeError, match="training"):
        layer(x)
    np.testing.assert_allclose(layer(x, training=False).numpy(), x / np.sqrt(1 + 1e-5), rtol=1e-12)
    with pytest.raises(AttributeError, match="add_update"):
        layer(x, training=True)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), 0.0)   # nothing ran
    with pytest.raises(ValueError, match="single required positional argument"):
        tf.keras.Sequential([tf.keras.Input((3,)), BatchNorm()])


def test_book_layer_with_keras2_add_update_uses_momentum_as_new_weight():
    """With Keras 2's add_update restored (a no-op for the book's already-run assigns; what the
    adapter does), the book's layer trains: eps 1e-5, new = 0.9·old + 0.1·batch (PyTorch's
    meaning of 0.1, where tf.keras would weigh the batch by 0.01), a biased running variance."""
    from equiv.adapters.tf_scratch import BookLayer
    layer = BookLayer(dtype="float64")
    x = _x(mean=2.0, std=3.0)
    y = layer(x, training=True).numpy()
    y_ref, mean, var = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-12)


def test_book_layer_float16_sum_overflow_collapses_to_beta():
    """Finding (known divergence tf-scratch-fp16-sum-overflow): the book's float16 variance is
    tf.reduce_mean in float16, whose sum overflows at Σ(x − mean)² > 65504 although every
    square is representable; the output is beta and the moving variance inf."""
    from equiv.adapters.tf_scratch import BookLayer
    x = np.round(_x((16, 1), seed=6, mean=0.0, std=66.0)).astype(np.float16)
    assert np.abs(x - x.astype(np.float64).mean()).max() < 256
    layer = BookLayer(dtype="float16")
    y = layer(tf.constant(x), training=True).numpy()
    np.testing.assert_array_equal(y, 0.0)                                # beta
    assert np.isinf(layer.moving_variance.numpy()).all()
