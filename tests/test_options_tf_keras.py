"""Keras 2's BatchNormalization (tf_keras 2.21.0, tf env) beyond the protocol: its kernel choice
(``fused``) and the options that are no ``equiv.options`` row, ``renorm`` (Ioffe 2017, batch renormalization:
the oracle reference/renorm.py), ``virtual_batch_size`` (ghost batches) and ``adjustment``, each measured
against NumPy and pinned with its source line. Lines cited are
tf_keras/src/layers/normalization/batch_normalization.py (BN) of tf_keras 2.21.0. The fused kernel's running
variance is the adapters' (tf_keras+fused declares it, tf-keras2-default-fused-unbiased-variance documents
the default's)."""
import numpy as np
import pytest

import reference as ref
from equiv import tolerance as tol
from equiv import tolerance_renorm as tr
from reference.options import batch_norm_train_plain
from reference.renorm import batch_renorm_train, update_renorm_stats

tf = pytest.importorskip("tensorflow", reason="install it with: pip install tensorflow")
tf_keras = pytest.importorskip("tf_keras", reason="install it with: pip install tf_keras==2.21.0")
BN = tf_keras.layers.BatchNormalization
EPS = 1e-3


def _x(shape, seed=0, scale=3.0, offset=2.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + offset


def _bn(x, eps=EPS):
    """x̂ per channel (the last axis), biased batch variance."""
    return batch_norm_train_plain(x, eps=eps, axis=-1)[0]


# --- fused -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,dtype,fused", [((8, 3), "float32", False), ((4, 2, 2, 3), "float32", True),
                                               ((4, 2, 2, 3), "float64", False), ((8, 3), "float64", False)])
def test_default_fused_is_decided_by_rank_and_dtype(shape, dtype, fused):
    """fused=None stays None where the fused kernel can be used (BN:230-237; never for float64, BN:296-300)
    and build makes it ``rank in (4, 5)`` (BN:355-357): fused exactly for 4-D float32 input."""
    layer = BN(dtype=dtype)
    layer(tf.constant(_x(shape), dtype=dtype), training=True)
    assert layer.fused is fused


def test_fused_true_refuses_2d_input_and_float64():
    """fused=True: a ValueError for rank 2 at the first call (BN:358-363) and for a float64 layer in the
    constructor (BN:296-300); what a user reaches the kernel with on (N, C) is a reshape to (N, 1, 1, C)."""
    with pytest.raises(ValueError, match="only support 4D or 5D"):
        BN(fused=True)(tf.constant(_x((8, 3)), dtype="float32"), training=True)
    with pytest.raises(ValueError, match="compute dtype is float16, bfloat16, or float32"):
        BN(fused=True, dtype="float64")


@pytest.mark.parametrize("eps", [1e-8, 1e-6])
def test_fused_kernel_takes_eps_below_1e_5_as_given(eps):
    """No eps floor on the CPU: the output of fused=True with eps 1e-8 or 1e-6 is x̂ with that eps, not with
    the 1.001e-5 that tf.nn.fused_batch_norm once forced (TensorFlow 2.21's takes epsilon as given,
    tensorflow/python/ops/nn_impl.py:1589-1595); a channel of variance 2.5e-7 shows the difference."""
    x = np.zeros((4, 1, 1, 3))
    x[3] = 1e-3
    x = x.astype(np.float32).astype(np.float64)
    y = BN(fused=True, epsilon=eps, momentum=0.0)(tf.constant(x, dtype="float32"), training=True).numpy()
    np.testing.assert_allclose(y, _bn(x, eps), rtol=1e-5, atol=1e-5)
    assert np.abs(y - _bn(x, 1.001e-5)).max() > 0.1


