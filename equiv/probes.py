"""Measure an adapter's conventions by running it, never by reading its declaration.

Each probe builds fresh layers, feeds inputs designed so that the convention is the
only unknown, and returns the measured value in the vocabulary of
``equiv.core.Conventions``. ``measure(adapter_cls)`` returns one record.
"""
import numpy as np

import reference as ref
from equiv.core import MomentumRequired


# float64 where the adapter offers it: the probes then resolve 1e-12 eps and 1e-2 weights.
def _dtype(A):
    return "float64" if "float64" in A.dtypes else "float32"


def _batch(shape, seed=0, mean=0.0, std=1.0):
    x = np.random.default_rng(seed).standard_normal(shape)
    red = (0,) + tuple(range(2, len(shape)))
    x = (x - x.mean(axis=red, keepdims=True)) / x.std(axis=red, keepdims=True)
    return mean + std * x


def _make(A, c, ndim, dtype=None, weight_one=False, **kw):
    """A layer as built with the default momentum; where the framework requires a momentum
    (``MomentumRequired``), with new-batch weight 0.1. ``weight_one``: with new-batch weight 1
    where the momentum can be set, for a probe whose value does not depend on it (Equinox's
    mode="ema" normalizes a training batch with its moving averages, which are then the batch's)."""
    dtype = dtype or _dtype(A)
    if weight_one and A.conventions.configurable:
        kw["new_batch_weight"] = 1.0
    try:
        return A(c, ndim, dtype=dtype, **kw)
    except MomentumRequired:
        return A(c, ndim, dtype=dtype, **dict(kw, new_batch_weight=0.1))


def _running(a):
    """The running statistics of a layer, or None for a layer that keeps none."""
    s = a.get_state()
    return (s["running_mean"], s["running_var"]) if "running_mean" in s else None


def _fresh(A, ndim=2, c=3, **kw):
    a = _make(A, c, ndim, **kw)
    a.set_state(gamma=np.ones(c), beta=np.zeros(c), running_mean=np.zeros(c), running_var=np.ones(c))
    return a


def new_batch_weight(A):
    """Weight of the new batch with the default momentum: running mean after one step from 0
    on a batch of mean 1; "required" where the framework refuses a layer without a momentum,
    "none" for a layer without running statistics."""
    try:
        a = A(3, 2, dtype=_dtype(A))
    except MomentumRequired:
        return "required"
    a.set_state(gamma=np.ones(3), beta=np.zeros(3), running_mean=np.zeros(3), running_var=np.ones(3))
    x = _batch((8, 3), mean=1.0)
    a.train_step(x, np.zeros_like(x))
    stats = _running(a)
    return "none" if stats is None else float(np.round(stats[0].mean(), 6))


def running_var(A):
    """"unbiased" or "biased": the running var after one step with new-batch weight w, solved
    for the batch variance and compared with m/(m−1) (m = 4, so 4/3 apart); "none" for a layer
    without running statistics."""
    a = _fresh(A)
    w = a.new_batch_weight
    x = _batch((4, 3), std=2.0)                     # biased var exactly 4
    a.train_step(x, np.zeros_like(x))
    stats = _running(a)
    if stats is None:
        return "none"
    est = (stats[1].mean() - (1 - w)) / w
    return "unbiased" if abs(est - 4 * 4 / 3) < abs(est - 4) else "biased"


def default_eps(A):
    """Solve y = x̂·gamma with x̂ = (x − mean)/sqrt(var + eps) for eps, on channels of
    variance 1e-14 … 1, and keep the estimate from the best-conditioned channel."""
    variances = 10.0 ** np.arange(-14, 1, 1.0)
    c = len(variances)
    a = _fresh(A, c=c, weight_one=True)
    x = _batch((4, c)) * np.sqrt(variances)          # biased var exactly `variances`
    y = a.forward_train(x)
    x_hat = y[0] / (x[0] - x.mean(axis=0))           # = 1/sqrt(var + eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = 1.0 / x_hat ** 2 - variances
    share = est / (est + variances)                  # how much eps matters in var + eps
    ok = np.isfinite(est) & (share > 0.05) & (share < 0.95)
    if not ok.any():
        return float("nan")
    best = np.argmin(np.abs(share - 0.5) + ~ok)
    return float(f"{est[best]:.2g}")


def variance_algorithm(A):
    """"two-pass" or "fast", from the output of a float32 training forward on a batch with
    |mean|/std = 1e4: the output's std is sqrt(var/(var̂ + eps)), and E[x²] − E[x]² misses
    var by up to ~u·1e8 ≈ 6 where a stable algorithm is within ~1e-5 (at 1e3 a fast variance
    can still land within 1e-5 on lucky data: Flax 0.12 did)."""
    a = _make(A, 1, 2, dtype="float32", weight_one=True)
    a.set_state(gamma=np.ones(1), beta=np.zeros(1), running_mean=np.zeros(1), running_var=np.ones(1))
    x = _batch((64, 1), seed=3, mean=1e4).astype(np.float32).astype(np.float64)
    y = a.forward_train(x)
    return "fast" if abs(np.std(y) * np.sqrt(1 + a.eps / x.var()) - 1.0) > 1e-3 else "two-pass"


