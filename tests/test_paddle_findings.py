"""Measured behaviours of paddle.nn.BatchNorm1D/2D (PaddlePaddle 3.3.1, CPU) that the generic
properties do not express: use_global_stats against train()/eval(), float32 momentum, a batch of
one, the dtypes the CPU kernel has, the default dtype the parameters are made in.

Python source: paddle/nn/layer/norm.py (_BatchNormBase) and paddle/nn/functional/norm.py
(batch_norm) of the installed wheel; the kernel's signature: paddle/include/paddle/phi/kernels/
batch_norm_kernel.h; its body: paddle/phi/kernels/cpu/batch_norm_kernel.cc (PaddlePaddle/Paddle,
phi::BatchNormKernel; not shipped in the wheel).
"""
import numpy as np
import pytest

import reference as ref

paddle = pytest.importorskip("paddle", reason="install it with: pip install paddlepaddle==3.3.1")

# _BatchNormBase.forward warns on every training call (paddle/nn/layer/norm.py:885-887)
pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track")


def _x(shape=(8, 3), seed=0, mean=1.0):
    return np.random.default_rng(seed).standard_normal(shape) + mean


def _layer(c=3, dtype="float64", cls=None, **kw):
    from equiv.backends.paddle import default_dtype
    with default_dtype(dtype):
        layer = (cls or paddle.nn.BatchNorm1D)(c, **kw)
    layer._mean.set_value(np.full(c, 5.0, dtype))
    layer._variance.set_value(np.full(c, 4.0, dtype))
    return layer


def _t(a, dtype="float64", grad=False):
    t = paddle.to_tensor(np.asarray(a, dtype=dtype))
    t.stop_gradient = not grad
    return t


def _kind(y, x, eps=1e-5):
    y_batch, _, _ = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=eps)
    y_running = ref.batch_norm_infer(x, np.ones(3), np.zeros(3), np.full(3, 5.0), np.full(3, 4.0), eps=eps)
    return "batch" if np.allclose(y, y_batch, atol=1e-6) else "running" if np.allclose(y, y_running, atol=1e-6) \
        else "other"


@pytest.mark.parametrize("use_global_stats,mode,statistics,moved", [
    (None, "train", "batch", True), (None, "eval", "running", False),
    (True, "train", "running", False), (True, "eval", "running", False),
    (False, "train", "batch", True), (False, "eval", "batch", True),
])
def test_use_global_stats_overrides_the_mode(use_global_stats, mode, statistics, moved):
    """Finding: use_global_stats, when set, decides alone. None (the default) follows train()/eval();
    True normalizes with the running statistics and never updates them, even in train(); False uses
    the batch statistics *and updates the running statistics in eval()*: an evaluation pass over a
    layer built with use_global_stats=False changes the checkpoint. Source: batch_norm passes
    is_test = not training and trainable_statistics = not use_global_stats
    (paddle/nn/functional/norm.py:235-239 and 241-253); the kernel computes batch statistics and
    updates the running ones unless test_mode = is_test && !trainable_statistics or use_global_stats
    (phi::BatchNormKernel, `bool global_stats = test_mode || use_global_stats`)."""
    layer = getattr(_layer(use_global_stats=use_global_stats), mode)()
    x = _x()
    assert _kind(layer(_t(x)).numpy(), x) == statistics
    assert (not np.allclose(layer._mean.numpy(), 5.0)) == moved


def test_use_global_stats_true_in_training_differentiates_through_the_running_statistics():
    """In train() with use_global_stats=True the gradient is the inference layer's: dx = dy·gamma/sqrt(var + eps)."""
    layer = _layer(use_global_stats=True).train()
    xt = _t(_x(), grad=True)
    y = layer(xt)
    y.backward(paddle.ones_like(y))
    np.testing.assert_allclose(xt.grad.numpy(), 1 / np.sqrt(4.0 + 1e-5), rtol=1e-12)


def test_momentum_is_float32():
    """Finding: `float momentum` (paddle/include/paddle/phi/kernels/batch_norm_kernel.h:31): in float64
    the new batch weighs 1 − float32(0.9) = 0.10000002384, not 0.1 (paddle-momentum-float32)."""
    layer = _layer(1)
    layer._mean.set_value(np.zeros(1))
    layer(_t([[1.0], [3.0]]))                                  # batch mean 2
    w = float(layer._mean.numpy()[0]) / 2.0
    assert w == pytest.approx(1 - float(np.float32(0.9)), rel=1e-15, abs=0)
    assert abs(w - 0.1) > 2e-8


