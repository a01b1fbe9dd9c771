"""TensorFlow BN-LeNet (equiv.lenet.tf_net) in lockstep with the NumPy reference: planted
differences, fc1's row permutation (NHWC flatten), the book's moving averages, and TF's
sequential float32 sums over a channel. The generic tests (agreement, weight transfer,
training, CLI) are in the shared file."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="install it with: pip install tensorflow-cpu")

from equiv.lenet import CONVENTIONS, label_of, lockstep, synthetic, tf_net  # noqa: E402
from reference import lenet as ref  # noqa: E402
from tests.lenet_helpers import assert_named_at, patched  # noqa: E402

BATCH = 16


def test_planted_eps_is_named_at_its_layer():
    """bn2's epsilon 1e-3 -> 1e-2 in the Keras net: step 1, layer bn2 (not conv1, not the output)."""
    def build(impl, dtype, device):
        net = tf_net.build(impl, dtype, device)
        net.bn2.epsilon = 1e-2
        return net
    r = lockstep.run(patched(tf_net, build=build), "builtin", steps=2, dtype="float64", batch=BATCH)
    assert_named_at(r, (1, "act", "bn2"), ratio=1e3)


def test_planted_weight_scale_is_named_at_its_layer():
    """fc2's kernel scaled by 1 + 1e-4 after loading (scratch, float64): step 1, layer fc2."""
    def load_params(net, params):
        tf_net.load_params(net, params)
        net.fc2.kernel.assign(net.fc2.kernel * (1 + 1e-4))
    r = lockstep.run(patched(tf_net, load_params=load_params), "scratch", steps=2, dtype="float64", batch=BATCH)
    assert_named_at(r, (1, "act", "fc2"))


def test_keras_flatten_is_h_w_c():
    """keras.layers.Flatten of NHWC orders the features (h, w, c), the order equiv.lenet.layout
    permutes fc1's rows for (tests/test_lenet_layout.py)."""
    pool2 = np.random.default_rng(0).standard_normal((3, 16, 4, 4))
    out = tf.keras.layers.Flatten(dtype="float64")(tf.constant(pool2.transpose(0, 2, 3, 1))).numpy()
    np.testing.assert_array_equal(out, pool2.transpose(0, 2, 3, 1).reshape(3, -1))


def test_fc1_permutation_is_needed_in_lockstep():
    """Loading fc1 as W.T without the permutation: flat still agrees at step 1, fc1 is the first
    divergence; with it (tf_net as it is) flat and fc1 agree over every step."""
    def load_params(net, params):
        tf_net.load_params(net, params)
        net.fc1.kernel.assign(tf.constant(params["fc1.weight"].T, dtype=net.tf_dtype))
    tol = lockstep.tolerance("float64", BATCH)
    bad = lockstep.run(patched(tf_net, load_params=load_params), "builtin", steps=2, dtype="float64", batch=BATCH)
    f = bad["first_divergence"]
    assert (f["step"], f["kind"], f["layer"]) == (1, "act", "fc1")
    assert bad["per_step"][0]["rel_error"]["act:flat"] <= tol
    assert bad["per_step"][0]["rel_error"]["act:fc1"] > 1e-2
    good = lockstep.run(tf_net, "builtin", steps=2, dtype="float64", batch=BATCH)
    assert good["max_rel_error"]["act:flat"] <= tol and good["max_rel_error"]["act:fc1"] <= tol
    assert good["max_rel_error"]["param:fc1.weight"] <= tol


