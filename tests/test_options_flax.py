"""Flax's BatchNorm under its arguments (jax env; flax 0.12.8, jax 0.10.2), against the oracle:
``use_scale``/``use_bias`` False (the ``affine`` option) and ``force_float32_reductions=False`` (linen) run
in the suite; what the oracle's options do not express is pinned here: ``use_running_average`` at
construction or at call, axis tuples (reference.options.batch_norm_train_features), ``dtype`` below
``param_dtype`` (mixed precision) and what ``force_float32_reductions`` changes for float16/bfloat16 input.
The documented divergences of Flax under options (equiv.known.OPTION_KNOWN) run as strict xfails. Lines
cited are flax/linen/normalization.py (LN), flax/linen/module.py (LM) and flax/nnx/nn/normalization.py (NN)
of flax 0.12.8."""
import numpy as np
import pytest

pytest.importorskip("flax", reason="install it with: pip install jax flax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

import reference as ref  # noqa: E402
from equiv import tolerance as tol  # noqa: E402
from equiv.backends import jax as jax_backend  # noqa: E402
from equiv.known import OPTION_KNOWN  # noqa: E402
from equiv.properties import PROPERTIES  # noqa: E402
from equiv.registry import load  # noqa: E402
from reference.options import batch_norm_train_features  # noqa: E402

jax_backend.setup()   # float64 on, as equiv.registry does before it loads JAX code

LOW = {"float16": jnp.float16, "bfloat16": jnp.bfloat16}
KNOWN = [d for d in OPTION_KNOWN if set(d.implementations) & {"flax.linen", "flax.linen.two_pass", "flax.nnx"}]


def _x(shape, seed=0, scale=3.0, offset=2.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + offset


def _rounded(x, dtype):
    return np.asarray(jnp.asarray(x, LOW.get(dtype, dtype)).astype(jnp.float64))


def _linen(x, **kw):
    """(module, variables) of a linen BatchNorm initialized on x (float64 statistics unless kw says)."""
    m = nn.BatchNorm(**{"dtype": jnp.float64, "param_dtype": jnp.float64, **kw})
    return m, m.init(jax.random.key(0), x, use_running_average=False)


@pytest.mark.parametrize("name", ["flax.linen", "flax.nnx"])
@pytest.mark.parametrize("affine,has", [(False, set()), ("no_scale", {"bias"}), ("no_center", {"scale"})])
def test_use_scale_use_bias_false_make_no_parameter(name, affine, has):
    """use_scale/use_bias False: linen makes no such param (LN:208-224), nnx sets it to None (NN:316-327);
    neither is applied (NN:173-181) and there is no gradient of it."""
    a = load(name)(3, 4, dtype="float64", new_batch_weight=0.1, options={"affine": affine})
    a.set_state(gamma=np.full(3, 2.0), beta=np.ones(3), running_mean=np.zeros(3), running_var=np.ones(3))
    if name == "flax.linen":
        assert set(a.variables.get("params", {})) == has
    else:
        assert {k for k in ("scale", "bias") if getattr(a.module, k) is not None} == has
    x, dy = _x((4, 3, 2, 2), 1), _x((4, 3, 2, 2), 2, offset=0.0)
    _, _, dgamma, dbeta = a.train_step(x, dy)
    assert (dgamma is not None, dbeta is not None) == ("scale" in has, "bias" in has)


def test_linen_use_running_average_at_construction_or_at_call():
    """linen merges the two with merge_param (LN:351-353): given once, at construction or at call, the
    output and the batch statistics are bit for bit the same; given at both, or at neither, it raises
    ValueError (LM:2952-2960), whatever the values."""
    x = _x((4, 3, 5, 2))
    m, v = _linen(x)
    v = {"params": v["params"], "batch_stats": {"mean": jnp.array([0.5, -1.0]), "var": jnp.array([2.0, 0.25])}}
    for mode in (True, False):
        built = nn.BatchNorm(use_running_average=mode, dtype=jnp.float64, param_dtype=jnp.float64)
        y1, s1 = built.apply(v, x, mutable=["batch_stats"])
        y2, s2 = m.apply(v, x, use_running_average=mode, mutable=["batch_stats"])
        np.testing.assert_array_equal(y1, y2)
        jax.tree.map(np.testing.assert_array_equal, s1, s2)
        with pytest.raises(ValueError, match="passed to the constructor and at call time"):
            built.apply(v, x, use_running_average=mode, mutable=["batch_stats"])
    with pytest.raises(ValueError, match="must be passed to the constructor or at call time"):
        m.apply(v, x, mutable=["batch_stats"])


def test_nnx_use_running_average_at_construction_at_call_or_by_train_eval():
    """nnx takes the call's value first, then the constructor's (first_from, NN:364-378, as its docstring
    says: the call "will take precedence"); train()/eval() set the attribute. All four spellings give bit
    for bit the same output and batch statistics; None at both raises ValueError."""
    x = _x((4, 3, 5, 2))

    def layer(**kw):
        m = nnx.BatchNorm(2, dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **kw)
        m.mean.set_value(jnp.array([0.5, -1.0]))
        m.var.set_value(jnp.array([2.0, 0.25]))
        return m
    for mode in (True, False):
        built = layer(use_running_average=mode)
        y = built(x)
        at_call, switched, overridden = layer(), layer(), layer(use_running_average=not mode)
        switched.eval() if mode else switched.train()
        for m, out in ((at_call, at_call(x, use_running_average=mode)), (switched, switched(x)),
                       (overridden, overridden(x, use_running_average=mode))):
            np.testing.assert_array_equal(out, y)
            np.testing.assert_array_equal(m.mean[...], built.mean[...])
            np.testing.assert_array_equal(m.var[...], built.var[...])
    with pytest.raises(ValueError, match="No `use_running_average` argument"):
        layer(use_running_average=None)(x)


def _flat(a, feat):
    """Features last (increasing), flattened into one channel axis: the oracle's view of several axes."""
    a = np.moveaxis(np.asarray(a, dtype=np.float64), feat, range(a.ndim - len(feat), a.ndim))
    return a.reshape(-1, int(np.prod(a.shape[a.ndim - len(feat):])))


@pytest.mark.parametrize("axis", [(1, 2), (1, 3), (-1, 1)])
def test_linen_axis_tuple_is_batch_norm_over_the_other_axes(axis):
    """linen takes a tuple axis (its docstring says "the feature or non-batch axis"): statistics over the
    other axes (LN:354-356), scale, bias and batch statistics of the features' shape; the training output,
    the running statistics and the inference output equal the oracle's within the float64 bounds."""
    x = _x((4, 3, 5, 2))
    feat = sorted(a % 4 for a in axis)
    shape = tuple(x.shape[a] for a in feat)
    rng = np.random.default_rng(5)
    gamma, beta = rng.standard_normal(shape), rng.standard_normal(shape)
    m, v = _linen(x, axis=axis, momentum=0.9)
    assert jax.tree.map(jnp.shape, v["batch_stats"]) == {"mean": shape, "var": shape}
    v = {"params": {"scale": jnp.asarray(gamma), "bias": jnp.asarray(beta)},
         "batch_stats": {"mean": jnp.zeros(shape), "var": jnp.ones(shape)}}
    y, new = m.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    ry, mean, var = batch_norm_train_features(x, gamma, beta, eps=1e-5, feature_axes=axis)
    xf, g, b = _flat(x, feat), gamma.ravel(), beta.ravel()
    tol.assert_close("y", _flat(y, feat), _flat(ry, feat), tol.train_forward(xf, g, b, 1e-5, "float64"))
    em, ev = ref.update_running_stats(np.zeros(g.size), np.ones(g.size), mean.ravel(), var.ravel(), xf.shape[0],
                                      new_batch_weight=0.1, unbiased=False)
    bm, bv = tol.running_stats(xf, np.zeros(g.size), np.ones(g.size), em, ev, 0.1, "float64")
    tol.assert_close("mean", np.ravel(new["batch_stats"]["mean"]), em, bm)
    tol.assert_close("var", np.ravel(new["batch_stats"]["var"]), ev, bv)
    yi = m.apply({"params": v["params"], **new}, x, use_running_average=True)
    tol.assert_close("infer", _flat(yi, feat), ref.batch_norm_infer(xf, g, b, em, ev, eps=1e-5),
                     tol.infer_forward(xf, g, b, em, ev, 1e-5, "float64"))


@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types")   # the float32 width-5 statistics
def test_nnx_axis_tuple_infers_but_does_not_train():
    """nnx builds one-dimensional parameters and statistics of num_features (NN:311-327): with axis=(1, 2)
    on (N, H, W, C) and num_features = H·W inference reshapes them to the features (NN:162-169) and equals
    the oracle on the flattened features; training raises ValueError where the batch statistics, of shape
    (H, W), meet the stored (H·W,) ones (NN:404-405); num_features = W raises there too."""
    x = _x((4, 3, 5, 2))
    m = nnx.BatchNorm(15, axis=(1, 2), use_running_average=True, dtype=jnp.float64, param_dtype=jnp.float64,
                      rngs=nnx.Rngs(0))
    mean, var = np.linspace(-1, 1, 15), np.linspace(0.5, 2, 15)
    m.mean.set_value(jnp.asarray(mean))
    m.var.set_value(jnp.asarray(var))
    xf, ones, zeros = _flat(x, [1, 2]), np.ones(15), np.zeros(15)
    tol.assert_close("infer", _flat(m(x), [1, 2]), ref.batch_norm_infer(xf, ones, zeros, mean, var, eps=1e-5),
                     tol.infer_forward(xf, ones, zeros, mean, var, 1e-5, "float64"))
    for width in (15, 5):
        with pytest.raises(ValueError):
            nnx.BatchNorm(width, axis=(1, 2), dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(0))(x)


def _mixed(lib, low, x, momentum=0.9, eps=1e-3):
    """A layer computing in ``low`` with float32 parameters, after one training step on x given in ``low``:
    (output, inference output, params dtype, stats dtypes before and after, running mean, running var)."""
    xl = jnp.asarray(x, LOW[low])
    if lib == "linen":
        m = nn.BatchNorm(momentum=momentum, epsilon=eps, dtype=LOW[low], param_dtype=jnp.float32)
        v = m.init(jax.random.key(0), xl, use_running_average=False)
        before = {v["batch_stats"]["mean"].dtype.name}
        y, new = m.apply(v, xl, use_running_average=False, mutable=["batch_stats"])
        yi = m.apply({"params": v["params"], **new}, xl, use_running_average=True)
        stats, params = new["batch_stats"], v["params"]
    else:
        m = nnx.BatchNorm(x.shape[1], momentum=momentum, epsilon=eps, dtype=LOW[low], param_dtype=jnp.float32,
                          rngs=nnx.Rngs(0))
        before = {m.mean[...].dtype.name}
        y = m(xl)
        m.eval()
        yi = m(xl)
        stats, params = {"mean": m.mean[...], "var": m.var[...]}, {"scale": m.scale[...]}
    after = {stats["mean"].dtype.name, stats["var"].dtype.name}
    return y, yi, params["scale"].dtype.name, before, after, np.asarray(stats["mean"], np.float64), \
        np.asarray(stats["var"], np.float64)


@pytest.mark.parametrize("lib", ["linen", "nnx"])
@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_dtype_below_param_dtype_keeps_float32_statistics(lib, low):
    """dtype float16/bfloat16 with param_dtype float32 (mixed precision): float32 parameters, the running
    statistics float32 at init (LN:358-375; NN:312-313) and after the update (the batch statistics are
    reduced in float32, LN:111-114, NN:97-98, and the update in float32, LN:400-404, NN:404-409); the output
    is in the compute dtype. Against the oracle on the rounded input (64 × 3, |mean|/std ≈ 0.7): the training
    output within the compute dtype's bound (measured ≤ 0.016 of it), the inference output too (≤ 0.065 linen,
    ≤ 0.17 nnx, which rounds the statistics to its dtype), the running statistics within float32's (≤ 0.03)."""
    x = _x((64, 3), 7, scale=1.0, offset=0.7)
    y, yi, pdt, before, after, mean, var = _mixed(lib, low, x)
    assert (pdt, before, after, y.dtype.name) == ("float32", {"float32"}, {"float32"}, low)
    xr, ones, zeros = _rounded(x, low), np.ones(3), np.zeros(3)
    ry, bmean, bvar = ref.batch_norm_train(xr, ones, zeros, eps=1e-3)
    assert tol.assert_close("y", np.asarray(y, np.float64), ry, tol.train_forward(xr, ones, zeros, 1e-3, low)) < 0.1
    em, ev = ref.update_running_stats(zeros, ones, bmean, bvar, 64, new_batch_weight=0.1, unbiased=False)
    bm, bv = tol.running_stats(xr, zeros, ones, em, ev, 0.1, "float32")
    assert max(tol.assert_close("mean", mean, em, bm), tol.assert_close("var", var, ev, bv)) < 0.1
    ryi = ref.batch_norm_infer(xr, ones, zeros, em, ev, eps=1e-3)
    assert tol.assert_close("infer", np.asarray(yi, np.float64), ryi,
                            tol.infer_forward(xr, ones, zeros, em, ev, 1e-3, low)) < 0.5


def test_nnx_infers_with_statistics_rounded_to_the_compute_dtype():
    """In inference nnx casts the float32 running statistics to the layer's dtype with its input
    (promote_dtype, NN:385-387); linen uses them in float32 (LN:377-387). Running mean 1000.3 (bfloat16:
    1000), variance 1: nnx's output is the oracle's with the rounded mean, 0.3 off the exact one, within
    bfloat16's inference bound (K·u·(|x| + |mean|)/σ ≈ 31); linen's is within 0.01."""
    x = np.array([[1000.5], [999.0], [1001.0]])
    mean, var = np.array([1000.3]), np.array([1.0])
    m = nnx.BatchNorm(1, use_running_average=True, epsilon=1e-3, dtype=jnp.bfloat16, param_dtype=jnp.float32,
                      rngs=nnx.Rngs(0))
    m.mean.set_value(jnp.asarray(mean, jnp.float32))
    m.var.set_value(jnp.asarray(var, jnp.float32))
    y = np.asarray(m(jnp.asarray(x, jnp.bfloat16)), np.float64)
    lm = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    v = {"params": {"scale": jnp.ones(1), "bias": jnp.zeros(1)},
         "batch_stats": {"mean": jnp.asarray(mean, jnp.float32), "var": jnp.asarray(var, jnp.float32)}}
    yl = np.asarray(lm.apply(v, jnp.asarray(x, jnp.bfloat16)), np.float64)
    xr, ones, zeros = _rounded(x, "bfloat16"), np.ones(1), np.zeros(1)
    exact = ref.batch_norm_infer(xr, ones, zeros, mean, var, eps=1e-3)
    rounded = ref.batch_norm_infer(xr, ones, zeros, _rounded(mean, "bfloat16"), var, eps=1e-3)
    np.testing.assert_allclose(y, rounded, atol=2 ** -8 * np.abs(rounded).max() + 1e-3)
    assert 0.25 < np.abs(y - exact).max() < 0.35 and np.abs(yl - exact).max() < 0.01
    tol.assert_close("nnx infer", y, exact, tol.infer_forward(xr, ones, zeros, mean, var, 1e-3, "bfloat16"))


def _reductions(low, x, float32_reductions, fast=True):
    """linen in ``low`` (dtype and param_dtype, as the adapter builds it), one training step from mean 0,
    variance 1 at new-batch weight 0.1: (output, running mean, running var), the statistics' dtype."""
    m = nn.BatchNorm(momentum=0.9, epsilon=1e-3, dtype=LOW[low], param_dtype=LOW[low],
                     force_float32_reductions=float32_reductions, use_fast_variance=fast)
    xl = jnp.asarray(x, LOW[low])
    y, new = m.apply(m.init(jax.random.key(0), xl, use_running_average=False), xl, use_running_average=False,
                     mutable=["batch_stats"])
    s = new["batch_stats"]
    return np.asarray(y, np.float64), np.asarray(s["mean"], np.float64), np.asarray(s["var"], np.float64), \
        s["mean"].dtype.name


def _excess(low, x, y, mean, var):
    xr, ones, zeros = _rounded(x, low), np.ones(x.shape[1]), np.zeros(x.shape[1])
    ry, bmean, bvar = ref.batch_norm_train(xr, ones, zeros, eps=1e-3)
    em, ev = ref.update_running_stats(zeros, ones, bmean, bvar, len(x), new_batch_weight=0.1, unbiased=False)
    bm, bv = tol.running_stats(xr, zeros, ones, em, ev, 0.1, low)
    return (tol.excess(y, ry, tol.train_forward(xr, ones, zeros, 1e-3, low)), tol.excess(mean, em, bm),
            tol.excess(var, ev, bv))


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_force_float32_reductions(low):
    """force_float32_reductions (linen only; default True): True promotes the input to float32 for the
    statistics (LN:111-114) and keeps the running statistics float32 (LN:363, :372); False reduces in the
    input's dtype and keeps them in param_dtype. Measured against the oracle under the compute dtype's
    bounds, 16 × 3 values: at |mean|/std ≈ 0 both pass (≤ 0.06); at |mean|/std ≈ 100 True passes (output
    ≤ 0.001 of the bound) and False does not: E[x²] − E[x]² in the input's dtype loses the variance (output
    3.8× (bfloat16), 30× (float16) the bound; flax-no-float32-reductions-fast-variance), where the two-pass
    variance (use_fast_variance=False) passes (0.013). Float16 around 300: x² overflows and the output is
    NaN with False, within the bound with True."""
    rng = np.random.default_rng(0)
    centred = rng.standard_normal((16, 3))
    y, mean, var, dt = _reductions(low, centred, True)
    assert dt == "float32" and max(_excess(low, centred, y, mean, var)) < 0.1
    y, mean, var, dt = _reductions(low, centred, False)
    assert dt == low and max(_excess(low, centred, y, mean, var)) < 1.0
    x = rng.standard_normal((16, 3)) + 100.0
    assert _excess(low, x, *_reductions(low, x, True)[:3])[0] < 0.01
    assert _excess(low, x, *_reductions(low, x, False)[:3])[0] > 2.0
    assert _excess(low, x, *_reductions(low, x, False, fast=False)[:3])[0] < 1.0
    if low == "float16":
        x = rng.standard_normal((16, 3)) * 10 + 300.0
        assert np.isnan(_reductions(low, x, False)[0]).all()
        assert _excess(low, x, *_reductions(low, x, True)[:3])[0] < 1.0


@pytest.mark.parametrize("d", KNOWN, ids=lambda d: d.id)
def test_option_witness_lies_in_its_region(d):
    assert d.region(d.witness, d.witness_property) and d.witness.options


@pytest.mark.parametrize("d,name", [pytest.param(d, name, id=f"{d.id}-{name}", marks=pytest.mark.xfail(
    strict=True, raises=AssertionError, reason=d.reason)) for d in KNOWN for name in d.implementations])
def test_option_witness_diverges(d, name):
    PROPERTIES[d.witness_property].check(load(name), d.witness, "cpu")


@pytest.mark.parametrize("d", KNOWN, ids=lambda d: d.id)
def test_option_witness_passes_with_float32_reductions(d):
    """The same case at the default force_float32_reductions=True is within the bound."""
    from dataclasses import replace
    for name in d.implementations:
        assert PROPERTIES[d.witness_property].check(load(name), replace(d.witness, options={}, arrays=None), "cpu") < 1
