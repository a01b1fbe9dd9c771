"""Keras 3's BatchNormalization under its layer options (tf env; keras 3.15.1, TensorFlow backend), against
the oracle: ``center``/``scale`` False (the ``affine`` option: False, "no_scale", "no_center"),
the mixed dtype policies (``synchronized=True`` on one device: its variance is pinned by
tests/test_tf_findings.py, its output by the witness below); and what the oracle cannot express,
pinned: a list ``axis`` (refused), ``renorm=True`` (taken; not batch normalization in training: batch
renormalization, held to its oracle, reference/renorm.py, under equiv/tolerance_renorm.py). The
documented divergences of tf.keras under options (equiv.known.OPTION_KNOWN) run as strict xfails. Lines
cited are keras/src/layers/normalization/batch_normalization.py (BN) and
keras/src/backend/tensorflow/nn.py (NN) of keras 3.15.1."""
import numpy as np
import pytest

import reference as ref
from equiv import tolerance as tol
from equiv.known import OPTION_KNOWN
from equiv.properties import PROPERTIES

tf = pytest.importorskip("tensorflow", reason="install it with: pip install tensorflow")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="Keras on its TensorFlow backend")

KNOWN = [d for d in OPTION_KNOWN if d.implementations == ("tf.keras",)]


def _x(shape, seed=0, scale=3.0, offset=2.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + offset


def _adapter(options, c=3, ndim=4, dtype="float64"):
    from equiv.registry import load
    return load("tf.keras")(c, ndim, dtype=dtype, new_batch_weight=0.1, options=options)


@pytest.mark.parametrize("affine,has", [(False, ()), ("no_scale", ("beta",)), ("no_center", ("gamma",))])
def test_center_scale_false_make_no_variable_and_no_gradient(affine, has):
    """center=False / scale=False: no beta / gamma variable (BN:242-261), none applied (BN:353-362): the
    output and dx equal the oracle's with gamma 1 / beta 0 within the float64 bound, and there is no
    gradient of what the layer does not have."""
    a = _adapter({"affine": affine})
    names = {v.name for v in a.layer.weights}
    assert names == {"moving_mean", "moving_variance", *has}
    gamma = np.array([0.5, 2.0, -1.0]) if "gamma" in has else np.ones(3)
    beta = np.array([0.3, -0.7, 1.5]) if "beta" in has else np.zeros(3)
    a.set_state(gamma=gamma, beta=beta, running_mean=np.zeros(3), running_var=np.ones(3))
    x = _x((4, 3, 2, 2), seed=1)
    dy = _x((4, 3, 2, 2), seed=2, offset=0.0)
    y, dx, dgamma, dbeta = a.train_step(x, dy)
    ry = ref.batch_norm_train(x, gamma, beta, eps=a.eps)[0]
    rdx, rdg, rdb = ref.batch_norm_backward(x, gamma, dy, eps=a.eps)
    worst = [tol.assert_close("y", y, ry, tol.train_forward(x, gamma, beta, a.eps, "float64")),
             tol.assert_close("dx", dx, rdx, tol.gradients(x, gamma, dy, a.eps, "float64")[0])]
    assert (dgamma is None) == ("gamma" not in has) and (dbeta is None) == ("beta" not in has)
    if dgamma is not None:
        worst.append(tol.assert_close("dgamma", dgamma, rdg, tol.gradients(x, gamma, dy, a.eps, "float64")[1]))
    if dbeta is not None:
        worst.append(tol.assert_close("dbeta", dbeta, rdb, tol.gradients(x, gamma, dy, a.eps, "float64")[2]))
    assert max(worst) <= 1.0


def test_axis_list_is_refused():
    """A list axis (per (channel, width) statistics on (N, H, W, C): axis=[1, 3]) is refused by the
    constructor's ``self.axis = int(axis)`` (BN:182), as its docstring's "axis: Integer" (BN:72) says,
    though compute_output_shape takes a list (BN:320-323); the oracle's one channel axis cannot express it."""
    with pytest.raises(TypeError, match="int\\(\\) argument must be"):
        keras.layers.BatchNormalization(axis=[1, 3])
    with pytest.raises(TypeError):
        keras.layers.BatchNormalization(axis=(1, 3))


def test_renorm_is_taken_and_is_not_batch_normalization_in_training():
    """renorm=True is accepted (BN:207-231) and adds moving_stddev, renorm_mean, renorm_stddev (BN:277-310).
    With the default renorm_clipping (none) the training output is (x − μ̂)/σ̂·r + d with r = σ/σ_r,
    d = (μ − μ_r)/σ_r (BN:489-500), that is (x − μ_r)/σ_r from the renorm averages before the step: on a
    fresh layer (μ_r = 0, σ_r = 1) the first training output is x itself, not the batch-normalized x
    (off by 6.3 from the oracle on this batch). moving_variance is derived from an average of the std,
    (m·s + (1 − m)·sqrt(v + eps))² − eps (BN:577-586), not the average of the variance."""
    layer = keras.layers.BatchNormalization(renorm=True, dtype="float64", epsilon=1e-5)
    layer.build((None, 2))
    assert {v.name for v in layer.weights} >= {"moving_stddev", "renorm_mean", "renorm_stddev"}
    x = _x((8, 2), seed=3)
    y = layer(tf.constant(x), training=True).numpy()
    ry, mean, var = ref.batch_norm_train(x, np.ones(2), np.zeros(2), eps=1e-5)
    np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-12)
    assert np.abs(y - ry).max() > 1.0
    sd = 0.99 + 0.01 * np.sqrt(var + 1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), sd * sd - 1e-5, rtol=1e-12)
    ema = ref.update_running_stats(np.zeros(2), np.ones(2), mean, var, 8, new_batch_weight=0.01, unbiased=False)
    np.testing.assert_allclose(layer.moving_mean.numpy(), ema[0], rtol=1e-12)
    assert np.abs(layer.moving_variance.numpy() - ema[1]).max() > 1e-3
    # inference is the same for either value (BN:95-97): the moving statistics
    yi = layer(tf.constant(x), training=False).numpy()
    np.testing.assert_allclose(yi, ref.batch_norm_infer(x, np.ones(2), np.zeros(2), layer.moving_mean.numpy(),
                                                        layer.moving_variance.numpy(), eps=1e-5), rtol=1e-12)