def stats_update(A):
    """When the running stats change: after a training forward alone ("forward"), only after
    a full training step ("backward"); "+init" when building the layer changed them already
    (initial values other than a zero mean and a variance of 1 or 0); "never" without running
    statistics."""
    c = 3
    s0 = _running(_make(A, c, 2))
    if s0 is None:
        return "never"
    at_init = not (np.allclose(s0[0], 0) and (np.allclose(s0[1], 1) or np.allclose(s0[1], 0)))
    a = _fresh(A, c=c)
    x = _batch((8, c), mean=1.0, std=2.0)
    a.forward_train(x)
    if not np.allclose(_running(a)[0], 0):
        when = "forward"
    else:
        a.train_step(x, np.ones_like(x))
        when = "backward" if not np.allclose(_running(a)[0], 0) else "never"
    return when + ("+init" if at_init else "")


def default_mode(A):
    """What a plain call of a freshly built layer does: "training" (batch stats),
    "inference" (running stats) or "error"."""
    a = _fresh(A, weight_one=True)
    a.set_state(gamma=np.ones(3), beta=np.zeros(3), running_mean=np.full(3, 5.0), running_var=np.full(3, 4.0))
    x = _batch((8, 3), mean=1.0)
    try:
        y = a.forward_default(x)
    except Exception:
        return "error"
    y_train, _, _ = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=a.eps)
    y_infer = ref.batch_norm_infer(x, np.ones(3), np.zeros(3), np.full(3, 5.0), np.full(3, 4.0), eps=a.eps)
    if np.allclose(y, y_train, atol=1e-3):
        return "training"
    if np.allclose(y, y_infer, atol=1e-3):
        return "inference"
    return "other"


def batch_of_one(A):
    """A training forward with one value per channel (2-D input of one row)."""
    a = _fresh(A, weight_one=True)
    a.set_state(gamma=np.ones(3), beta=np.full(3, 0.5), running_mean=np.zeros(3), running_var=np.ones(3))
    try:
        y = a.forward_train(np.array([[1.0, 2.0, 3.0]]))
    except Exception:
        return "error"
    if np.isnan(y).any():
        return "nan"
    if np.allclose(y, 0.5):
        return "beta"
    return "input" if np.allclose(y, [[1.0, 2.0, 3.0]]) else "other"


def channel_axis(A):
    """The axis the native layer normalizes over: a training forward of the native layer on
    (6, 3, 4, 5) and on (6, 4, 5, 3) for a 3-channel layer; the layout it accepts and
    normalizes per channel is its own."""
    a = _make(A, 3, 4, weight_one=True)
    a.set_state(gamma=np.ones(3), beta=np.zeros(3), running_mean=np.zeros(3), running_var=np.ones(3))
    found = []
    for axis, shape in ((1, (6, 3, 4, 5)), (-1, (6, 4, 5, 3))):
        x = np.random.default_rng(axis % 7).standard_normal(shape)
        try:
            y = a.forward_native(x)
        except Exception:
            continue
        expected, _, _ = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=a.eps, axis=axis)
        if np.shape(y) == expected.shape and np.allclose(y, expected, atol=1e-3):
            found.append(axis)
    return found[0] if len(found) == 1 else ("none" if not found else f"unclear: {found}")


def debias(A):
    """How the first updates of a freshly built layer (its own initial state, nothing set) weigh
    the batch: two training steps on batches of mean 1 and 3. "none": the plain moving average
    from the initial mean, μ0 + w·(1 − μ0) after one step; "first": the first step replaces it
    (1, then 1 + w·2); "zero": Adam's zero debiasing (1, then (d + 3)/(1 + d), d = 1 − w)."""
    a = _make(A, 3, 2)
    s0 = _running(a)
    if s0 is None:
        return "n/a"                                 # no moving averages to debias
    w = a.new_batch_weight
    for step, mean in enumerate((1.0, 3.0)):
        x = _batch((8, 3), seed=step, mean=mean)
        a.train_step(x, np.zeros_like(x))
        m = float(_running(a)[0].mean())
        if step == 0:
            plain = float(s0[0].mean()) + w * (1.0 - float(s0[0].mean()))
            if np.isclose(m, plain, rtol=1e-4, atol=1e-9):
                return "none"
            if not np.isclose(m, 1.0, rtol=1e-4):
                return f"other: {m:.6g} after one step"
    d = 1.0 - w
    for name, value in (("first", 1.0 + w * 2.0), ("zero", (d + 3.0) / (1.0 + d))):
        if np.isclose(m, value, rtol=1e-4):
            return name
    return f"other: {m:.6g} after two steps"