# --- renorm (Ioffe 2017) -----------------------------------------------------------------------
def _renorm(batches, clipping, momentum, renorm_momentum, eps=EPS):
    """Batch renormalization (the oracle, reference/renorm.py) as tf_keras runs it: r, d from the renorm
    averages μ, σ before this step's update, σ floored at sqrt(eps) (BN:1060-1061), clipped only where a
    clip is given; the renorm averages move with renorm_momentum, the inference ones (moving_mean,
    moving_stddev) with momentum, and moving_variance = max(moving_stddev² − eps, 0). Per step: (y, its
    bound), then the state with each entry's bound (equiv/tolerance_renorm.py, float32)."""
    c = batches[0].shape[-1]
    mu, sigma, mean, stddev, ys = np.zeros(c), np.ones(c), np.zeros(c), np.ones(c), []
    ones, zeros = np.ones(c), np.zeros(c)
    for x in batches:
        floor = np.maximum(sigma, np.sqrt(eps))
        y, mb, vb, r, d = batch_renorm_train(x, ones, zeros, mu, floor, eps=eps, axis=-1, **clipping)
        ys.append((y, tr.train_forward(x, ones, zeros, mu, floor, r, d, eps, "float32", -1)))
        new = [update_renorm_stats(m, s, mb, vb, eps=eps, new_batch_weight=1 - w)
               for m, s, w in ((mu, sigma, renorm_momentum), (mean, stddev, momentum))]
        bounds = {name: (tol.running_stats(x, m0, ones, m1, ones, 1 - w, "float32", -1)[0],
                         tr.moving_std(x, s0, s1, 1 - w, eps, "float32", -1))
                  for name, (m0, s0), (m1, s1), w in (("renorm", (mu, sigma), new[0], renorm_momentum),
                                                      ("moving", (mean, stddev), new[1], momentum))}
        (mu, sigma), (mean, stddev) = new
    state = dict(moving_mean=(mean, bounds["moving"][0]), moving_stddev=(stddev, bounds["moving"][1]),
                 moving_variance=(np.maximum(stddev ** 2 - eps, 0),
                                  tr.variance_from_std(stddev, bounds["moving"][1], eps, "float32")),
                 renorm_mean=(mu, bounds["renorm"][0]), renorm_stddev=(sigma, bounds["renorm"][1]))
    return ys, state


@pytest.mark.parametrize("clipping", [{}, {"rmax": 1.5, "rmin": 1 / 1.5, "dmax": 0.5}])
def test_renorm_is_ioffe_batch_renormalization_with_its_own_averages(clipping):
    """renorm=True (float32): y = γ·(x̂·r + d) + β with r, d from the renorm averages before the update
    (BN:1056-1064), clipped by renorm_clipping's rmin, rmax, dmax where given, else not at all
    (BN:1069-1078), never differentiated (BN:731-733); renorm_mean and renorm_stddev move with
    renorm_momentum (BN:1087-1113), moving_mean and moving_stddev with momentum, moving_variance is
    moving_stddev² − eps, relu'd (BN:751-763). Three steps against the oracle, under its float32 bounds."""
    batches = [_x((8, 3), seed=s).astype(np.float32).astype(np.float64) for s in range(3)]
    layer = BN(renorm=True, renorm_clipping=clipping or None, renorm_momentum=0.5, momentum=0.9, epsilon=EPS)
    ys = [layer(tf.constant(x, dtype="float32"), training=True).numpy() for x in batches]
    want, state = _renorm(batches, clipping, momentum=0.9, renorm_momentum=0.5)
    for i, (y, (w, bound)) in enumerate(zip(ys, want)):
        tol.assert_close(f"step {i} y", y, w, bound)
    for name, (value, bound) in state.items():
        tol.assert_close(name, getattr(layer, name).numpy().reshape(-1), value, bound)
    # not batch normalization in training: the first step alone already differs (r = σB, d = μB with σ = 1, μ = 0)
    assert np.abs(ys[0] - _bn(batches[0])).max() > 0.5
    # inference: the moving averages the layer holds (checked above), as without renorm
    y = layer(tf.constant(batches[0], dtype="float32"), training=False).numpy()
    mean, var = (getattr(layer, n).numpy().reshape(-1).astype(np.float64) for n in ("moving_mean", "moving_variance"))
    tol.assert_close("inference", y, ref.batch_norm_infer(batches[0], np.ones(3), np.zeros(3), mean, var, eps=EPS,
                                                          axis=-1),
                     tol.infer_forward(batches[0], np.ones(3), np.zeros(3), mean, var, EPS, "float32", -1))


def test_renorm_fails_for_float64_and_refuses_fused():
    """A float64 renorm layer fails at its first training call: tf.maximum(renorm_stddev, tf.sqrt(epsilon))
    (BN:1061) meets a float64 variable with a float32 constant; fused=True with renorm is a ValueError
    (BN:271-274), and the default is then unfused."""
    with pytest.raises(tf.errors.InvalidArgumentError, match="double tensor but is a float tensor"):
        BN(renorm=True, dtype="float64")(tf.constant(_x((8, 3))), training=True)
    with pytest.raises(ValueError, match="renorm"):
        BN(renorm=True, fused=True)
    assert BN(renorm=True).fused is False


