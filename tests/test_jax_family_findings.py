"""Measured behaviours of Haiku, Equinox and jax.stax that the generic properties do not express:
Haiku's test_local_stats switch and its required arguments, Equinox's NameError without a vmap
and the variance its inference reads, stax's missing running statistics."""
import inspect

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="install it with: pip install jax")
jnp = jax.numpy

import reference as ref  # noqa: E402
from equiv.backends import jax as jax_backend  # noqa: E402

jax_backend.setup()   # float64 on (jax_enable_x64), as equiv.registry does before it loads JAX code


def _x(shape, seed=0, mean=0.5):
    return np.random.default_rng(seed).standard_normal(shape) * 2.0 + mean


# --- haiku -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hk():
    return pytest.importorskip("haiku", reason="install it with: pip install jax dm-haiku")


def test_haiku_test_local_stats_normalizes_with_the_batch_and_keeps_the_averages(hk):
    """is_training=False, test_local_stats=True (haiku/_src/batch_norm.py:169, 186): the batch's
    mean and variance normalize the output, as in training, and the moving averages are returned
    unchanged, bit for bit; test_local_stats=False reads the moving averages. After one training
    step (decay 0.9) the two inference outputs differ by up to 6.7 here."""
    f = hk.transform_with_state(lambda x, t, local: hk.BatchNorm(True, True, decay_rate=0.9)(x, t, local))
    x0, x = _x((8, 3), 0), _x((8, 3), 1) * np.array([1.0, 3.0, 0.5]) + np.array([0.0, 2.0, -1.0])
    params, state = f.init(None, jnp.asarray(x0), True, False)
    _, state = f.apply(params, state, None, jnp.asarray(x0), True, False)        # one update: averages ≠ x's
    y_local, after = f.apply(params, state, None, jnp.asarray(x), False, True)
    y_batch, _, _ = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-5, axis=-1)
    np.testing.assert_allclose(np.asarray(y_local), y_batch, rtol=1e-12, atol=1e-12)
    for ema in state:
        for k in state[ema]:
            np.testing.assert_array_equal(np.asarray(after[ema][k]), np.asarray(state[ema][k]), err_msg=(ema, k))
    y_infer, _ = f.apply(params, state, None, jnp.asarray(x), False, False)
    mean = np.asarray(state["batch_norm/~/mean_ema"]["average"]).ravel()
    var = np.asarray(state["batch_norm/~/var_ema"]["average"]).ravel()
    np.testing.assert_allclose(np.asarray(y_infer), ref.batch_norm_infer(x, np.ones(3), np.zeros(3), mean, var,
                                                                          eps=1e-5, axis=-1), rtol=1e-12)
    assert np.abs(np.asarray(y_infer) - np.asarray(y_local)).max() > 5.0            # 6.7: a different mode


def test_haiku_decay_rate_and_is_training_are_required(hk):
    """hk.BatchNorm has no default decay_rate (batch_norm.py:68) and its call no default
    is_training (:130): Python's TypeError names the argument."""
    x = jnp.ones((2, 3))
    with pytest.raises(TypeError, match=r"^__init__\(\) missing 1 required positional argument: 'decay_rate'$"):
        hk.transform_with_state(lambda x: hk.BatchNorm(True, True)(x, True)).init(None, x)
    with pytest.raises(TypeError, match=r"^BatchNorm.__call__\(\) missing 1 required positional argument: "
                                        r"'is_training'$"):
        hk.transform_with_state(lambda x: hk.BatchNorm(True, True, 0.9)(x)).init(None, x)


# --- equinox ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eqx():
    return pytest.importorskip("equinox", reason="install it with: pip install jax equinox")


@pytest.mark.parametrize("mode", ["batch", "ema"])
def test_equinox_without_vmap_raises_name_error(eqx, mode):
    """eqx.nn.BatchNorm takes its batch statistics with lax.pmean over the named axis
    (equinox/nn/_batch_norm.py:212-214) and documents a NameError without a vmap (:37-38). The
    message is JAX's (JAX appends a line on its traceback filtering), and its advice names
    shard_map, not the vmap Equinox asks for."""
    model, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(3, "batch", mode=mode)
    with pytest.raises(NameError, match=r"^Found an unbound axis name: batch\. To fix this, please call psum "
                                        r"under `jax\.shard_map`\.(\n|$)"):
        model(jnp.ones(3), state)
    model, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(3, "batch", mode=mode)     # the failed call used it
    y, _ = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(jnp.asarray(_x((4, 3))), state)
    assert y.shape == (4, 3)


