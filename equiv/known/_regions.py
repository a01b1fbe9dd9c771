"""The regions of the documented findings: where on the inputs each shows, as functions of a case
(and the property that runs it), shared by the framework modules of ``equiv.known``."""
import numpy as np

from equiv.dtypes import MAX_VALUE, round_to
from equiv.strategies import affine_draw


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


def global_offset_ratio(pc):
    """max over channels and steps of |mean|/std of the global batch (inf for a constant channel
    off zero): E[x²] − E[x]² loses ~u·ratio² of the variance."""
    c = pc.case
    with np.errstate(divide="ignore", invalid="ignore"):
        return max(float(np.nan_to_num(np.abs(x.mean(axis=_red(c))) / x.std(axis=_red(c)), nan=0.0).max())
                   for x in map(c.batch, range(c.steps)))


def fold_intermediates_overflow(state):
    """float16, and one of the values a fold computes in float16 beyond its range (less half an
    ulp of margin): rsqrt(var + eps), s = gamma·rsqrt, W·s, (b − mean)·rsqrt, (b − mean)·s."""
    if state.dtype != "float16":
        return False
    r = 1 / np.sqrt(state.running_var + state.eps)
    s = np.abs(state.gamma) * r
    b = np.zeros_like(r) if state.b is None else state.b
    dm = np.abs(b - state.running_mean)
    w_max = np.abs(state.w).reshape(len(r), -1).max(axis=1)
    top = max(float(v.max()) for v in (r, s, w_max * s, dm * r, dm * s))
    return top >= MAX_VALUE["float16"] * (1 - 2.0 ** -12)


def under(setting, region=everywhere):
    """The region of a divergence that shows only with the layer options ``setting`` (then where
    ``region`` holds); ``.whole``: for every case with the setting (the property is not run)."""
    def holds(case, prop):
        return all(case.options.get(k) == v for k, v in setting.items()) and region(case, prop)
    holds.setting, holds.whole = dict(setting), region is everywhere
    return holds


def _low_precision_fast_variance(case, prop):
    """float16/bfloat16 reduced in their own dtype (Flax force_float32_reductions=False): E[x²] − E[x]²
    loses the variance as float32's does, by the same rule: max |mean|/sqrt(var + eps) > 3 (output,
    gradients) or |mean|/std > 1 (running statistics)."""
    if case.dtype not in ("float16", "bfloat16"):
        return False
    return _offset_ratio(case, prop, True) > 3.0 if prop in _FORWARD else _offset_ratio(case, prop, False) > 1.0


def _fp16_square_overflows(case, prop):
    """float16 reduced in float16: x² or (x − mean)² beyond its range (|x| or |x − mean| ≥ 256) in some
    batch (for affine_invariance also a·x + b, as the property draws it)."""
    if case.dtype != "float16":
        return False
    xs = [case.batch(i) for i in range(case.steps)]
    if prop == "affine_invariance":
        a, b = affine_draw(case)
        xs.append(a * case.x + b)
    red = _red(case)
    return max(float(np.maximum(np.abs(x), np.abs(x - x.mean(axis=red, keepdims=True))).max()) for x in xs) >= 256.0
