"""Measured behaviours of mindspore.nn.BatchNorm1d/2d (MindSpore 2.10.0, CPU, PyNative) that the
generic properties do not express: the default mode, use_batch_statistics, the unbiased running
variance, a batch of one, the dtypes and layouts the CPU accepts, eps limited to (0, 1].

Python source: mindspore/nn/layer/normalization.py (_BatchNorm) and mindspore/nn/cell.py of the
installed wheel. The CPU kernel's source is not in the wheel; the stored oneDNN kernel
(mindspore/ccsrc/plugin/device/cpu/kernel/mkldnn/batch_norm_cpu_kernel.cc, older releases) keeps
oneDNN's biased variance, which 2.10.0 no longer does (measured below).
"""
import numpy as np
import pytest

import reference as ref

ms = pytest.importorskip("mindspore", reason="install it with: pip install mindspore==2.10.0 'numpy<2'")
from mindspore import Tensor, nn  # noqa: E402

from equiv.backends import mindspore as mindspore_backend  # noqa: E402

mindspore_backend.setup()   # PyNative mode, CPU, as the adapter runs


def _x(shape=(8, 3), seed=0, mean=1.0):
    return np.random.default_rng(seed).standard_normal(shape) + mean


def _t(a, dtype="float32"):
    return Tensor(np.asarray(a, dtype=dtype))


def _layer(c=3, cls=nn.BatchNorm1d, **kw):
    layer = cls(c, **kw)
    layer.moving_mean.set_data(_t(np.full(c, 5.0)))
    layer.moving_variance.set_data(_t(np.full(c, 4.0)))
    return layer


def _f64(t):
    return t.asnumpy().astype(np.float64)


def test_a_new_cell_predicts():
    """Cell.__init__ sets training = False (mindspore/nn/cell.py:196): a plain call of a new layer
    normalizes with the running statistics and leaves them alone; set_train() (cell.py:2752) trains."""
    layer = _layer()
    x = _x()
    y = _f64(layer(_t(x)))
    np.testing.assert_allclose(y, ref.batch_norm_infer(x, np.ones(3), np.zeros(3), np.full(3, 5.0), np.full(3, 4.0),
                                                       eps=1e-5), atol=1e-5)
    np.testing.assert_array_equal(_f64(layer.moving_mean), 5.0)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 2, 3)])
def test_running_variance_is_unbiased(shape):
    """Finding: the running variance takes the unbiased batch variance (× m/(m − 1)), as PyTorch,
    unlike the other old-value-momentum frameworks (Keras, Flax, MXNet, Paddle): new =
    0.9·old + 0.1·var·m/(m − 1); the momentum 0.9 reaches the operator as 1 − 0.9
    (mindspore/nn/layer/normalization.py:109)."""
    x = _x(shape)
    layer = _layer(shape[1], nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d).set_train(True)
    layer(_t(x))
    red = (0,) + tuple(range(2, len(shape)))
    m = x.size // shape[1]
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(_f64(layer.moving_variance), 0.9 * 4.0 + 0.1 * x32.var(axis=red) * m / (m - 1),
                               rtol=1e-5)
    np.testing.assert_allclose(_f64(layer.moving_mean), 0.9 * 5.0 + 0.1 * x32.mean(axis=red), rtol=1e-5)


def test_batch_of_one_outputs_beta_and_a_nan_running_variance():
    """Finding: one value per channel in training: the output is beta (x − mean = 0), and the unbiased
    running variance divides 0 by m − 1 = 0: NaN, silently (PyTorch raises for the same reason); the
    running mean moves."""
    layer = _layer().set_train(True)
    layer.beta.set_data(_t(np.full(3, 0.5)))
    y = _f64(layer(_t([[1.0, 2.0, 3.0]])))
    np.testing.assert_allclose(y, 0.5)
    assert np.isnan(_f64(layer.moving_variance)).all()
    np.testing.assert_allclose(_f64(layer.moving_mean), 0.9 * 5.0 + 0.1 * np.array([1.0, 2.0, 3.0]), rtol=1e-6)


@pytest.mark.parametrize("use_batch_statistics,train,statistics,moved", [
    (None, True, "batch", True), (None, False, "running", False),
    (True, False, "batch", True), (False, True, "running", False),
])
def test_use_batch_statistics_overrides_set_train(use_batch_statistics, train, statistics, moved):
    """use_batch_statistics, when set, decides alone (_BatchNorm.construct, normalization.py:143-175):
    True trains (batch statistics, running statistics updated) even after set_train(False); False
    predicts even in training."""
    layer = _layer(use_batch_statistics=use_batch_statistics).set_train(train)
    x = _x()
    y = _f64(layer(_t(x)))
    y_batch, _, _ = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-5)
    y_run = ref.batch_norm_infer(x, np.ones(3), np.zeros(3), np.full(3, 5.0), np.full(3, 4.0), eps=1e-5)
    assert np.allclose(y, y_batch if statistics == "batch" else y_run, atol=1e-5)
    assert (not np.allclose(_f64(layer.moving_mean), 5.0)) == moved


def test_float16_layer_never_updates_its_running_statistics():
    """Finding: a layer built with dtype=mindspore.float16 normalizes float16 input with the batch
    statistics in training but never writes its running statistics on the CPU (mean stays 0, variance
    1), silently; a float32 layer fed float16 input (what the adapter runs) updates them."""
    x = np.array([[1.0], [3.0]])
    half = nn.BatchNorm1d(1, dtype=ms.float16).set_train(True)
    np.testing.assert_allclose(_f64(half(_t(x, "float16"))).ravel(), [-1.0, 1.0], atol=1e-3)
    assert _f64(half.moving_mean)[0] == 0.0 and _f64(half.moving_variance)[0] == 1.0
    full = nn.BatchNorm1d(1).set_train(True)
    full(_t(x, "float16"))
    np.testing.assert_allclose(_f64(full.moving_mean), [0.2], rtol=1e-6)
    np.testing.assert_allclose(_f64(full.moving_variance), [0.9 + 0.1 * 2.0], rtol=1e-6)


def test_no_float64_on_the_cpu():
    """The BatchNorm primitive accepts float16 and float32 input only."""
    layer = nn.BatchNorm1d(3, dtype=ms.float64).set_train(True)
    with pytest.raises(TypeError, match="Float16.*Float32"):
        layer(_t(_x(), "float64"))


def test_nhwc_is_gpu_only():
    """data_format="NHWC" raises on the CPU (normalization.py:77-79): no NHWC path here."""
    with pytest.raises(ValueError, match="NHWC"):
        nn.BatchNorm2d(3, data_format="NHWC")


@pytest.mark.parametrize("eps", [1.5, 4.0])
def test_eps_above_one_is_refused(eps):
    """The primitive checks eps in (0, 1] ("the eps must be in (0,1]", mindspore/ops/infer/
    ops_func_impl/batch_norm.cc:156, in the message): an eps any other framework accepts is a
    ValueError at the first call (the adapter raises Unsupported; affine_invariance then runs with
    a = 1 where a²·eps > 1)."""
    layer = nn.BatchNorm1d(3, eps=eps).set_train(True)
    with pytest.raises(ValueError, match=r"eps must be in \(0,1\]"):
        layer(_t(_x()))


def test_state_names():
    """The checkpoint keys of a BatchNorm2d cell named bn1 (equiv.conventions.STATE_NAMES)."""
    from equiv.conventions import STATE_NAMES

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(2)

        def construct(self, x):
            return self.bn1(x)

    keys = set(Net().parameters_dict())
    assert keys == {f"bn1.{n}" for n in STATE_NAMES["mindspore.nn"]}