def test_eps_is_float32():
    """Finding: `float epsilon` (batch_norm_kernel.h:32): a float64 layer normalizes with float32(0.1)."""
    layer = _layer(1, epsilon=0.1)
    y = layer(_t([[-1.0], [1.0]])).numpy()[1, 0]             # batch var 1
    assert y == pytest.approx(1 / np.sqrt(1 + float(np.float32(0.1))), rel=1e-15, abs=0)
    assert abs(y - 1 / np.sqrt(1.1)) > 5e-10


@pytest.mark.parametrize("cls,shape", [("BatchNorm1D", (1, 3)), ("BatchNorm2D", (1, 3, 1, 1))])
def test_batch_of_one_returns_the_input(cls, shape):
    """Finding: with one value per channel in training the kernel copies x to y and returns
    ("Only 1 element in normalization dimension, we skip the batch norm calculation, let y = x",
    phi::BatchNormKernel): gamma and beta are not applied, the running statistics stay, and the
    gradient is the identity's (dx = dy, dgamma = dbeta = 0). PyTorch raises, the others output beta."""
    layer = _layer(cls=getattr(paddle.nn, cls)).train()
    layer.weight.set_value(np.full(3, 2.0))
    layer.bias.set_value(np.full(3, 0.5))
    x = np.arange(3.0).reshape(shape) + 1
    xt = _t(x, grad=True)
    y = layer(xt)
    y.backward(paddle.full_like(y, 3.0))
    np.testing.assert_array_equal(y.numpy(), x)
    np.testing.assert_array_equal(layer._mean.numpy(), 5.0)
    np.testing.assert_array_equal(xt.grad.numpy(), 3.0)
    np.testing.assert_array_equal(layer.weight.grad.numpy(), 0.0)
    np.testing.assert_array_equal(layer.bias.grad.numpy(), 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cpu_kernel_has_no_half_precision(dtype):
    """The CPU kernel is registered for float32 and float64 only (PD_REGISTER_KERNEL(batch_norm, CPU,
    ..., float, double)): float16 and bfloat16 input is an error (paddle.builtin's dtypes)."""
    layer = _layer(dtype="float32")
    x = paddle.to_tensor(_x().astype("float32")).astype(dtype)
    with pytest.raises(RuntimeError, match="not registered"):
        layer(x)


def test_parameters_take_the_default_dtype():
    """A layer's parameters and statistics are made in paddle.get_default_dtype() (float32 unless set;
    _BatchNormBase.__init__, paddle/nn/layer/norm.py:784-787); float64 input into such a layer is an
    error, not a cast (the adapter builds under the case's dtype)."""
    assert paddle.get_default_dtype() == "float32"
    layer = paddle.nn.BatchNorm1D(3)
    assert layer.weight.dtype == paddle.float32 and layer._variance.dtype == paddle.float32
    with pytest.raises(ValueError, match="does not match the type"):
        layer(_t(_x()))


def test_state_names():
    """The checkpoint names a porter reads and writes (equiv.conventions.STATE_NAMES)."""
    from equiv.conventions import STATE_NAMES
    assert tuple(paddle.nn.BatchNorm2D(3).state_dict()) == STATE_NAMES["paddle.builtin"]


def test_nhwc_layer_is_the_nchw_layer_transposed():
    """data_format="NHWC" (the path paddle.builtin+nhwc) gives the NCHW layer's output and running
    statistics, transposed (the kernel's NHWC branch sums the channels in another order: equal to a
    few ulps, not bit for bit)."""
    x = np.random.default_rng(1).standard_normal((4, 3, 5, 2)) * 3 + 2
    a, b = _layer(cls=paddle.nn.BatchNorm2D), _layer(cls=paddle.nn.BatchNorm2D, data_format="NHWC")
    ya = a(_t(x)).numpy()
    yb = b(_t(x.transpose(0, 2, 3, 1))).numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(yb, ya, rtol=0, atol=1e-14)
    np.testing.assert_allclose(b._variance.numpy(), a._variance.numpy(), rtol=1e-14)