@pytest.mark.parametrize("impl", tf_net.IMPLS)
def test_moving_averages_move_in_a_step_not_in_evaluate(impl):
    """The book's layer (scratch) and Keras' (builtin) update their moving averages in the
    training call of ``step``, as the reference does (new-batch weight 0.1 / 0.01), and leave them
    alone in ``evaluate`` (inference)."""
    x, y = synthetic(32, 5)
    conv = CONVENTIONS[label_of(tf_net, impl)]
    params = ref.init_params(5)
    net = tf_net.build(impl, "float64", "cpu")
    tf_net.load_params(net, params)
    before = tf_net.get_state(net)
    tf_net.step(net, x[:BATCH], y[:BATCH], 0.1, capture=False)
    after = tf_net.get_state(net)
    _, _, expected, _ = ref.loss_and_grads(params, ref.init_state(), x[:BATCH], y[:BATCH], **conv)
    for k in before:
        assert np.abs(after[k] - before[k]).max() > 1e-3, k                   # they moved
        np.testing.assert_allclose(after[k], expected[k], rtol=1e-12, atol=1e-14, err_msg=k)
    np.testing.assert_array_equal(net.bn1.moving_mean.numpy(), after["bn1.running_mean"])
    tf_net.evaluate(net, x, y, batch=10)
    for k, v in tf_net.get_state(net).items():
        np.testing.assert_array_equal(v, after[k], err_msg=k)                  # evaluate: unchanged


def test_tf_float32_sums_a_narrow_channel_sequentially():
    """TF's CPU reduction over the leading axes of (rows, channels) (Eigen's preserved-inner-dim
    reduction, which tf.nn.moments, tf.reduce_mean and the gradients' broadcast sums use) adds the
    rows one by one in float32: one accumulator per channel when there are fewer channels than a
    SIMD packet (bn1: 6), four interleaved ones otherwise. A sum of [1e8, 1 ×1000, −1e8] is 0, not
    1000, and so is the batch mean that Keras' and the book's layer put into the moving mean."""
    v = np.array([1e8] + [1.0] * 1000 + [-1e8], dtype=np.float32)
    assert float(np.sum(v, dtype=np.float64)) == 1000.0
    x = np.broadcast_to(v.reshape(-1, 1, 1, 1), (v.size, 1, 1, 6)).copy()      # NHWC, 6 channels as bn1
    assert np.all(tf.reduce_sum(tf.constant(x), [0, 1, 2]).numpy() == 0.0)
    assert tf.reduce_sum(tf.constant(v)).numpy() > 900                          # a 1-D sum is blocked
    from equiv.adapters.tf_scratch import BookLayer
    for layer, weight in ((tf.keras.layers.BatchNormalization(dtype="float32"), 0.01),
                          (BookLayer(dtype="float32"), 0.1)):
        layer(tf.constant(x), training=True)
        assert np.all(layer.moving_mean.numpy() == 0.0), type(layer).__name__   # not weight·1000/1002
        assert weight * 1000 / 1002 > 1e-3


def test_float32_divergence_on_fashion_mnist_is_the_moments_sum(monkeypatch):
    """On Fashion-MNIST (batch 128: 73,728 values a bn1 channel, many of them the same
    background value, so the rounding errors do not cancel) TF's sequential float32 batch mean of
    bn1 is 7.5e-5 off at step 1, over the tolerance 6.9e-5. With only Keras' moments summed in
    float64 (rounded back to float32), the same step agrees: the summation is the whole difference."""
    from equiv.data import DataError, load_fashion_mnist
    try:
        d = load_fashion_mnist()
    except DataError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")
    data = (d["train_x"], d["train_y"].astype(np.int64))
    tol = lockstep.tolerance("float32", 128)
    r = lockstep.run(tf_net, "builtin", steps=1, dtype="float32", seed=0, batch=128, dataset=data)
    e = r["per_step"][0]["rel_error"]
    assert not r["passed"]
    assert e["state:bn1.running_mean"] > tol and e["act:bn1"] < tol < e["param:bn1.beta"]

    from keras.src.backend.tensorflow import nn as keras_tf_nn

    def moments_in_float64(x, axes, keepdims):
        m, v = tf.nn.moments(tf.cast(x, tf.float64), axes, keepdims=keepdims)
        return tf.cast(m, x.dtype), tf.cast(v, x.dtype)
    monkeypatch.setattr(keras_tf_nn, "_compute_moments", moments_in_float64)
    r = lockstep.run(tf_net, "builtin", steps=1, dtype="float32", seed=0, batch=128, dataset=data)
    assert r["passed"], r["first_divergence"]
    assert r["per_step"][0]["rel_error"]["state:bn1.running_mean"] < tol / 100
