"""Measured behaviours of the JAX/Flax implementations that the generic properties do not
express: the book's 4-D reduction axes and its update during ``init``, Flax's fast
variance, the mode argument, nnx's default mode and its float32 batch statistics."""
import warnings

import numpy as np
import pytest

pytest.importorskip("flax", reason="install it with: pip install jax flax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

import reference as ref  # noqa: E402
from equiv.backends import jax as jax_backend  # noqa: E402
from equiv.book import d2l_jax as book  # noqa: E402

jax_backend.setup()   # float64 on (jax_enable_x64), as equiv.registry does before it loads JAX code


def _x(shape, seed=0, mean=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * 2.0 + mean


def test_book_4d_normalizes_over_n_w_c_per_row():
    """Finding: on NHWC input the book's layer reduces over axes (0, 2, 3) = N, W, C: one mean
    and variance per row h, shared by all channels; gamma and beta stay per channel; the
    moving statistics become (1, H, 1, C)."""
    N, H, W, C = 3, 5, 4, 2
    x = _x((N, H, W, C)) * np.array([1.0, 10.0]) + np.array([0.0, 50.0])   # channels far apart
    layer = book.BatchNorm(C, 4)
    v = layer.init(jax.random.key(0), jnp.zeros((2, 1, 1, C)))
    g, b = np.array([[[[2.0, -0.5]]]]), np.array([[[[0.25, 1.0]]]])
    v = {"params": {"gamma": jnp.asarray(g), "beta": jnp.asarray(b)},
         "batch_stats": {"moving_mean": jnp.zeros((1, 1, 1, C)), "moving_var": jnp.ones((1, 1, 1, C))}}
    y, upd = layer.apply(v, jnp.asarray(x), mutable=["batch_stats"])
    mean = x.mean(axis=(0, 2, 3), keepdims=True)                  # (1, H, 1, 1)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(np.asarray(y), g * (x - mean) / np.sqrt(var + 1e-5) + b, rtol=1e-12, atol=1e-12)
    per_channel, _, _ = ref.batch_norm_train(x, g.ravel(), b.ravel(), eps=1e-5, axis=-1)
    assert np.abs(np.asarray(y) - per_channel).max() > 0.5        # not batch norm
    mm = np.asarray(upd["batch_stats"]["moving_mean"])
    assert mm.shape == (1, H, 1, C)
    np.testing.assert_allclose(mm, 0.1 * np.broadcast_to(mean, (1, H, 1, C)), rtol=1e-12)


def test_book_init_runs_the_moving_average_update():
    """Finding: ``init`` calls the layer in training mode, so the book's moving averages move
    once during initialization: 0.9·(0, 1) + 0.1·(batch mean, batch var)."""
    x = _x((8, 3))
    v = book.BatchNorm(3, 2).init(jax.random.key(0), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(v["batch_stats"]["moving_mean"]).ravel(), 0.1 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(v["batch_stats"]["moving_var"]).ravel(), 0.9 + 0.1 * x.var(axis=0),
                               rtol=1e-12)


def test_linen_init_does_not_update_and_keeps_float32_stats():
    """flax.linen skips the update during init (is_initializing()); its batch stats are created
    float32 even for float64 data and param_dtype, and become float64 at the first update."""
    x = jnp.asarray(_x((8, 3)))
    bn = nn.BatchNorm(dtype=jnp.float64, param_dtype=jnp.float64)
    v = bn.init(jax.random.key(0), x, use_running_average=False)
    assert v["batch_stats"]["mean"].dtype == jnp.float32 and not np.asarray(v["batch_stats"]["mean"]).any()
    np.testing.assert_array_equal(np.asarray(v["batch_stats"]["var"]), 1.0)
    _, upd = bn.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    assert upd["batch_stats"]["mean"].dtype == jnp.float64


def test_linen_use_running_average_is_required():
    bn = nn.BatchNorm()
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="use_running_average"):
        bn.init(jax.random.key(0), x)
    v = bn.init(jax.random.key(0), x, use_running_average=False)
    with pytest.raises(ValueError, match="use_running_average"):
        bn.apply(v, x, mutable=["batch_stats"])


def _linen_batch_var(x, fast):
    """The batch variance flax.linen computes: running var after one step with momentum 0."""
    bn = nn.BatchNorm(momentum=0.0, use_fast_variance=fast)
    xj = jnp.asarray(x, jnp.float32)
    v = bn.init(jax.random.key(0), xj, use_running_average=False)
    _, upd = bn.apply(v, xj, use_running_average=False, mutable=["batch_stats"])
    return np.asarray(upd["batch_stats"]["var"], np.float64)


@pytest.mark.parametrize("offset,low,high", [(1e2, 3e-4, 1e-2), (1e3, 2e-2, 1.0), (1e4, 1.0, np.inf)])
def test_linen_fast_variance_loses_u_times_offset_squared(offset, low, high):
    """Finding: float32, |mean|/std = offset, 4 channels × 256 rows: E[x²] − E[x]² is off by
    ~4·u·offset² relative (measured medians 2.2e-3, 0.15, 7.4 at 1e2, 1e3, 1e4; at 1e4 the
    variance is wrong by several times itself), the two-pass variance by < 3e-6."""
    errs = {True: [], False: []}
    for seed in range(5):
        x = (offset + np.random.default_rng(seed).standard_normal((256, 4))).astype(np.float32).astype(np.float64)
        for fast in (True, False):
            errs[fast].append(np.max(np.abs(_linen_batch_var(x, fast) - x.var(axis=0)) / x.var(axis=0)))
    assert low < np.median(errs[True]) < high
    assert max(errs[False]) < 3e-6


def _fp16_batch_of_one_grads(kind, eps, cast_first=False):
    """dx, dgamma, dbeta of a float16 Flax BatchNorm (linen fast/two-pass, nnx) for one value per channel:
    x = −2.406, gamma 0.3464, beta 0.0691, dy 1.158 (the witness of flax-fp16-dx-cotangent-overflow);
    ``cast_first``: x cast to float32 before the layer (and nnx's layer dtype float32: it casts x to it).
    Also the vjp's jaxpr (linen)."""
    f16 = jnp.float16
    x, dy = jnp.asarray([[-2.40625]], f16), jnp.asarray([[1.158203125]], f16)
    gamma, beta = jnp.asarray([0.346435546875], f16), jnp.asarray([0.0690918], f16)
    pre = (lambda x: x.astype(jnp.float32)) if cast_first else (lambda x: x)
    if kind == "nnx":   # as the adapter differentiates it (nnx.vjp carries the batch-stat update out)
        # nnx casts x to the layer's dtype (promote_dtype): cast first means a float32 layer
        m = nnx.BatchNorm(1, epsilon=eps, dtype=jnp.float32 if cast_first else f16, param_dtype=f16,
                          rngs=nnx.Rngs(0))
        m.scale[...], m.bias[...] = gamma, beta
        _, vjp = nnx.vjp(lambda m, x: m(pre(x)).astype(f16), m, x, graph=False)
        dm, dx = vjp(dy)
        dgamma, dbeta, jaxpr = dm.scale[...], dm.bias[...], ""
    else:
        bn = nn.BatchNorm(epsilon=eps, dtype=f16, param_dtype=f16, use_fast_variance=kind == "fast")
        stats = {"mean": jnp.zeros(1, jnp.float32), "var": jnp.ones(1, jnp.float32)}

        def f(x, p):
            return bn.apply({"params": {"scale": p[0], "bias": p[1]}, "batch_stats": stats}, pre(x),
                            use_running_average=False, mutable=["batch_stats"])[0]
        _, vjp = jax.vjp(f, x, (gamma, beta))
        dx, (dgamma, dbeta) = vjp(dy)
        jaxpr = str(jax.make_jaxpr(lambda x, dy: jax.vjp(f, x, (gamma, beta))[1](dy))(x, dy))
    return [np.asarray(a, np.float64) for a in (dx, dgamma, dbeta)], jaxpr


@pytest.mark.parametrize("kind", ["fast", "two_pass", "nnx"])
def test_fp16_batch_of_one_dx_is_inf_minus_inf(kind):
    """Finding flax-fp16-dx-cotangent-overflow: float16 x is promoted to float32 twice (the statistics,
    x − mean), and the vjp casts each float32 cotangent to float16 and adds them in float16. With one
    value per channel they are ±dy·gamma/sqrt(eps) = ±126884 at eps 1e-11: ±inf, and dx = NaN where the
    exact dx is 0; at eps 1e-8 (±4012) they cancel to 0; with x cast to float32 first (nnx: and a float32
    layer) they add in float32 and dx is 0. dgamma (0) and dbeta (dy) are right throughout."""
    (dx, dgamma, dbeta), jaxpr = _fp16_batch_of_one_grads(kind, 1e-11)
    assert np.isnan(dx).all()
    assert dgamma[0] == 0.0 and dbeta[0] == 1.158203125
    if jaxpr:   # linen: the two casts of x's cotangent back to float16, and their float16 sum
        assert "f16[1,1] = add_any" in jaxpr and jaxpr.count("convert_element_type[new_dtype=float16") >= 2
    (dx, _, _), _ = _fp16_batch_of_one_grads(kind, 1e-8)
    assert dx[0, 0] == 0.0
    (dx, dgamma, dbeta), _ = _fp16_batch_of_one_grads(kind, 1e-11, cast_first=True)
    assert dx[0, 0] == 0.0 and dgamma[0] == 0.0 and dbeta[0] == 1.158203125


def test_nnx_default_is_training_and_eval_switches():
    m = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    x = _x((8, 3), mean=4.0)
    y = np.asarray(m(jnp.asarray(x, jnp.float32)))
    y_train, mean, _ = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-5)
    np.testing.assert_allclose(y, y_train, atol=1e-4)                        # batch statistics
    np.testing.assert_allclose(np.asarray(m.mean[...]), 0.01 * mean, rtol=1e-5)  # and updated
    m.eval()
    before = np.asarray(m.mean[...])
    y = np.asarray(m(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(y, ref.batch_norm_infer(x, np.ones(3), np.zeros(3), before,
                                                       np.asarray(m.var[...]), eps=1e-5), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(m.mean[...]), before)


def test_nnx_batch_stats_stay_float32_with_float64_data():
    """Finding: nnx.BatchNorm's mean/var are float32 whatever the dtype, and the in-place update
    keeps them float32 (JAX warns about the scatter); cast and nnx.update them to get float64."""
    m = nnx.BatchNorm(3, dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = jnp.asarray(_x((8, 3)) + 1 / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        m(x)
    assert m.mean[...].dtype == jnp.float32
    assert np.asarray(m.mean[...], np.float64)[0] != 0.01 * float(x[:, 0].mean())
    nnx.update(m, jax.tree.map(lambda a: a.astype(jnp.float64), nnx.state(m, nnx.BatchStat)))
    m(x)
    assert m.mean[...].dtype == jnp.float64


@pytest.mark.parametrize("name", ["flax.linen", "flax.linen.two_pass"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_runtime_settings_compute_what_a_users_literal_settings_do(name, dtype):
    """The adapters hand momentum and eps to their jitted apply as runtime scalars (one compile per
    shape, not per setting). A user writes them as literals, which XLA may fold: the numbers must
    agree to one rounding of the dtype, output and running statistics, on many settings."""
    from equiv.registry import load
    A = load(name)
    u = 2.0 ** -52 if dtype == "float64" else 2.0 ** -23
    rng = np.random.default_rng(3)
    for _ in range(12):
        w, eps = float(rng.uniform(0, 1)), float(10 ** rng.uniform(-8, -1))
        x = rng.standard_normal((6, 3)) * 3 + 1
        state = dict(gamma=rng.uniform(0.5, 2, 3), beta=rng.standard_normal(3),
                     running_mean=rng.standard_normal(3), running_var=rng.uniform(0.5, 2, 3))
        a = A(3, 2, dtype=dtype, new_batch_weight=w, eps=eps)
        a.set_state(**state)
        y, s = a.forward_train(x), a.get_state()
        jdt = jnp.dtype(dtype)
        user = nn.BatchNorm(momentum=a.module.momentum, epsilon=eps, dtype=jdt, param_dtype=jdt,
                            use_fast_variance=a.use_fast_variance)    # literals, closed over by the jit
        variables = {"params": {"scale": jnp.asarray(state["gamma"], jdt), "bias": jnp.asarray(state["beta"], jdt)},
                     "batch_stats": {"mean": jnp.asarray(state["running_mean"], jdt),
                                     "var": jnp.asarray(state["running_var"], jdt)}}
        y2, new = jax.jit(lambda v, x: user.apply(v, x, use_running_average=False, mutable=["batch_stats"]))(  # noqa: B023
            variables, jnp.asarray(x, jdt))
        for got, want in ((y, y2), (s["running_mean"], new["batch_stats"]["mean"]),
                          (s["running_var"], new["batch_stats"]["var"])):
            want = np.asarray(want, dtype=np.float64)
            assert np.all(np.abs(got - want) <= 2 * u * np.abs(want).max()), (w, eps, got, want)