def test_equinox_inference_reads_the_biased_variance(eqx):
    """The docstring says inference uses the "unbiased variance" (_batch_norm.py:46-48); the
    variance kept is the biased one, (y − mean)² averaged (:213). Measured on a fresh
    mode="batch" layer, momentum m = 0.99, one training step on 4 rows: hidden var = m·1 + (1 −
    m)·v, and inference reads hidden/(1 − m) (:249-251) = m/(1 − m) + v = 99 + v with v the
    biased batch variance (to 1e-13); the unbiased one would be 4/3 as large (off by 0.9 here).
    So zero debiasing of a variance started at 1 also inflates the first inference variances by
    m^t/(1 − m^t)."""
    model, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(3, "batch", mode="batch", dtype=jnp.float64)
    x = _x((4, 3), mean=3.0)
    vmapped = jax.vmap(lambda x, s, inference: model(x, s, inference=inference), axis_name="batch",
                       in_axes=(0, None, None), out_axes=(0, None))
    _, state = vmapped(jnp.asarray(x), state, False)
    hidden_mean, _ = state.get(model.batch_state_index)
    probe = np.zeros((1, 3))                      # inference output of 0: −mean/sqrt(var + eps)
    y, _ = vmapped(jnp.asarray(probe), state, True)
    mean = np.asarray(hidden_mean) / (1 - 0.99)
    var = (mean / -np.asarray(y)[0]) ** 2 - 1e-5
    biased, unbiased = x.var(axis=0), x.var(axis=0, ddof=1)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var - 99.0, biased, rtol=1e-10, atol=1e-10)
    assert np.abs(var - 99.0 - unbiased).max() > 0.5


# --- jax.stax -----------------------------------------------------------------------------

def test_stax_batchnorm_keeps_no_running_statistics():
    """stax.BatchNorm's init_fun returns (beta, gamma) and no state; its apply_fun(params, x,
    **kwargs) (jax/example_libraries/stax.py:121-142) takes no mode and swallows the keywords,
    so the mode="test" that stax.serial hands to Dropout leaves it in "training": every call
    normalizes with the statistics of the batch it is given. Measured: a batch of one gives beta,
    whatever the earlier batches were."""
    from jax.example_libraries import stax
    init_fun, apply_fun = stax.BatchNorm(axis=(0,))
    out_shape, params = init_fun(jax.random.key(0), (8, 3))
    assert out_shape == (8, 3) and len(params) == 2 and [p.shape for p in params] == [(3,), (3,)]
    assert list(inspect.signature(apply_fun).parameters) == ["params", "x", "kwargs"]
    params = (jnp.asarray([0.25, -1.0, 2.0]), jnp.asarray([2.0, 0.5, 1.0]))          # beta, gamma
    x = _x((8, 3), mean=3.0)
    y_train = np.asarray(apply_fun(params, jnp.asarray(x)))
    y_ref, _, _ = ref.batch_norm_train(x, np.asarray(params[1]), np.asarray(params[0]), eps=1e-5, axis=-1)
    np.testing.assert_allclose(y_train, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(apply_fun(params, jnp.asarray(x), mode="test")), y_train)
    one = np.asarray(apply_fun(params, jnp.asarray(x[:1]), mode="test"))
    np.testing.assert_array_equal(one, np.asarray(params[0])[None])


def test_stax_adapter_refuses_inference():
    from equiv.core import Unsupported
    from equiv.registry import load
    a = load("jax.stax")(3, 2, dtype="float64", new_batch_weight=0.1, eps=1e-5)
    assert set(a.get_state()) == {"gamma", "beta"}
    with pytest.raises(Unsupported, match="no inference mode"):
        a.forward_infer(_x((4, 3)))