# --- virtual_batch_size (ghost batches) --------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 3), (6, 2, 2, 3)])
def test_ghost_batches_are_strided_not_contiguous(shape):
    """virtual_batch_size=v reshapes the batch to (v, N/v, ...) (BN:559-590) and reduces over the first axis
    (BN:617-619): ghost batch j is the samples j, j + N/v, j + 2N/v, ... (every (N/v)-th sample), not N/v
    contiguous runs of v; each is normalized with its own biased statistics."""
    x = _x(shape, seed=1)
    n, v = shape[0], shape[0] // 2
    y = BN(virtual_batch_size=v, epsilon=EPS, dtype="float64")(tf.constant(x), training=True).numpy()
    strided, contiguous = np.empty_like(x), np.empty_like(x)
    for j in range(n // v):
        strided[j::n // v] = _bn(x[j::n // v])
        contiguous[j * v:(j + 1) * v] = _bn(x[j * v:(j + 1) * v])
    np.testing.assert_allclose(y, strided, rtol=1e-12, atol=1e-12)
    assert np.abs(y - contiguous).max() > 0.1


def test_ghost_batches_update_running_stats_once_with_the_mean_of_their_statistics():
    """One moving-average update per call with the mean over ghost batches of their means and of their biased
    variances (BN:690-697; the comment there says a sequential update per ghost batch would be correct),
    so the running variance misses the spread between ghost-batch means; the moving statistics are
    shaped (1, 1, C) (BN:412-421). Inference normalizes the whole batch with them. A batch size that v
    does not divide fails in the reshape."""
    x = _x((8, 3), seed=2)
    layer = BN(virtual_batch_size=4, momentum=0.0, epsilon=EPS, dtype="float64")
    layer(tf.constant(x), training=True)
    ghosts = [x[0::2], x[1::2]]
    mean = np.mean([g.mean(axis=0) for g in ghosts], axis=0)
    var = np.mean([g.var(axis=0) for g in ghosts], axis=0)
    assert layer.moving_mean.shape == (1, 1, 3)
    np.testing.assert_allclose(layer.moving_mean.numpy().ravel(), mean, rtol=1e-12)
    np.testing.assert_allclose(layer.moving_variance.numpy().ravel(), var, rtol=1e-12)
    assert np.abs(var - x.var(axis=0)).max() > 0.1
    y = layer(tf.constant(x), training=False).numpy()
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + EPS), rtol=1e-12, atol=1e-12)
    with pytest.raises(tf.errors.InvalidArgumentError, match="reshape"):
        BN(virtual_batch_size=3, dtype="float64")(tf.constant(x), training=True)
    with pytest.raises(ValueError, match="virtual_batch_size"):
        BN(virtual_batch_size=4, fused=True)


# --- adjustment --------------------------------------------------------------------------------
def test_adjustment_scales_and_shifts_x_hat_in_training_only():
    """adjustment(shape) -> (a, b): in training y = γ·(a·x̂ + b) + β (BN:650-660, composed by
    _compose_transforms), the moving statistics as without it; inference ignores it. It cannot be combined
    with virtual_batch_size (BN:346-350) or fused=True (BN:290-294)."""
    x = _x((8, 3), seed=3)
    a, b = 2.0, 0.5

    def adjustment(shape):
        return tf.fill([3], tf.constant(a, tf.float64)), tf.fill([3], tf.constant(b, tf.float64))
    layer = BN(adjustment=adjustment, momentum=0.0, epsilon=EPS, dtype="float64",
               gamma_initializer=tf_keras.initializers.Constant(3.0),
               beta_initializer=tf_keras.initializers.Constant(0.25))
    y = layer(tf.constant(x), training=True).numpy()
    np.testing.assert_allclose(y, 3.0 * (a * _bn(x) + b) + 0.25, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.moving_variance.numpy(), x.var(axis=0), rtol=1e-12)
    y = layer(tf.constant(x), training=False).numpy()
    np.testing.assert_allclose(y, ref.batch_norm_infer(x, np.full(3, 3.0), np.full(3, 0.25), x.mean(axis=0),
                                                       x.var(axis=0), eps=EPS), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="adjustment"):
        BN(adjustment=adjustment, virtual_batch_size=4)(tf.constant(x))
    with pytest.raises(ValueError, match="adjustment"):
        BN(adjustment=adjustment, fused=True)
