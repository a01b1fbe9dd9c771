"""Known divergences: documented findings, each with the region of inputs where it shows
and a witness case that shows it.

The property tests leave each region out (and say so), and every witness runs as a
strict ``xfail``: when a framework release fixes the behaviour the witness passes,
the strict xfail turns red, and this list must be updated. Array-api-tests keeps its
known failures the same way.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from equiv.dtypes import round_to
from equiv.strategies import Case, affine_draw


@dataclass(frozen=True)
class Divergence:
    id: str
    adapters: tuple           # adapter names it applies to
    properties: tuple         # property names whose region it removes
    reason: str               # what differs and why, with the measured error on the witness
    region: Callable          # (Case, property name) -> bool: the inputs where it shows
    witness: Case             # one case in the region
    witness_property: str     # the property that fails on the witness
    advice: str = ""          # what a user porting a model or checkpoint must do about it


def _red(case):
    """The axes a channel's statistics reduce over: all but axis 1."""
    return (0,) + tuple(range(2, case.ndim))


def _fp16_eps_vanishes(case, prop):
    """float16 with var + eps below 6e-8 somewhere: eps rounds away against var (or, for
    affine_invariance, a·x + b may round to a constant channel while eps is that small)."""
    return case.dtype == "float16" and (_min_var_plus_eps(case) < 6e-8 or (
        prop == "affine_invariance" and case.eps < 6e-8
        and bool((case.x.std(axis=_red(case)) < 14 * 2.0 ** -10 * np.abs(case.x).max(axis=_red(case))).any())))


def _min_var_plus_eps(case, prop=None):
    """min over channels and batches of var + eps; for affine_invariance (when prop says so) also of
    a·x + b rounded to the case's dtype, with eps·a², as the property draws and feeds them: rounding
    can make a channel constant (float16 spacing 8 at |a·x + b| ≥ 8192) while eps·a² is small."""
    red = _red(case)
    low = min(float(case.batch(i).var(axis=red).min()) for i in range(case.steps)) + case.eps
    if prop == "affine_invariance":
        a, b = affine_draw(case)
        with np.errstate(over="ignore", invalid="ignore"):   # a·x + b beyond the dtype: inf, var NaN, no minimum
            v = np.nan_to_num(round_to(a * case.x + b, case.dtype).var(axis=red), nan=np.inf)
        low = min(low, float(v.min()) + case.eps * a * a)
    return low


def _scratch_square_overflows(case, prop):
    """(x − mean)² beyond float16's range in some batch (affine_invariance scales x by up to 10)."""
    if case.dtype != "float16":
        return False
    red = _red(case)
    reach = max(float(np.abs(x - x.mean(axis=red, keepdims=True)).max()) for x in map(case.batch, range(case.steps)))
    return reach * (10 if prop == "affine_invariance" else 1) > 255.0


def _scratch_grad_overflows(case, prop):
    """An autograd intermediate beyond float16's range in some channel: ∂L/∂var =
    Σ dy·gamma·(x − mean) / (2 (var + eps)^{3/2}), ∂L/∂x through the numerator,
    gamma·dy/sqrt(var + eps), or ∂L/∂mean = −Σ gamma·dy/sqrt(var + eps)."""
    if case.dtype != "float16":
        return False
    red = _red(case)
    x, g = case.x, np.abs(case.gamma)
    centred = x - x.mean(axis=red, keepdims=True)
    sigma2 = x.var(axis=red) + case.eps
    dvar = g * np.abs((case.dy * centred).sum(axis=red)) / (2 * sigma2 ** 1.5)
    dnum = g * np.abs(case.dy).max(axis=red) / np.sqrt(sigma2)
    dmean = g * np.abs(case.dy.sum(axis=red)) / np.sqrt(sigma2)       # ∂L/∂mean through the numerator
    return bool(max(dvar.max(), dnum.max(), dmean.max()) > 65504 / 4)


def _fp16_sum_of_squares_overflows(case, prop):
    """float16, and Σ (x − mean)² of a channel beyond float16's range (> 65504, with a margin for
    the float16 mean) in some batch; for affine_invariance also of a·x + b (a as the property draws it)."""
    if case.dtype != "float16":
        return False
    red = _red(case)
    a2 = affine_draw(case)[0] ** 2 if prop == "affine_invariance" else 1.0
    return max(float(((x - x.mean(axis=red, keepdims=True)) ** 2).sum(axis=red).max())
               for x in map(case.batch, range(case.steps))) * a2 > 65504 / 1.05


def _fp16_channel_sum_overflows(case, prop):
    """float16, and |Σ x| of a channel beyond float16's range (> 65504, with a margin for the
    float16 rounding of x) in some batch; for affine_invariance also of a·x + b, drawn as the
    property draws them."""
    if case.dtype != "float16":
        return False
    red = _red(case)
    xs = [case.batch(i) for i in range(case.steps)]
    if prop == "affine_invariance":
        a, b = affine_draw(case)
        xs.append(a * case.x + b)
    return max(float(np.abs(x.sum(axis=red)).max()) for x in xs) > 65504 / 1.05


def _flax_fp16_dx_cotangent_overflows(case, prop):
    """float16, and one of the two float32 cotangents of x that Flax's backward casts to float16
    separately reaches float16's overflow threshold (65520: 65504 + half its spacing) in some element:
    through x − mean, |dy|·|gamma|/sqrt(var + eps); through the batch mean and variance,
    |mean(dy) + x̂·mean(dy·x̂)|·|gamma|/sqrt(var + eps) (less a margin for float32's roundings of them)."""
    if case.dtype != "float16":
        return False
    red = _red(case)
    x, dy = case.x, case.dy
    sigma = np.sqrt(x.var(axis=red, keepdims=True) + case.eps)
    s = np.abs(case.gamma).reshape((1, case.channels) + (1,) * (case.ndim - 2)) / sigma
    x_hat = (x - x.mean(axis=red, keepdims=True)) / sigma
    through_stats = np.abs(dy.mean(axis=red, keepdims=True) + x_hat * (dy * x_hat).mean(axis=red, keepdims=True))
    return bool(max(float((np.abs(dy) * s).max()), float((through_stats * s).max())) >= 65520 * (1 - 1e-6))


