"""Measured behaviours of the two MXNet implementations that the generic properties do
not express: when gluon's running statistics move, the default mode, the book's mode
switch, eps 1e-12, batch of one, ``use_global_stats``, float32 momentum, float16 limits."""
import numpy as onp
import pytest

import reference as ref

mx = pytest.importorskip("mxnet", reason="install it with: pip install mxnet==1.9.1 'numpy<1.24'")
from mxnet import autograd, np, npx  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

npx.set_np()


def _x(shape=(8, 3), seed=0, mean=1.0):
    return onp.random.default_rng(seed).standard_normal(shape) + mean


def _gluon(c=3, dtype="float64", **kw):
    layer = nn.BatchNorm(in_channels=c, **kw)
    layer.initialize()
    layer.cast(dtype)
    return layer


def _rm(layer):
    return layer.running_mean.data().asnumpy().astype(onp.float64)


@pytest.mark.parametrize("shape", [(8, 3), (4, 8, 3, 3)])   # (4, 8, 3, 3): the shape oneDNN may take
def test_gluon_running_stats_move_only_in_backward(shape):
    """Finding (CPU): the forward never writes the running statistics, under record() or
    train_mode(); the backward of a training-mode graph does. Source: BatchNormForwardImpl only
    reads aux_states; BatchNormBackwardImpl has "update running averages"
    (src/operator/nn/batch_norm.cc)."""
    x = np.array(_x(shape), dtype="float32")
    red = (0,) + tuple(range(2, len(shape)))
    layer = _gluon(shape[1], "float32")
    with autograd.record():
        y = layer(x)
    assert onp.all(_rm(layer) == 0)                          # forward under record(): unchanged
    with autograd.train_mode():
        layer(x)
    assert onp.all(_rm(layer) == 0)                          # train_mode() without record(): unchanged
    y.backward()
    onp.testing.assert_allclose(_rm(layer), 0.1 * x.asnumpy().mean(axis=red), rtol=1e-5)
    layer = _gluon(shape[1], "float32")
    with autograd.record(train_mode=False):                  # recorded in predict mode
        y = layer(x)
    y.backward()
    assert onp.all(_rm(layer) == 0)


def test_gluon_plain_call_predicts():
    """A plain call outside any autograd scope uses the running statistics (inference)."""
    layer = _gluon()
    layer.running_mean.set_data(np.array([5.0, 5.0, 5.0], dtype="float64"))
    x = _x()
    y = layer(np.array(x, dtype="float64")).asnumpy()
    onp.testing.assert_allclose(y, ref.batch_norm_infer(x, onp.ones(3), onp.zeros(3), onp.full(3, 5.0),
                                                        onp.ones(3), eps=1e-5), rtol=1e-12)


def test_gluon_momentum_is_float32():
    """Finding: momentum is a C++ float (BatchNormParam): in float64 the new batch weighs
    1 − float32(0.9) = 0.10000002384, not 0.1."""
    layer = _gluon(1)
    x = np.array([[1.0], [3.0]], dtype="float64")              # batch mean 2
    x.attach_grad()
    with autograd.record():
        y = layer(x)
    y.backward()
    w = _rm(layer)[0] / 2.0
    assert w == pytest.approx(1 - float(onp.float32(0.9)), rel=1e-15, abs=0)
    assert abs(w - 0.1) > 2e-8


def test_gluon_use_global_stats():
    """use_global_stats=True: even under record() the output uses the running statistics, and
    the backward leaves them alone."""
    layer = _gluon(use_global_stats=True)
    layer.running_mean.set_data(np.array([5.0, 5.0, 5.0], dtype="float64"))
    x = _x()
    X = np.array(x, dtype="float64")
    X.attach_grad()
    with autograd.record():
        y = layer(X)
    y.backward()
    onp.testing.assert_allclose(y.asnumpy(), x - 5.0, rtol=1e-4)   # 1/sqrt(1 + 1e-5)
    onp.testing.assert_allclose(_rm(layer), 5.0, rtol=0)
    onp.testing.assert_allclose(X.grad.asnumpy(), 1 / onp.sqrt(1 + 1e-5), rtol=1e-12)


def test_gluon_float16_keeps_float32_parameters_but_forms_var_plus_eps_in_float16():
    """Finding: cast('float16') keeps gamma, beta and the running stats in float32 and the sums
    are float32, yet var + eps is formed in float16: at var = 65536 (|x − mean| = 256) it
    overflows, 1/sqrt(inf) = 0 and the output is beta; at 255 it is still right."""
    layer = _gluon(1, "float16")
    assert layer.gamma.data().dtype == onp.float32 and layer.running_var.data().dtype == onp.float32
    for d, expected in ((255.0, [-1.0, 1.0]), (256.0, [0.0, 0.0])):
        with autograd.train_mode():
            y = layer(np.array([[-d], [d]], dtype="float16"))
        onp.testing.assert_allclose(y.asnumpy().ravel(), expected, atol=1e-3)