def initial_stats(A):
    """The running mean and variance of a freshly built layer, "mean, var" (one value each when
    all channels agree); "none" for a layer without running statistics."""
    stats = _running(_make(A, 3, 2))
    if stats is None:
        return "none"
    vals = []
    for v in stats:
        v = np.asarray(v, dtype=np.float64)
        vals.append(f"{float(v.flat[0]):.6g}" if v.size and np.all(v == v.flat[0]) else "varies")
    return ", ".join(vals)


PROBES = {
    "new_batch_weight": new_batch_weight,
    "running_var": running_var,
    "default_eps": default_eps,
    "variance": variance_algorithm,
    "stats_update": stats_update,
    "default_mode": default_mode,
    "batch_of_one": batch_of_one,
    "channel_axis": channel_axis,
    "debias": debias,
    "initial_stats": initial_stats,
}


def expected(A, field):
    """The declared value of a probed field ("n/a" where the adapter says the probe cannot measure
    it: ``A.unmeasured``, field -> reason)."""
    if field in getattr(A, "unmeasured", {}):
        return "n/a"
    conv = A.conventions
    if field == "new_batch_weight":
        if conv.running_var == "none":
            return "none"
        return "required" if conv.default_momentum is None else conv.default_new_batch_weight
    return getattr(conv, field)


def matches(field, measured, declared):
    if declared == "n/a":          # not claimed (an external function has no default mode)
        return True
    if isinstance(declared, float):
        return isinstance(measured, (int, float)) and bool(np.isclose(measured, declared, rtol=0.05, atol=0))
    return measured == declared


_WORDS = {
    "new_batch_weight": lambda v: f"a new-batch weight of {v:g} for the default momentum"
    if isinstance(v, (int, float)) else str(v),
    "running_var": lambda v: f"{'an' if v == 'unbiased' else 'a'} {v} running variance"
    if v in ("biased", "unbiased") else str(v),
    "default_eps": lambda v: f"a default eps of {v:g}" if isinstance(v, (int, float)) else str(v),
    "variance": lambda v: {"two-pass": "the two-pass batch variance",
                           "fast": "the fast batch variance E[x²] − E[x]²"}.get(v, str(v)),
    "stats_update": lambda v: f"running statistics that change in the {v}"
    if isinstance(v, str) and v.startswith(("forward", "backward")) else f"running statistics that change {v}",
    "default_mode": lambda v: f"a plain call in {v} mode" if v in ("training", "inference") else
    f"a plain call that is an {v}" if v == "error" else f"a plain call that does {v}",
    "batch_of_one": lambda v: {"error": "an error for a batch of one", "beta": "beta as the output for a "
                               "batch of one", "nan": "NaN for a batch of one",
                               "input": "the input, unnormalized, as the output for a batch of one"}.get(
                                   v, f"{v} for a batch of one"),
    "channel_axis": lambda v: f"channel axis {v}",
    "debias": lambda v: {"none": "no debiasing of the first updates", "zero": "zero debiasing "
                         "(hidden/(1 − decay^t))", "first": "a first update that replaces the initial "
                         "values"}.get(v, str(v)),
    "initial_stats": lambda v: f"initial running mean, var {v}",
}


def describe(field, measured, declared):
    """A convention mismatch in words: 'declared an unbiased running variance; measured a biased one'."""
    words = _WORDS.get(field, str)
    if isinstance(measured, str) and measured.startswith("probe failed"):
        return f"{field}: declared {words(declared)}; the probe could not measure it ({measured})"
    return f"{field}: declared {words(declared)}; measured {words(measured)}"


def measure(A):
    """One record of measured conventions for an adapter class.

    A probe that cannot run is recorded as a failure, never as a value: its field is left
    out of the record and ``rec["probe_failures"][field]`` says why ("AttributeError: ...").
    Records with failures are not written as measured conventions (``equiv conventions``,
    ``equiv fingerprint --save`` refuse them).
    """
    rec = {"adapter": A.name, "framework": A.framework}
    failures = {}
    for field, probe in PROBES.items():
        if field in getattr(A, "unmeasured", {}):   # the probe does not apply (A.unmeasured says why)
            rec[field] = "n/a"
            continue
        try:
            rec[field] = probe(A)
        except Exception as e:   # a probe that cannot run is reported, not hidden
            failures[field] = f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]
    rec["mode_switch"] = A.conventions.mode_switch
    if failures:
        rec["probe_failures"] = failures
    return rec


def failures_line(name, failures):
    """One line naming the failed probes of an adapter."""
    return f"{name}: " + "; ".join(f"probe {f} failed ({why})" for f, why in failures.items())