def _offset_ratio(case, prop, with_eps):
    """max over channels and batches of |mean|/sqrt(var + eps): E[x²] − E[x]² loses ~u·(1 + ratio²)
    of var + eps; without eps, |mean|/std, where var itself matters (running statistics, and
    var̂ clipped to 0; a zero-variance channel: inf). For affine_invariance also over a·x + b,
    drawn as the property draws them."""
    red = _red(case)
    eps = case.eps if with_eps else 0.0
    xs = [(case.batch(i), eps) for i in range(case.steps)]
    if prop == "affine_invariance":
        a, b = affine_draw(case)
        xs.append((a * case.x + b, eps * a * a))
    with np.errstate(divide="ignore", invalid="ignore"):
        return max(float(np.nan_to_num(np.abs(x.mean(axis=red)) / np.sqrt(x.var(axis=red) + e), nan=np.inf).max())
                   for x, e in xs)


def _decay(case):
    """Haiku's decay as the layer holds it: 1 − w rounded to the case's dtype."""
    d = 1.0 - case.new_batch_weight
    return float(np.float32(d)) if case.dtype == "float32" else d


def everywhere(case, prop):
    """The region of a divergence that holds for every input (a path that cannot compute the
    property at all): the property is not run, its witness still runs as a strict xfail."""
    return True


def _f32_gap(v):
    return abs(float(np.float32(v)) - v)


def _eps_float32(case, prop):
    """float64, and eps rounded to float32 (a FLOAT attribute) moves var + eps by more than K·u64
    of it in some channel: of a batch, of the running variance (infer_forward) or, for
    affine_invariance, also of a·x + b with eps·a²; below that the error is < 1/(2·growth) of the
    float64 bound."""
    if case.dtype != "float64":
        return False
    if prop == "infer_forward":
        pairs = [(float(case.running_var.min()), case.eps)]
    else:
        pairs = [(float(case.batch(i).var(axis=_red(case)).min()), case.eps) for i in range(case.steps)]
        if prop == "affine_invariance":
            a2 = affine_draw(case)[0] ** 2
            pairs += [(v * a2, e * a2) for v, e in pairs]
    return any(_f32_gap(e) > 4 * 2.0 ** -53 * (v + e) for v, e in pairs)


def _fast_variance_loses(case, prop):
    """Where E[x²] − E[x]² loses the variance beyond the bounds: float32/float64 with max
    |mean|/sqrt(var + eps) > 3 (output, gradients) or |mean|/std > 1 (running statistics); float16 and
    bfloat16, reduced in float32, only once the whole variance is lost: |mean|/std > 300."""
    if case.dtype in ("float32", "float64"):
        return _offset_ratio(case, prop, True) > 3.0 if prop in _FORWARD else _offset_ratio(case, prop, False) > 1.0
    return _offset_ratio(case, prop, False) > 300.0


_FORWARD = ("train_forward", "gradients", "affine_invariance", "output_moments", "dx_sums_zero",
            "batch_permutation")

