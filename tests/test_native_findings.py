"""Measured behaviours of tinygrad.nn.BatchNorm and mlx.nn.BatchNorm that the generic properties do
not express: tinygrad's process-wide mode switch and its batch of one; MLX's float32 arrays from
float64 NumPy data and its batch of one."""
import shutil

import numpy as np
import pytest


def _x(shape=(8, 3), seed=0, mean=1.0):
    return np.random.default_rng(seed).standard_normal(shape) + mean


@pytest.fixture
def tinygrad():
    tg = pytest.importorskip("tinygrad", reason="install it with: pip install tinygrad==0.14.0")
    if shutil.which("clang") is None:
        pytest.skip("tinygrad's CPU device needs clang: apt-get install clang")
    return tg


def test_tinygrad_mode_is_one_process_wide_variable(tinygrad):
    """Finding: the mode is the context variable TRAINING (tinygrad/helpers.py:237), read by every layer at
    every call (tinygrad/nn/__init__.py:43, 55); there is no per-layer switch and, in 0.14.0, no
    Tensor.training / Tensor.train(). A plain call predicts from the running statistics."""
    from tinygrad import Context, Tensor, dtypes, nn
    assert not hasattr(Tensor, "train") and not hasattr(Tensor, "training")
    with Context(DEV="CPU"):
        a, b = nn.BatchNorm(3), nn.BatchNorm(3)
    x = Tensor(_x(), device="CPU", dtype=dtypes.float32)
    np.testing.assert_allclose(a(x).numpy(), x.numpy() / np.sqrt(1 + 1e-5), rtol=1e-6)   # inference
    assert np.all(a.running_mean.numpy() == 0)
    with Context(TRAINING=1):                      # both layers train, whoever set the context
        ya, yb = a(x).numpy(), b(x).numpy()
    np.testing.assert_allclose(ya, yb)
    np.testing.assert_allclose(ya.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(a.running_mean.numpy(), 0.1 * x.numpy().mean(axis=0), rtol=1e-5)


def test_tinygrad_batch_of_one_divides_by_zero(tinygrad):
    """Finding: a training forward with one value per channel raises ZeroDivisionError from the
    unbiased correction x.numel()/(x.numel() − C) in Python (tinygrad/nn/__init__.py:57)."""
    from tinygrad import Context, Tensor, nn
    with Context(DEV="CPU"):
        layer = nn.BatchNorm(3)
    with Context(TRAINING=1), pytest.raises(ZeroDivisionError):
        layer(Tensor([[1.0, 2.0, 3.0]], device="CPU"))


def test_mlx_array_of_float64_numpy_is_float32():
    """Finding: mx.array of a float64 NumPy array is float32 unless a dtype is given: a float64
    checkpoint loaded with mx.array(...) is rounded to float32 (the adapter passes the dtype)."""
    mx = pytest.importorskip("mlx.core", reason="install it with: pip install 'mlx[cpu]==0.32.4'")
    v = np.array([0.1, 1 / 3])
    assert mx.array(v).dtype == mx.float32
    assert mx.array(v, dtype=mx.float64).dtype == mx.float64


def test_mlx_batch_of_one_raises():
    """A training forward with one value per channel raises ValueError
    (mlx/nn/layers/normalization.py:397-400); in eval() it normalizes with the running statistics."""
    mx = pytest.importorskip("mlx.core", reason="install it with: pip install 'mlx[cpu]==0.32.4'")
    from mlx import nn
    layer = nn.BatchNorm(3)
    x = mx.array([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer(x)
    layer.eval()
    np.testing.assert_allclose(np.array(layer(x)), np.array([[1.0, 2.0, 3.0]]) / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_mlx_float16_affine_input_rounds_to_a_constant_channel_and_eps_away():
    """Finding mlx-fp16-eps-underflow on affine_invariance's a·x + b (equiv/known/mlx.py): with a = 6.846,
    b = 2490.25, x = −1971, −1971, −1971, −1970 becomes −11003.8 (3×) and −10996.9, all −11000 in float16
    (spacing 8); mx.var is 0, var + eps·a² (eps·a² = 4.7e-9, a weak Python float) is float16 0
    (mlx/nn/layers/normalization.py:414), rsqrt inf and (x − mean)·inf = 0·inf = NaN."""
    mx = pytest.importorskip("mlx.core", reason="install it with: pip install 'mlx[cpu]==0.32.4'")
    from mlx import nn
    a, b = 6.846288649230666, 2490.25273896
    x = mx.array([[v * a + b] for v in (-1971.0, -1971.0, -1971.0, -1970.0)], dtype=mx.float64).astype(mx.float16)
    eps = 1e-10 * a * a
    var = mx.var(x, axis=0)
    v_eps = var + eps
    layer = nn.BatchNorm(1, eps=eps)
    layer.weight, layer.bias = mx.array([7.89453125], dtype=mx.float16), mx.array([-0.06097412], dtype=mx.float16)
    y = layer(x)
    f = lambda t: np.array(t.astype(mx.float32)).ravel()  # noqa: E731
    assert f(x).tolist() == [-11000.0] * 4
    assert v_eps.dtype == mx.float16 and f(var).tolist() == [0.0] and f(v_eps).tolist() == [0.0]
    assert np.isinf(f(mx.rsqrt(v_eps))).all() and np.isnan(f(y)).all()
    layer32 = nn.BatchNorm(1, eps=eps)   # float32 holds eps·a²: the output is beta
    np.testing.assert_allclose(f(layer32(x.astype(mx.float32))), [0.0] * 4, atol=1e-6)