def test_scratch_mode_follows_autograd_is_training():
    """Finding: the book's layer trains (batch statistics, moving averages updated in the
    forward) inside record() or train_mode(), and predicts in a plain call."""
    from equiv.book.d2l_mxnet import BatchNorm
    layer = BatchNorm(3, num_dims=2)
    layer.initialize()
    x = _x()
    X = np.array(x, dtype="float32")
    y_train, mean, _ = ref.batch_norm_train(x, onp.ones(3), onp.zeros(3), eps=1e-12)
    with autograd.record():
        y = layer(X)                                           # no backward needed
    onp.testing.assert_allclose(y.asnumpy(), y_train, rtol=1e-5, atol=1e-5)
    onp.testing.assert_allclose(layer.moving_mean.asnumpy().ravel(), 0.1 * mean, rtol=1e-5)
    with autograd.train_mode():
        layer(X)
    onp.testing.assert_allclose(layer.moving_mean.asnumpy().ravel(), 0.19 * mean, rtol=1e-5)
    before = layer.moving_mean.asnumpy().ravel()
    y = layer(X).asnumpy()                                     # plain call: prediction
    onp.testing.assert_allclose(y, ref.batch_norm_infer(x, onp.ones(3), onp.zeros(3), before,
                                                        layer.moving_var.asnumpy().ravel(), eps=1e-12),
                                rtol=1e-5, atol=1e-5)
    onp.testing.assert_array_equal(layer.moving_mean.asnumpy().ravel(), before)


def test_scratch_eps_1e12_amplifies_rounding_of_a_constant_channel():
    """Finding: with eps 1e-12 a float32 channel of three equal values 7.7 does not give beta:
    the float32 mean misses 7.7 by 4.8e-7, and 4.8e-7/sqrt(4.8e-7² + 1e-12) = 0.43. Gluon's
    eps 1e-5 keeps the same rounding at 1.5e-4."""
    from equiv.book.d2l_mxnet import BatchNorm
    layer = BatchNorm(1, num_dims=2)
    layer.initialize()
    X = np.array(onp.full((3, 1), 7.7), dtype="float32")
    with autograd.record():
        y = layer(X).asnumpy()
    assert onp.all(onp.abs(y - 0.43) < 0.01)
    with autograd.train_mode():
        y = _gluon(1, "float32")(X).asnumpy()
    assert onp.abs(y).max() < 1e-3


def test_batch_of_one():
    """Both take a single row in training: the variance is 0 and the output is beta. Gluon's
    running variance (updated in backward) and the book's moving variance decay by 0.9."""
    from equiv.book.d2l_mxnet import BatchNorm
    layer = BatchNorm(3, num_dims=2)
    layer.initialize()
    layer.beta.set_data(np.full((1, 3), 0.5))
    with autograd.record():
        y = layer(np.array([[1.0, 2.0, 3.0]]))
    onp.testing.assert_array_equal(y.asnumpy(), 0.5)
    onp.testing.assert_allclose(layer.moving_var.asnumpy(), 0.9, rtol=1e-6)
    g = _gluon(3, "float32")
    g.beta.set_data(np.full(3, 0.5))
    x = np.array([[1.0, 2.0, 3.0]])
    x.attach_grad()
    with autograd.record():
        y = g(x)
    y.backward()
    onp.testing.assert_array_equal(y.asnumpy(), 0.5)
    onp.testing.assert_allclose(g.running_var.data().asnumpy(), 0.9, rtol=1e-6)


def test_float16_mean_stores_the_sum_in_float16():
    """Finding (the book's code uses it): mxnet.np's float16 mean overflows when the sum
    passes 65504, although the mean (4e4) is representable."""
    assert onp.isinf(float(np.array([4e4, 4e4], dtype="float16").mean()))


def test_subnormal_python_scalar_is_refused():
    """Finding: an array operation with a subnormal Python scalar raises (the scalar goes
    through MXNet's parameter parser); equiv's mxnet.scratch adapter passes such a momentum
    as 0.0."""
    with pytest.raises(mx.base.MXNetError, match="Out of range value for scalar"):
        (np.ones(2, dtype="float64") * 5e-324).asnumpy()
    assert float((np.ones(1, dtype="float64") * 2.3e-308)[0]) == pytest.approx(2.3e-308, rel=1e-15)


def test_scratch_layer_defaults_equal_adapter_path():
    """At the book's own setting (eps 1e-12, momentum 0.1) the adapter's function path equals
    the book layer's own forward."""
    from equiv.registry import load
    A = load("mxnet.scratch")
    a = A(3, 4, dtype="float64")
    x = _x((4, 3, 2, 2))
    y_layer = a.forward_train(x)                              # takes the layer path
    b = A(3, 4, dtype="float64", eps=1e-12 * (1 + 1e-15))
    assert b.eps != a.eps
    onp.testing.assert_allclose(b.forward_train(x), y_layer, rtol=1e-12, atol=1e-12)
    onp.testing.assert_allclose(a.get_state()["running_mean"], b.get_state()["running_mean"], rtol=1e-12)