KNOWN = [
    # --- torch -----------------------------------------------------------------------
    Divergence(
        id="torch-fp16-invstd-overflow",
        adapters=("torch.builtin",),
        properties=_FORWARD,
        reason=("float16 on the CPU: 1/sqrt(var + eps) is stored in float16 and overflows to inf "
                "when var + eps < 2.33e-10 (= 1/65504²); a zero-variance channel then gives "
                "0·inf = NaN where the exact output is beta (witness: eps 1e-10, output NaN, oracle 0.0)"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c) < 2.4e-10,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-10, new_batch_weight=0.1),
        witness_property="train_forward"),
    Divergence(
        id="scratch-fp16-eps-underflow",
        adapters=("torch.scratch",),
        properties=_FORWARD,
        reason=("the book's code computes var + eps in the input dtype: in float16 an eps below "
                "2.98e-8 (half the smallest subnormal) rounds away, and a zero-variance channel "
                "gives 0/sqrt(0) = NaN where the exact output is beta (witness: eps 1e-8, output NaN)"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c) < 6e-8,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.1),
        witness_property="train_forward"),
    Divergence(
        id="scratch-fp16-grad-overflow",
        adapters=("torch.scratch",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16: the book's code is differentiated by autograd term by term, and the "
                "intermediates ∂L/∂var = −Σ gamma·dy·(x − mean) / (2 (var + eps)^{3/2}) and "
                "gamma·dy/sqrt(var + eps) overflow float16 (> 65504) when var + eps is small, although "
                "dx itself is representable; inf − inf then gives NaN in dx (witness: var + eps ≈ "
                "1.4e-5, |dy| ≈ 7, dx all NaN; torch.builtin's fused kernel accumulates in float32 "
                "and is finite)"),
        region=_scratch_grad_overflows,
        witness=Case(dtype="float16", shape=(2, 2), seed=323153949, log10_scale=-2.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.0),
        witness_property="gradients"),
    Divergence(
        id="scratch-fp16-square-overflow",
        adapters=("torch.scratch",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16: the book's code squares x − mean in float16, which overflows for "
                "|x − mean| > 255.9; the variance becomes inf, the output collapses to beta and the "
                "running variance to inf, or NaN (0·inf) with new-batch weight 0 (witness: std 100, "
                "running var NaN where the oracle has 1.0); torch.builtin accumulates in float32"),
        region=_scratch_square_overflows,
        witness=Case(dtype="float16", shape=(2, 1), seed=2, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats"),
    # --- tensorflow (tf.keras, tf.scratch) -------------------------------------------
    # tf.scratch ignores the case's eps: the book's layer uses 1e-5, so the regions do too.
    # k: affine_invariance adds a per-channel shift of up to ~5·max|x| to x.
    Divergence(
        id="tf-scratch-fp16-sum-overflow",
        adapters=("tf.scratch",),
        properties=_FORWARD + ("running_stats", "state_after_calls",),
        reason=("float16: the book's code takes the mean and variance with tf.reduce_mean in float16, "
                "and TensorFlow's CPU kernel accumulates the float16 sum in float16: it overflows when "
                "Σx or Σ(x − mean)² exceeds 65504 although every square and the mean are representable; "
                "the variance becomes inf, the output collapses to beta and the moving variance to inf "
                "(witness: 16 rows, max |x − mean| 123, Σ(x − mean)² 71078: max |error| 0.896, "
                "58.9× the bound, moving variance inf); tf.keras computes in float32 and is exact here"),
        region=lambda c, p: c.dtype == "float16" and any(
            (k * np.abs(x).sum(axis=red)).max() > 6e4
            or (c.count * (x.var(axis=red)
                           + ((2 + c.count ** 0.5) * 2.0 ** -11 * k * np.abs(x).max(axis=red)) ** 2)).max() > 6e4
            for red in [_red(c)] for k in [6 if p == "affine_invariance" else 1]
            for x in map(c.batch, range(c.steps))),
        witness=Case(dtype="float16", shape=(16, 1), seed=6, log10_scale=1.8, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1),
        witness_property="train_forward"),
    Divergence(
        id="tf-scratch-fp16-affine-overflow",
        adapters=("tf.scratch",),
        properties=("train_forward", "affine_invariance", "output_moments", "batch_permutation"),
        reason=("float16: the book's batch_norm computes y = x·inv + (beta − mean·inv) with "
                "inv = gamma/sqrt(var + 1e-5), not (x − mean)·inv: x·inv overflows when "
                "|x|·|gamma|/sqrt(var + eps) > 65504, and inf − inf gives NaN where the exact output is "
                "small (witness: x = 2136 twice, var 0, x·inv ≈ 2.3e5: output NaN, oracle beta = 0.069)"),
        region=lambda c, p: c.dtype == "float16" and any(
            (k * np.abs(x).max(axis=red) * np.abs(c.gamma) / np.sqrt(x.var(axis=red) + 1e-5)).max() > 6e4
            for red in [_red(c)] for k in [6 if p == "affine_invariance" else 1]
            for x in [c.x]),
        witness=Case(dtype="float16", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=3.0,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="train_forward"),
    Divergence(
        id="tf-scratch-fp16-grad-overflow",
        adapters=("tf.scratch",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16: TensorFlow's rsqrt gradient is −0.5·(g·r)·(r·r) with r = 1/sqrt(var + eps), "
                "and r·r overflows float16 when var + eps < 1.53e-5, i.e. for every channel of variance "
                "below 5.3e-6 at the book's eps 1e-5 (a zero-variance channel included): ∂L/∂var = inf "
                "for any nonzero g, and the book's x·inv − mean·inv leaves g nonzero rounding noise even "
                "where it is exactly 0; dx = inf·(x − mean) = NaN (witness: zero-variance channel, dx NaN "
                "where the oracle has ±670.6). Also ∂L/∂inv = Σ dy·x and Σ dy·inv overflow for large data"),
        region=lambda c, p: c.dtype == "float16" and any(
            v.min() < 1.6e-5 or max((g * sdx).max(), (g * np.abs(c.dy).sum(axis=red) / np.sqrt(v)).max(),
                                    (4 * g * (np.abs((c.dy * (c.x - c.x.mean(axis=red, keepdims=True))).sum(axis=red))
                                              + (2 + c.count ** 0.5) * 2.0 ** -11 * sdx) / v ** 1.5).max()) > 6e4
            for red in [_red(c)] for g in [np.abs(c.gamma)]
            for v in [c.x.var(axis=red) + 1e-5] for sdx in [np.abs(c.dy * c.x).sum(axis=red)]),
        witness=Case(dtype="float16", shape=(2, 1), seed=0, log10_scale=1.0, log10_offset=None,
                     constant_channel=True, eps=0.1, new_batch_weight=0.0),
        witness_property="gradients"),
    Divergence(
        id="tf-scratch-xla-fp16-rsqrt-grad-cube",
        adapters=("tf.scratch+xla",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16 under XLA: tf2xla lowers RsqrtGrad as r³·(g / −2), `xla::Mul((lhs * lhs) * lhs, "
                "xla::Div(rhs, IntegerLiteral(-2)))` (tensorflow/compiler/tf2xla/kernels/binary_ops.cc, "
                "XLA_MAKE_BINARY(RsqrtGrad, ...)), and XLA on the CPU evaluates it in float16: r³ overflows "
                "once r = 1/sqrt(var + 1e-5) > 65504^(1/3) = 40.3, i.e. for every channel with var + eps < "
                "6.2e-4 (std below 0.025), and ∂L/∂var = inf·g, so dx is ±inf or NaN. Eager TensorFlow's "
                "kernel computes −0.5·(g·r)·(r·r) and returns 0 for g = 0 (scalar_rsqrt_gradient_op, "
                "tensorflow/core/kernels/cwise_ops_gradients.h): finite until r·r overflows, at var + eps < "
                "1.53e-5 (tf-scratch-fp16-grad-overflow), 40× further down. Witness: float16, "
                "(2, 1), std 0.005 (var + eps 2.3e-5, r = 209, r³ = 9.1e6): dx = (inf, −inf) where eager "
                "gives (−8.875, 8.94) and the oracle (−8.89, 8.89); dgamma and dbeta are eager's, bit for "
                "bit. tf.keras+xla is unaffected (Keras computes float16 in float32)"),
        region=lambda c, p: c.dtype == "float16" and min(
            float(c.batch(i).var(axis=_red(c)).min()) for i in range(c.steps)) + 1e-5 < 7e-4,
        witness=Case(dtype="float16", shape=(2, 1), seed=1, log10_scale=-2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="gradients",
        advice="under XLA, train the book's float16 layer only on channels of std above 0.03, or in float32"),
    # --- keras 3 on jax, torch, numpy (the tf.keras+<backend> paths) --------------------
    Divergence(
        id="keras-float64-computes-float32",
        adapters=("tf.keras+jax", "tf.keras+torch", "tf.keras+numpy"),
        properties=_FORWARD + ("infer_forward", "batch_stats", "running_stats", "state_after_calls"),
        reason=("on every Keras backend but TensorFlow, a dtype=\"float64\" layer keeps float64 variables "
                "and output but computes in float32: BatchNormalization.call takes compute_dtype = "
                "backend.result_type(inputs.dtype, \"float32\") (keras/src/layers/normalization/"
                "batch_normalization.py:345, cast at :348-360), and Keras' type promotion maps float64 to "
                "float32 unless the backend is tensorflow (keras/src/backend/common/dtypes.py:240, "
                "BIT64_TO_BIT32_DTYPE, applied at :276; keras 3.15.1), jax_enable_x64 or not. The output, "
                "gradients and running statistics are float32-accurate (witness: float64, eps 0.1: "
                "training output off by 3.1e-7, 2.2e-7, 7.1e-8 = 4.7e7×, 3.3e7×, 1.1e7× the bound on numpy, "
                "torch, jax; running mean after one step off by 2.2e-8, 6.9e6×, on all three); tf.keras is "
                "float64-accurate"),
        region=lambda c, p: c.dtype == "float64",
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="train_forward",
        advice="on Keras' jax, torch or numpy backend a float64 BatchNormalization is float32-accurate: "
               "use the TensorFlow backend for float64, or compare at float32 tolerances"),
    Divergence(
        id="keras-fast-variance-offset",
        adapters=("tf.keras+torch", "tf.keras+numpy"),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("keras.ops.moments on the torch and NumPy backends computes var = E[x²] − E[x]², not "
                "clipped at 0 (keras/src/backend/torch/nn.py:980-982, keras/src/backend/numpy/nn.py:951; "
                "TensorFlow's tf.nn.moments and JAX's jnp.var take the two-pass variance), which loses "
                "~u·(|mean|/std)² of the variance, as Flax's fast variance; float16 and bfloat16 inputs are "
                "reduced in float32 (batch_normalization.py:345-348). Unclipped, var̂ can be negative: "
                "three float32 values at 1000.005, one an ulp above, give var̂ = −0.125 and a NaN output "
                "(eps 1e-12) on both backends. Witness (Flax's: float32, |mean|/std ≈ 900): training output off by "
                "0.092 (numpy, 102× the bound) and 0.056 (torch, 62×), batch variance off by 1.38 (3.1e4×) and "
                "1.12 (2.5e4×), dx off by 0.071 (torch, 23×); tf.keras+jax passes: jnp.var is two-pass "
                "(keras/src/backend/jax/nn.py:1054)"),
        region=_fast_variance_loses,
        witness=Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=1.0),
        witness_property="train_forward",
        advice="on Keras' torch or numpy backend centre data far from zero mean before BatchNormalization"),
    # --- jax / flax (flax.linen, flax.linen.two_pass, flax.nnx, jax.scratch) ----------
    Divergence(
        id="flax-fast-variance-offset",
        adapters=("flax.linen", "flax.nnx"),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("Flax's default use_fast_variance=True computes var = E[x²] − E[x]² (_compute_stats, "
                "flax/linen/normalization.py and flax/nnx/nn/normalization.py), which loses "
                "~4·u·(|mean|/std)² of the variance: float32 relative error 2.2e-3, 0.15, 7.4 at "
                "|mean|/std 1e2, 1e3, 1e4 (tests/test_jax_findings.py). Measured worst error/bound "
                "over 12 cases per offset (float32; float64 alike): training output 0.4, 0.9, 2.9, 19, "
                "102 at |mean|/std ≈ 10^0.5 … 10^3 (∝ ratio: fails above ~10); batch variance 1.8, 6.9, "
                "283 at 10^0.5 … 10^1.5 (∝ ratio²: fails above ~1.5). Region: float32/float64 with "
                "max |mean|/sqrt(var + eps) > 3 (output, gradients) or |mean|/std > 1 (running statistics); "
                "float16/bfloat16 are reduced in float32: the error is 8192× smaller than their bounds "
                "until E[x²] − E[x]² loses the whole variance (4·u32·ratio² ≈ 1) and var̂ is clipped "
                "to 0 (seen at |mean|/std ≈ 3700 in float16: output off by 300, 2.3× the bound), so "
                "|mean|/std > 300 there. flax.linen.two_pass passes everywhere (witness: float32, |mean|/std ≈ "
                "900: output off by 0.092, 102× the bound; batch var off by 1.38, 3.1e4×)"),
        region=_fast_variance_loses,
        witness=Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=1.0),
        witness_property="train_forward",
        advice="use flax.linen.BatchNorm(use_fast_variance=False) (nnx too) for data far from zero mean"),
    Divergence(
        id="flax-fp16-dx-cotangent-overflow",
        adapters=("flax.linen", "flax.linen.two_pass", "flax.nnx"),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16 input reaches float32 twice in Flax's BatchNorm: _compute_stats casts it for the "
                "statistics (flax/linen/normalization.py:114, x.astype(dtype) with dtype promoted to float32 at "
                ":112; flax/nnx/nn/normalization.py:97-98; flax 0.12.8) and _normalize's y = x − mean promotes it "
                "against the float32 mean (linen :205, nnx :170; then mul = lax.rsqrt(var + epsilon) · scale and "
                "y·mul in float32, :206-216). JAX transposes each promotion into its own float32 → float16 cast of "
                "the cotangent and adds the two in float16 (an f16 add_any in the vjp's jaxpr, "
                "tests/test_jax_findings.py): "
                "dy·gamma/sqrt(var + eps) through x − mean, and −gamma/sqrt(var + eps)·(mean(dy) + "
                "x̂·mean(dy·x̂)) through the statistics. Either one ≥ 65520 casts to ±inf; with one value per "
                "channel (var = 0, x − mean = 0) they are equal and opposite, exact dx is 0, and Flax returns "
                "inf − inf = NaN (dgamma 0 and dbeta dy are right). Witness: batch of one, dy 1.158, gamma 0.3464, "
                "eps 1e-11: rsqrt 316228, the two cotangents ±126884, dx NaN where the oracle has 0 (bound "
                "1.13e9); the same dy and gamma pass at an eps where the product is 65519.5 and fail at 65520.5; "
                "flax 0.10.2 (jax 0.4.38; linen :113, :200) alike. A batch of one is where it shows: its exact dx is 0 "
                "however large the cotangents, while with m ≥ 2 an exact dx of such a channel is as large as they "
                "are (a constant channel's is gamma/sqrt(eps)·(dy − mean(dy))) and beyond float16, and the "
                "property rejects the case. Measured over 3000 float16 draws per property "
                "(cases, min_count 1; two_pass, linen, nnx): 345, 345, 330 fail in the region, every one of one "
                "value per channel, and none passes there (the other 623, 623, 591 in it, all m ≥ 2, have an "
                "exact dx beyond float16); outside it fail only 2 and 3 draws of linen and nnx, all in "
                "flax-fast-variance-offset's region (|mean|/std ≥ 3000); a second run (two_pass, 1500 draws per "
                "property): 161 fail, all in it, none passes in it. The largest passing cotangent is 65200, the "
                "smallest failing 66621. bfloat16 (range 3.4e38; 1000 draws per property, all pass, cotangents "
                "up to 1.7e8) and float32 input are unaffected"),
        region=_flax_fp16_dx_cotangent_overflows,
        witness=Case(dtype="float16", shape=(1, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=1e-11, new_batch_weight=0.0),
        witness_property="gradients",
        advice="in float16 training where a batch can hold one value per channel keep eps ≥ "
               "(max|dy|·|gamma|/65504)², or give BatchNorm float32 input (linen: x.astype(float32); nnx: also "
               "dtype=float32, as nnx casts x to the layer's dtype, flax/nnx/nn/normalization.py:385): the two "
               "cotangents then add in float32 and dx is 0"),
    Divergence(
        id="jax-scratch-4d-reduces-n-w-c",
        adapters=("jax.scratch",),
        properties=("train_forward", "batch_stats", "running_stats", "state_after_calls", "gradients",
                    "affine_invariance", "output_moments", "dx_sums_zero"),
        reason=("the book's JAX layer is NHWC but reduces over axes (0, 2, 3), copied from the NCHW "
                "frameworks: over N, W and C, one mean and variance per row H, not per channel. The "
                "output is exactly gamma_c·(x − mean_h)/sqrt(var_h + eps) + beta_c (to 1e-15, "
                "tests/test_jax_findings.py) and the moving statistics become (1, H, 1, C) arrays; "
                "inference from per-channel statistics and batch permutation are unaffected. Identical "
                "to batch norm only for C = 1 and H = 1 (witness: (4, 2, 3, 2), output off by 0.312, "
                "9.6e13× the bound; running stats hold 6 values for 2 channels)"),
        region=lambda c, p: c.ndim == 4 and (c.channels > 1 or c.shape[2] > 1),
        witness=Case(dtype="float64", shape=(4, 2, 3, 2), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="in the book's JAX layer reduce over axes (0, 1, 2) for NHWC input"),
    # --- jax.stax, haiku, equinox ---------------------------------------------------------
    Divergence(
        id="stax-fast-variance-offset",
        adapters=("jax.stax",),
        properties=_FORWARD,
        reason=("stax.BatchNorm normalizes with jax.nn.standardize(x, axis, epsilon) "
                "(jax/example_libraries/stax.py:137), whose default algorithm=\"fast\" computes "
                "var = E[x²] − E[x]², clipped at 0 (jax/_src/nn/functions.py:697-707): the same loss of "
                "~4·u·(|mean|/std)² as Flax's fast variance, in the same region (float32/float64, "
                "max |mean|/sqrt(var + eps) > 3). witness: float32, |mean|/std ≈ 1e3: output off by 0.092, 102× "
                "the bound, as Flax's; float64 fails alike from ~10: 2.6× on golden vector train-f64-offset1e2"),
        region=lambda c, p: _offset_ratio(c, p, True) > 3.0,
        witness=Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=1.0),
        witness_property="train_forward",
        advice="center the data before stax.BatchNorm, or use a layer with a two-pass variance"),
    Divergence(
        id="haiku-fast-variance-unclipped",
        adapters=("haiku",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("hk.BatchNorm computes var = mean(x²) − mean(x)² (haiku/_src/batch_norm.py:170-181) and, "
                "unlike Flax and jax.nn.standardize, does not clip it at 0: besides the loss of "
                "~4·u·(|mean|/std)² (Flax's region: max |mean|/sqrt(var + eps) > 3 for the output, "
                "|mean|/std > 1 for the moving averages), a channel of (near) zero variance gets "
                "var̂ < 0 and rsqrt(var̂ + eps) (batch_norm.py:204) is NaN once −var̂ > eps, and the "
                "moving variance turns negative. witness: float32, a constant channel, eps 1e-7: after a·x + b "
                "the output is NaN where the oracle has 0.069; float64 golden vector train-f64-offset1e2: output "
                "2.6× the bound"),
        region=lambda c, p: (_offset_ratio(c, p, True) > 3.0 if p in _FORWARD else _offset_ratio(c, p, False) > 1.0),
        witness=Case(dtype="float32", shape=(3, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-7, new_batch_weight=0.0),
        witness_property="affine_invariance",
        advice="center the data before hk.BatchNorm; a constant channel with a small eps gives NaN"),
    Divergence(
        id="haiku-zero-debias-decay-near-one",
        adapters=("haiku",),
        properties=("running_stats", "state_after_calls"),
        reason=("Haiku's moving averages are zero-debiased: average = hidden/(1 − decay^counter) "
                "(haiku/_src/moving_averages.py:123-127), decay converted to the input's dtype "
                "(moving_averages.py:117), counter int32. With decay_rate 1 (new-batch weight 0, or a "
                "weight that rounds 1 − w to 1 in the dtype: w < 3e-8 in float32) the divisor is 0 and "
                "the moving averages are NaN after the first update, whatever they held (witness: "
                "float64, w 0: running mean NaN where the oracle has -3.58); decay 1 is outside Haiku's "
                "documented [0, 1) (moving_averages.py:57). For 0 < w ≲ 40/counter the divisor is not 1 "
                "even for a long-trained layer (counter ≤ 2^31 − 1), so the update weighs the batch by "
                "(1 − d)/(1 − d^(t+1)), not 1 − d. Region: fl(1 − w) = 1 in the dtype, or "
                "fl(1 − w)^(2^30) > 1e-20"),
        region=lambda c, p: _decay(c) == 1.0 or _decay(c) ** (2 ** 30) > 1e-20,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats",
        advice="use decay_rate < 1: a frozen moving average (decay 1) is NaN in Haiku"),
    Divergence(
        id="equinox-batch-momentum-one-nan",
        adapters=("equinox.batch",),
        properties=("infer_forward", "running_stats", "state_after_calls"),
        reason=("eqx.nn.BatchNorm(mode=\"batch\") keeps hidden averages from (0, 1) and reads "
                "hidden/(1 − momentum^counter) in inference (equinox/nn/_batch_norm.py:249-251): with "
                "momentum 1 (new-batch weight 0, or any w < 1.1e-16, for which 1 − w rounds to 1) the "
                "divisor is 0 once counter > 0, and inference reads 0/0 = NaN for the mean and 1/0 = inf "
                "for the variance of a fresh layer, NaN for a loaded one (witness: float64, w 0: running "
                "mean NaN after one step). Equinox documents momentum in (0, 1) (_batch_norm.py:117-118). "
                "The docstring says inference uses the \"unbiased variance\" (_batch_norm.py:47-48); the "
                "variance kept is the biased one (_batch_norm.py:213, probes: biased)"),
        region=lambda c, p: 1.0 - c.new_batch_weight == 1.0,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats",
        advice="use momentum < 1 with mode='batch'"),
    Divergence(
        id="equinox-ema-normalizes-with-moving-averages",
        adapters=("equinox.ema",),
        properties=("train_forward", "gradients", "affine_invariance", "output_moments", "dx_sums_zero"),
        reason=("eqx.nn.BatchNorm(mode=\"ema\"), what a layer built without mode is (with a warning, "
                "_batch_norm.py:130-137), normalizes a training batch with the updated moving averages "
                "(1 − momentum)·batch + momentum·running, not with the batch statistics "
                "(equinox/nn/_batch_norm.py:235-240, 264); only the first training call of a fresh layer "
                "uses the batch statistics (ema_first_time_index, :238-239). After a checkpoint is "
                "loaded, the training output, its gradients (through the moving averages) and the "
                "invariances of batch norm hold only for new-batch weight 1. witness: float64, w 0.1, running "
                "statistics set: output off by 4.17, 1.7e15× the bound"),
        region=lambda c, p: c.new_batch_weight != 1.0,
        witness=Case(dtype="float64", shape=(8, 2), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="use mode='batch' (Equinox recommends it); mode='ema' is not batch norm in training"),
    # --- onnx (onnx.node and its paths, torch.builtin's ONNX exports) --------------------
    Divergence(
        id="onnx-eps-float32",
        adapters=("onnx.node", "torch.builtin+onnx", "torch.builtin+onnx_dynamo"),
        properties=("train_forward", "infer_forward", "affine_invariance", "output_moments"),
        reason=("ONNX's BatchNormalization takes epsilon as a FLOAT attribute (onnx/defs/nn/defs.cc:1687, "
                "opset 15; old.cc:3410 and 3551, opsets 9 and 14) and onnxruntime keeps it as "
                "`float epsilon_` (onnxruntime/core/providers/cpu/nn/batch_norm.h:41, used at 167 and 171), "
                "so a float64 graph normalizes with var + float32(eps): eps 0.1 is 0.10000000149, and "
                "where eps is not negligible against the variance the float64 output is float32-accurate "
                "(the exporters write `epsilon_f`, symbolic_opset14.py:113, and onnxscript's torchlib "
                "likewise). Witness: float64, eps 0.1: inference output off by 1.78e-10, 9.0e4× the "
                "bound; training output off by 9.85e-10, 1.5e5×. float32 is exact here (the rounding is "
                "below its own)"),
        region=_eps_float32,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="infer_forward",
        advice="in float64 use an eps that float32 holds exactly (a power of two), or expect float32-accurate outputs"),
    Divergence(
        id="onnx-momentum-float32",
        adapters=("onnx.node", "torch.builtin+onnx"),
        properties=("running_stats", "state_after_calls"),
        reason=("ONNX's momentum is a FLOAT attribute (onnx/defs/nn/defs.cc:1692, default 0.9f) and "
                "onnxruntime keeps it as `float momentum_` (batch_norm.h:55), updating "
                "input·momentum + batch·(1. − momentum) (batch_norm.h:154-155): the new batch weighs "
                "1 − float32(1 − w), 0.10000000149 for w = 0.1 (the TorchScript exporter writes "
                "momentum_f = 1 − momentum, symbolic_opset14.py:114); float64 running statistics are "
                "float32-accurate, as mxnet.gluon's (witness: float64, w 0.1, running mean off by "
                "3.29e-8, 9.4e6× the bound)"),
        region=lambda c, p: c.dtype == "float64" and _f32_gap(1.0 - c.new_batch_weight) > 0,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.1),
        witness_property="running_stats",
        advice="expect ONNX running statistics accurate to float32 only, even in a float64 graph"),
    Divergence(
        id="onnx-dynamo-training-exports-inference",
        adapters=("torch.builtin+onnx_dynamo",),
        properties=("train_forward", "batch_stats", "running_stats", "affine_invariance", "output_moments"),
        reason=("torch.onnx.export(dynamo=True) (torch 2.13.0, onnxscript 0.7.2) ignores training= (the "
                "dynamo branch of torch/onnx/__init__.py does not pass it on) and translates a "
                "training-mode BatchNorm (aten._native_batch_norm_legit_functional, training=True) into "
                "an inference node: onnxscript's torchlib sets `training = False` (onnxscript/"
                "function_libs/torch_lib/ops/core.py:7337, a \"temporary fix\" because onnxruntime "
                "supported training mode only below opset 14) and drops the running-statistics "
                "updates. The exported graph is one BatchNormalization without training_mode "
                "(epsilon 1e-5, momentum 0.9): the output is normalized with the running statistics, "
                "which never change (witness: output off by 14.2, 1.2e7× the bound). No warning but "
                "torch's generic \"Exporting a model while it is in training mode\""),
        region=everywhere,
        witness=Case(dtype="float32", shape=(4, 2), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="export BatchNorm for training with the TorchScript exporter (dynamo=False), or train in torch"),
    # --- paddle (paddle.builtin and its paths) -----------------------------------------
    Divergence(
        id="paddle-eps-float32",
        adapters=("paddle.builtin",),
        properties=("train_forward", "infer_forward", "gradients", "affine_invariance", "output_moments"),
        reason=("Paddle's batch-norm kernels take epsilon as a C++ float (BatchNormKernel and "
                "BatchNormInferKernel: `float epsilon`, paddle/include/paddle/phi/kernels/batch_norm_kernel.h:32 "
                "and :51 in the 3.3.1 wheel; phi::BatchNormKernel forms (saved_variance + epsilon) and "
                "(var + epsilon) with it, paddle/phi/kernels/cpu/batch_norm_kernel.cc), so a float64 layer "
                "normalizes with var + float32(eps): eps 0.1 is 0.10000000149, and where eps is not "
                "negligible against the variance the float64 output and gradients are float32-accurate. "
                "Witness: float64, eps 0.1: inference output off by 1.78e-10, 9.0e4× the bound; training "
                "output off by 9.85e-10, 1.5e5×; dx off by 4.31e-9, 3.3e4×. float32 is exact here"),
        region=_eps_float32,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="infer_forward",
        advice="in a float64 Paddle layer use an eps that float32 holds exactly (a power of two), or expect "
               "float32-accurate outputs"),
    Divergence(
        id="paddle-momentum-float32",
        adapters=("paddle.builtin",),
        properties=("running_stats", "state_after_calls"),
        reason=("the kernels take momentum as a C++ float (`float momentum`, "
                "paddle/include/paddle/phi/kernels/batch_norm_kernel.h:31) and update "
                "running·momentum + batch·(1. − momentum) (paddle/phi/kernels/cpu/batch_norm_kernel.cc): "
                "momentum 0.9 is 0.89999998, so the new batch weighs 1 − float32(0.9) = 0.10000002384 "
                "(measured, tests/test_paddle_findings.py); float64 running statistics are float32-accurate, "
                "as mxnet.gluon's and ONNX's (witness: float64, weight 0.1, running mean off by 3.29e-8, "
                "9.4e6× the bound)"),
        region=lambda c, p: c.dtype == "float64" and _f32_gap(1.0 - c.new_batch_weight) > 0,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.1),
        witness_property="running_stats",
        advice="expect Paddle's running statistics accurate to float32 only, even in a float64 layer"),
    # --- mxnet (mxnet.gluon, mxnet.scratch) -------------------------------------------
    Divergence(
        id="mxnet-scratch-fp16-sum-overflow",
        adapters=("mxnet.scratch",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16: mxnet.np's mean stores the sum in the input dtype before dividing, so "
                "X.mean() and ((X − mean)**2).mean() are inf when a channel's sum of |x|, or of "
                "squares, passes 65504, although the mean is representable (np.array([4e4, 4e4], "
                "'float16').mean() is inf); output and gradients become NaN and the moving "
                "statistics inf or NaN (witness: 12 values near 6400, Σx ≈ 7.7e4, output NaN)"),
        region=lambda c, p: c.dtype == "float16" and any(
            max(float(np.abs(x).sum(axis=r).max()) * (14 if p == "affine_invariance" else 1),
                float(((x - x.mean(axis=r, keepdims=True)) ** 2).sum(axis=r).max())
                * (100 if p == "affine_invariance" else 1)) > 6e4
            for x, r in ((c.batch(i), _red(c)) for i in range(c.steps))),
        witness=Case(dtype="float16", shape=(1, 1, 3, 4), seed=0, log10_scale=0.0,
                     log10_offset=3.4771212547196626, constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="train_forward",
        advice="run the book's layer in float32: the float16 mean stores its sum in float16"),
    Divergence(
        id="gluon-fp16-var-eps-underflow",
        adapters=("mxnet.gluon",),
        properties=_FORWARD,
        reason=("float16 on the CPU: the kernel forms var + DType(eps) in float16 (VARIANCE_TO_INVSTD in "
                "src/operator/nn/batch_norm-inl.h; float + half_t is half_t), although it accumulates "
                "in float32; an eps below 2.98e-8 rounds to 0 and a zero-variance channel gives "
                "0·inf = NaN where the exact output is beta (witness: eps 1e-8, output NaN, oracle beta)"),
        region=_fp16_eps_vanishes,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="in float16 use eps ≥ 6e-8 (the default 1e-5 is safe), or run BatchNorm in float32"),
    Divergence(
        id="gluon-fp16-var-eps-overflow",
        adapters=("mxnet.gluon",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16 on the CPU: var + eps is formed in float16 (as above) and overflows when "
                "var + eps > 65504 (|x − mean| ≈ 256 and more), although the sum of squares is float32; "
                "1/sqrt(inf) = 0, the output collapses to beta and the running variance 1/0² − eps "
                "becomes inf, or NaN (0·inf) with new-batch weight 0 (witness: var 1.35e5, running var "
                "NaN where the oracle has 0.2375; output error 0.395 = 86× the bound)"),
        region=lambda c, p: c.dtype == "float16" and max(
            float(c.batch(i).var(axis=_red(c)).max()) for i in range(c.steps)
        ) * (100 if p == "affine_invariance" else 1) + c.eps > 6.5e4,
        witness=Case(dtype="float16", shape=(2, 1), seed=2, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats",
        advice="keep the per-channel std of float16 inputs below 256, or run BatchNorm in float32"),
    Divergence(
        id="gluon-momentum-float32",
        adapters=("mxnet.gluon",),
        properties=("running_stats", "state_after_calls",),
        reason=("the operator keeps momentum as a C++ float (BatchNormParam: `float momentum`, "
                "src/operator/nn/batch_norm-inl.h): momentum 0.9 is 0.89999998, so the new batch "
                "weighs 1 − fl32(momentum) = 0.10000002 instead of 0.1, whatever the dtype; float64 "
                "running statistics are only float32-accurate (witness: float64, weight 0.1, running "
                "mean off by 3.29e-8 = 9.4e6× the bound)"),
        region=lambda c, p: float(np.float32(1.0 - c.new_batch_weight)) != 1.0 - c.new_batch_weight,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.1),
        witness_property="running_stats",
        advice="expect running statistics accurate to float32 only, even in float64"),
    Divergence(
        id="mxnet-scratch-fp16-eps-underflow",
        adapters=("mxnet.scratch",),
        properties=_FORWARD,
        reason=("the book's code computes var + eps in the input dtype: in float16 an eps below "
                "2.98e-8 rounds away, and a zero-variance channel gives 0/sqrt(0) = NaN where the "
                "exact output is beta (witness: eps 1e-8, output NaN)"),
        region=_fp16_eps_vanishes,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="run the book's layer in float32 (its eps 1e-12 vanishes in float16)"),
    Divergence(
        id="mxnet-scratch-fp16-square-overflow",
        adapters=("mxnet.scratch",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16: the book's code squares x − mean in float16, which overflows for "
                "|x − mean| > 255.9; the variance becomes inf, the output collapses to beta and the "
                "moving variance to inf, or NaN (0·inf) with new-batch weight 0 (witness: std 100, "
                "running var NaN where the oracle has 0.2375)"),
        region=_scratch_square_overflows,
        witness=Case(dtype="float16", shape=(2, 1), seed=2, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats",
        advice="run the book's layer in float32"),
    Divergence(
        id="mxnet-scratch-fp16-grad-overflow",
        adapters=("mxnet.scratch",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16: the book's code is differentiated by autograd term by term, and the "
                "intermediates ∂L/∂var = −Σ gamma·dy·(x − mean) / (2 (var + eps)^{3/2}) and "
                "∂L/∂mean = −Σ gamma·dy/sqrt(var + eps) overflow float16 (> 65504) when var + eps is "
                "small, although dx itself is representable; x − mean is at least the float16 rounding "
                "of the mean, so a zero-variance channel with a small eps overflows too (witness: "
                "var + eps ≈ 1.4e-5, dx NaN; gluon's fused kernel accumulates in float32 and is finite)"),
        region=lambda c, p: c.dtype == "float16" and any(
            (g * np.abs(c.dy).sum(axis=r) * (1 / np.sqrt(s2) + (np.abs(x - x.mean(axis=r, keepdims=True)).max(axis=r)
             + 1e-3 * np.abs(x).max(axis=r)) / (2 * s2 ** 1.5))).max() > 65504 / 4
            for x, r, g in [(c.x, _red(c), np.abs(c.gamma))]
            for s2 in [x.var(axis=r) + c.eps]),
        witness=Case(dtype="float16", shape=(2, 2), seed=323153949, log10_scale=-2.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.0),
        witness_property="gradients",
        advice="run the book's layer in float32"),
    # --- mlx -------------------------------------------------------------------------
    Divergence(
        id="mlx-fp16-rsqrt-vjp-overflow",
        adapters=("mlx.builtin",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16 (MLX 0.32.4, CPU): mlx.nn.BatchNorm normalizes with mx.rsqrt(var + eps) "
                "(mlx/nn/layers/normalization.py:414), whose vjp is −0.5·dy·(rsqrt(v)/v) with rsqrt(v)/v "
                "formed in the input dtype (mlx/primitives.cpp, Sqrt::vjp, one_over_x_root_x): v^{-3/2} "
                "overflows float16 (> 65504) for var + eps < 6.2e-4, although the gradient is representable; "
                "inf·0 then gives NaN in every dx of the channel (witness: var + eps ≈ 5.0e-4, dx NaN where "
                "the oracle has 18.9 against a bound of 15.7; float32, float64 and bfloat16 are finite)"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c) < 7e-4,
        witness=Case(dtype="float16", shape=(2, 1), seed=0, log10_scale=-1.0, log10_offset=None,
                     constant_channel=False, eps=1e-4, new_batch_weight=0.0),
        witness_property="gradients",
        advice="train MLX models with BatchNorm in float32 or bfloat16, or keep var + eps above 6.2e-4 in float16"),
    Divergence(
        id="mlx-fp16-eps-underflow",
        adapters=("mlx.builtin",),
        properties=_FORWARD,
        reason=("float16 (MLX 0.32.4, CPU): mx.rsqrt(var + self.eps) (mlx/nn/layers/normalization.py:414) adds "
                "the Python float eps as a weak scalar, in the input dtype (python/src/utils.cpp:82, :42 at "
                "v0.32.1): an eps below 2.98e-8 (half the "
                "smallest float16 subnormal) rounds away, and a zero-variance channel gives 0·rsqrt(0) = 0·inf "
                "= NaN where the exact output is beta (witness: eps 1e-8, output NaN, oracle 0.069). "
                "affine_invariance meets it on a·x + b: rounded to float16 a channel can become constant "
                "(eps 1e-10, a = 6.846, b = 2490.25: −1971·a + b = −11003.8 and −1970·a + b = −10996.9 both round "
                "to −11000, float16's spacing there being 8), and eps·a² = 4.7e-9 rounds to 0: var 0, rsqrt inf, "
                "the channel's 4 outputs NaN where y(x) has −0.061 (3) and 15.7)"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c, p) < 6e-8,
        witness=Case(dtype="float16", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.0),
        witness_property="train_forward",
        advice="in float16 MLX models keep eps ≥ 6e-8 (the default 1e-5 is fine)"),
    Divergence(
        id="mlx-fp16-var-square-overflow",
        adapters=("mlx.builtin",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16 (MLX 0.32.4, CPU): the batch variance is mx.var (mlx/nn/layers/normalization.py:374), "
                "sum(square(x − mean)) · (1/n) in the input dtype (mlx/ops.cpp, var()): the sum overflows float16 "
                "when Σ (x − mean)² > 65504 (one |x − mean| > 255.9 suffices) although the variance and the "
                "output are representable; the variance becomes inf, the "
                "output collapses to beta, the gradient of gamma to 0 and the running variance to inf "
                "(witness: std ~ 100, dgamma 0 where the oracle has −1.02, 17.9× the bound; torch.builtin "
                "accumulates float16 in float32)"),
        region=_fp16_sum_of_squares_overflows,
        witness=Case(dtype="float16", shape=(2, 1), seed=2, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="gradients",
        advice="keep Σ (x − mean)² per channel below 65504 in float16 MLX models (normalize inputs), "
               "or run BatchNorm in float32"),
    Divergence(
        id="mlx-fp16-mean-sum-overflow",
        adapters=("mlx.builtin",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16 (MLX 0.32.4, CPU): the batch mean is mx.mean (mlx/nn/layers/normalization.py:373), "
                "sum(x) · (1/n) with the sum in the input dtype (mlx/ops.cpp, mean(); line 2337 at v0.32.1): the sum "
                "overflows float16 when |Σ x| of a channel > 65504, although the mean is representable "
                "(11 values of 6411 sum to 70,521); the mean becomes inf, x − mean −inf, the variance inf, "
                "and the output, the gradients and the running statistics NaN (witness: mean 6411, batch "
                "mean inf, running mean NaN where the oracle has −3.58; mx.mean of the same values in "
                "float32 is 6412; torch.builtin accumulates float16 in float32)"),
        region=_fp16_channel_sum_overflows,
        witness=Case(dtype="float16", shape=(11, 1), seed=0, log10_scale=0.0, log10_offset=3.477,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="batch_stats",
        advice="keep |Σ x| per channel below 65504 in float16 MLX models (normalize inputs, or smaller "
               "batches), or run BatchNorm in float32"),
]


# What an external implementation declares can imply a documented region of a registered one: a
# declared fast variance (E[x²] − E[x]²) loses what Flax's does, on the same inputs.
BY_CONVENTION = {("variance", "fast"): "flax-fast-variance-offset"}


def divergences(adapter, property_name=None):
    """The documented divergences of an adapter (a registered name, or a class: an external one gets
    those its declared conventions imply, ``BY_CONVENTION``)."""
    from equiv.paths import PATHS
    name = adapter if isinstance(adapter, str) else adapter.name
    names = {name, PATHS[name].base} if name in PATHS else {name}   # a path inherits its base's regions
    found = [d for d in KNOWN if names & set(d.adapters)]
    if not isinstance(adapter, str) and getattr(adapter, "external", False):
        ids = {i for (field, value), i in BY_CONVENTION.items() if getattr(adapter.conventions, field) == value}
        found += [d for d in KNOWN if d.id in ids]
    return [d for d in found if property_name is None or property_name in d.properties]


def excluded(adapter, property_name, case):
    """The known divergence whose region holds this case, or None."""
    for d in divergences(adapter, property_name):
        if d.region(case, property_name):
            return d
    return None