RENORM_CLIPS = {"unclipped": {}, "clipped": {"rmax": 1.5, "rmin": 1 / 1.5, "dmax": 0.5}}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(16, 3), (4, 3, 3, 3)], ids=["NC", "NHWC"])
@pytest.mark.parametrize("clip", list(RENORM_CLIPS))
def test_renorm_is_batch_renormalization(clip, shape, dtype):
    """renorm=True against the oracle of batch renormalization (reference/renorm.py, Ioffe 2017) over three
    training steps on batches of other means and scales, under the bounds of equiv/tolerance_renorm.py:
    the output (r, d from renorm_mean/renorm_stddev: BN:489-512; y = γ·(x̂·r + d) + β: BN:366-381, 517-547),
    the gradients with r and d constant (stop_gradient, BN:537-538), and both pairs of moving averages:
    renorm_mean/renorm_stddev with renorm_momentum, moving_mean/moving_stddev with momentum (BN:549-583),
    moving_variance = relu(σ² − eps) (BN:585-588). The paper keeps one pair (its α); Keras two."""
    from equiv import tolerance_renorm as tr
    from reference import renorm as rr
    eps, m, rm, c = 1e-3, 0.9, 0.8, shape[-1]
    layer = keras.layers.BatchNormalization(renorm=True, renorm_clipping=RENORM_CLIPS[clip] or None,
                                            momentum=m, renorm_momentum=rm, epsilon=eps, dtype=dtype)
    layer.build((None,) + shape[1:])
    gamma, beta = np.array([0.5, 2.0, -1.5]), np.array([0.1, -0.3, 2.0])
    layer.gamma.assign(gamma.astype(dtype))
    layer.beta.assign(beta.astype(dtype))
    mu_r, sd_r, mu_m, sd_m = np.zeros(c), np.ones(c), np.zeros(c), np.ones(c)
    ratios = []
    for step, (scale, offset) in enumerate([(2.0, 1.0), (0.5, -0.7), (3.0, 2.5)]):
        x = tf.cast(tf.constant(_x(shape, seed=10 + step, scale=scale, offset=offset)), dtype)
        xr = tf.cast(x, tf.float64).numpy()
        dy = _x(shape, seed=20 + step, scale=1.0, offset=0.0)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.cast(dy, dtype))
        dx, dgamma, dbeta = tape.gradient(loss, [x, layer.gamma, layer.beta])
        ry, mean, var, r, d = rr.batch_renorm_train(xr, gamma, beta, mu_r, np.maximum(sd_r, np.sqrt(eps)), eps=eps,
                                                    axis=-1, **RENORM_CLIPS[clip])
        rdx, rdg, rdb = rr.batch_renorm_backward(xr, gamma, dy, r, d, eps=eps, axis=-1)
        x_hat = ref.batch_norm_train(xr, np.ones(c), np.zeros(c), eps=eps, axis=-1)[0]
        red = tuple(range(len(shape) - 1))
        sums = ((dy * x_hat).sum(axis=red), dy.sum(axis=red))
        b_dx, b_dg, b_db = tr.gradients(xr, gamma, dy, mu_r, sd_r, r, d, eps, dtype, -1, dx=rdx, sums=sums)
        ratios += [tol.assert_close(f"step {step} y", y.numpy(), ry,
                                    tr.train_forward(xr, gamma, beta, mu_r, sd_r, r, d, eps, dtype, -1)),
                   tol.assert_close(f"step {step} dx", dx.numpy(), rdx, b_dx),
                   tol.assert_close(f"step {step} dgamma", dgamma.numpy(), rdg, b_dg),
                   tol.assert_close(f"step {step} dbeta", dbeta.numpy(), rdb, b_db)]
        n = xr.size // c
        (new_mu_r, new_sd_r), (new_mu_m, new_sd_m) = (
            rr.update_renorm_stats(mu, sd, mean, var, eps=eps, new_batch_weight=1 - w)
            for mu, sd, w in ((mu_r, sd_r, rm), (mu_m, sd_m, m)))
        for name, old_mu, new_mu, old_sd, new_sd, w in (("renorm", mu_r, new_mu_r, sd_r, new_sd_r, 1 - rm),
                                                        ("moving", mu_m, new_mu_m, sd_m, new_sd_m, 1 - m)):
            b_mu = tol.running_stats(xr, old_mu, np.ones(c), new_mu, np.ones(c), w, dtype, -1)[0]
            b_sd = tr.moving_std(xr, old_sd, new_sd, w, eps, dtype, -1)
            ratios += [tol.assert_close(f"step {step} {name}_mean", getattr(layer, f"{name}_mean").numpy(), new_mu,
                                        b_mu),
                       tol.assert_close(f"step {step} {name}_stddev", getattr(layer, f"{name}_stddev").numpy(),
                                        new_sd, b_sd)]
        ratios.append(tol.assert_close(f"step {step} moving_variance", layer.moving_variance.numpy(),
                                       np.maximum(new_sd_m ** 2 - eps, 0.0),
                                       tr.variance_from_std(new_sd_m, tr.moving_std(xr, sd_m, new_sd_m, 1 - m, eps,
                                                                                    dtype, -1), eps, dtype)))
        assert n > 1
        mu_r, sd_r, mu_m, sd_m = new_mu_r, new_sd_r, new_mu_m, new_sd_m
    if clip == "clipped":   # the clipping bites on these batches (else the two settings test the same)
        assert np.any(np.abs(r) == 1.5) or np.any(np.abs(d) == 0.5) or np.any(np.isclose(r, 1 / 1.5))
    assert max(ratios) <= 1.0


@pytest.mark.parametrize("policy,low", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_mixed_policy_float32_variables_and_statistics(policy, low):
    """A mixed policy: float32 variables (autocast=False, BN:242-275), compute dtype float16 / bfloat16, so
    the input reaches call rounded to it; call computes in result_type(x, float32) = float32 (BN:345-348)
    and rounds the output to the compute dtype (BN:405). The output is within the oracle's bound for the
    compute dtype (of the rounded input); the moving statistics within float32's."""
    layer = keras.layers.BatchNormalization(dtype=policy, momentum=0.9, epsilon=1e-3)
    layer.build((None, 3))
    assert (layer.variable_dtype, layer.compute_dtype) == ("float32", low)
    assert all(v.dtype == "float32" for v in layer.weights)
    x = _x((8, 3), seed=4)
    y = layer(tf.constant(x, dtype=tf.float32), training=True)
    assert y.dtype.name == low and layer.moving_mean.dtype == "float32"
    xr = tf.cast(tf.cast(x, low), tf.float64).numpy()
    ones, zeros = np.ones(3), np.zeros(3)
    ry, mean, var = ref.batch_norm_train(xr, ones, zeros, eps=1e-3)
    y64 = tf.cast(y, tf.float64).numpy()
    assert tol.assert_close("y", y64, ry, tol.train_forward(xr, ones, zeros, 1e-3, low)) <= 1.0
    em, ev = ref.update_running_stats(zeros, ones, mean, var, 8, new_batch_weight=0.1, unbiased=False)
    bm, bv = tol.running_stats(xr, zeros, ones, em, ev, 0.1, "float32")
    tol.assert_close("moving mean", layer.moving_mean.numpy(), em, bm)
    tol.assert_close("moving var", layer.moving_variance.numpy(), ev, bv)
    # the statistics are float32's, not the compute dtype's: far tighter than a float16 rounding
    assert np.abs(layer.moving_mean.numpy() - em).max() < 1e-6


@pytest.mark.parametrize("d", KNOWN, ids=lambda d: d.id)
def test_option_witness_lies_in_its_region(d):
    assert d.region(d.witness, d.witness_property) and d.witness.options


@pytest.mark.parametrize("d", [pytest.param(d, marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                                                       reason=d.reason)) for d in KNOWN],
                         ids=lambda d: d.id)
def test_option_witness_diverges(d):
    from equiv.registry import load
    PROPERTIES[d.witness_property].check(load("tf.keras"), d.witness, "cpu")
