"""Tolerances: from the dtype's unit roundoff and the input's conditioning, nothing else.

Every bound is elementwise (or per channel) and has the form

    K · u · growth(m) · scale

where u is the unit roundoff of the dtype the implementation computes in, m the
number of values reduced per channel, and ``scale`` the magnitude the error is
relative to. The conditioning of a channel is

    kappa = (max|x| + |mean|) / sqrt(var + eps)

the size of the input relative to the scale that normalization divides by: a large
offset (|mean|/std up to 1e4) or a channel whose variance is far below eps makes kappa
large, and the bounds grow with it, never with a hand-widened constant.

Derivation, briefly (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 4):
a sum of m terms computed in floating point has error ≲ growth(m)·u·Σ|terms| with
growth(m) = 2 + sqrt(m) for the blocked/pairwise or statistically rounded summation
that frameworks use (a worst-case recursive sum would be m). The mean is then off by
δ ≈ growth·u·max|x|; x − mean is off by δ + u|x|, which normalization divides by
sqrt(var + eps): an error of growth·u·kappa in x̂. A stable (two-pass or Welford)
variance has relative error growth·u plus the second-order δ². The "fast" variance
E[x²] − E[x]² loses growth·u·kappa² of it: that algorithm fails these bounds on large
offsets, by design; it is a finding, not a tolerance to widen.

Below the smallest normal number rounding error is absolute: each rounding may add up
to eta (half the smallest subnormal; 3e-8 in float16, negligible in float32/64). The
bounds add growth·eta where a value, or the variance a value is divided by, can be
that small (Higham's model fl(x op y) = (x op y)(1 + δ) + η).

K is a safety factor for the handful of roundings in each formula (subtract, divide,
square root, multiply, add). It is the only free constant and it is small.

What each bound accounts for (every value that enters the computation):

- ``train_forward``: the batch mean's and variance's sums (growth(m)·u·kappa in x̂, which also
  covers the variance's relative error of an updating/Welford algorithm, u·kappa, since it moves
  y by at most |x̂|·u·kappa/2 ≤ sqrt(m)·u·kappa/2), the roundings of x − mean, the division, the
  square root, gamma·x̂ + beta (u·|beta|), and underflow (eta) where the variance or eps is tiny.
- ``infer_forward``: x − running_mean, the division by sqrt(running_var + eps), the affine map; no
  reduction (growth(1)).
- ``running_stats``: one update new = (1 − w)·old + w·batch in any of its written forms, (1 − w)·old
  + w·batch, old + w·(batch − old), old − (old − batch)·w, in place or not: each rounds the old and
  the new values (u·(|old| + |new|)), at every w including 1; the batch statistics enter scaled by
  w, the mean with growth(m)·u·max|x|, the variance with growth(m)·u·var (two-pass), the square of
  the mean's error (second order) and the first-order error of an updating algorithm
  (g/sqrt(m))·u·max|x|·sqrt(var); × 2 for the unbiased factor m/(m − 1). Over k steps the bounds
  add (earlier errors are carried with factor 1 − w ≤ 1).
- ``gradients``: dbeta = Σ dy (growth(m)·u·Σ|dy|), dgamma = Σ dy·x̂ (x̂'s error growth·u·kappa),
  dx = gamma/σ·(dy − mean(dy) − x̂·mean(dy·x̂)) with both means' errors.

The set of correct implementations written differently that every bound is proved on (update
forms, Welford, float32 pairwise and sequential sums, in-place updates, channels last under each
preset, an adapter class) is ``tests.planted.CORRECT``; tests/test_planted.py runs them.
"""
import numpy as np

from equiv.dtypes import UNDERFLOW, UNIT_ROUNDOFF

K = 4.0


def growth(m):
    return 2.0 + np.sqrt(m)


def _stats(x, eps, axis=1):
    x = np.asarray(x, dtype=np.float64)
    axis = axis % x.ndim
    red = tuple(i for i in range(x.ndim) if i != axis)
    m = x.size // x.shape[axis]
    mean = x.mean(axis=red)
    var = x.var(axis=red)
    max_abs = np.abs(x).max(axis=red)
    return x, red, m, mean, var, max_abs


def _bcast(v, x, axis=1):
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return np.asarray(v, dtype=np.float64).reshape(shape)


def kappa(x, eps, axis=1):
    """Per-channel conditioning (max|x| + |mean|) / sqrt(var + eps)."""
    _, _, _, mean, var, max_abs = _stats(x, eps, axis)
    return (max_abs + np.abs(mean)) / np.sqrt(var + eps)


def train_forward(x, gamma, beta, eps, dtype, axis=1):
    """Elementwise bound on |y − y_oracle| for the training forward."""
    u, eta = UNIT_ROUNDOFF[dtype], UNDERFLOW[dtype]
    x, _, m, _, var, _ = _stats(x, eps, axis)
    k = kappa(x, eps, axis)
    sigma = np.sqrt(var + eps)
    # an absolute error g·eta in the mean (÷sigma) and in the variance (·|x̂|/(2σ²)) moves y by:
    underflow = growth(m) * eta * np.abs(gamma) * (1 / sigma + k / (2 * sigma ** 2))
    per_channel = K * (u * (growth(m) * np.abs(gamma) * k + np.abs(beta)) + underflow + eta)
    return np.broadcast_to(_bcast(per_channel, x, axis), x.shape)


def infer_forward(x, gamma, beta, running_mean, running_var, eps, dtype, axis=1):
    """Elementwise bound on |y − y_oracle| for the inference forward."""
    u = UNIT_ROUNDOFF[dtype]
    x = np.asarray(x, dtype=np.float64)
    b = lambda v: _bcast(v, x, axis)  # noqa: E731
    scale = np.abs(b(gamma)) * (np.abs(x) + np.abs(b(running_mean))) / np.sqrt(b(running_var) + eps)
    return K * (u * (growth(1) * scale + np.abs(b(beta)))
                + UNDERFLOW[dtype] * (1 + np.abs(b(gamma)) / np.sqrt(b(running_var) + eps)))


def running_stats(x, old_mean, old_var, new_mean, new_var, new_batch_weight, dtype, axis=1):
    """Per-channel bounds (on mean, on var) after one update from batch x."""
    u = UNIT_ROUNDOFF[dtype]
    x, _, m, mean, var, max_abs = _stats(x, 0.0, axis)
    w = abs(new_batch_weight)
    g = growth(m)
    eta = UNDERFLOW[dtype]
    mean_bound = K * (u * (np.abs(old_mean) + np.abs(new_mean) + w * g * max_abs) + g * eta)
    # m/(m-1) ≤ 2 for the unbiased estimator. The batch variance: g·u relative (two-pass), the
    # mean's error δ ≲ K·g·u·max|x| squared (second order), and the first-order term of an updating
    # (Welford) algorithm: each step's mean is off by δ, which multiplies x_k − mean in the m
    # products of M2; with random signs their sum is ≲ sqrt(m)·δ·sqrt(var)·sqrt(m)/m of var, i.e.
    # (g/sqrt(m))·u·max|x|·sqrt(var) (relative u·kappa; Chan, Golub & LeVeque 1983).
    batch_var = var + K * u * g * max_abs ** 2 + max_abs * np.sqrt(var) / np.sqrt(m)
    var_bound = K * (u * (np.abs(old_var) + np.abs(new_var) + 2 * w * g * batch_var) + g * eta)
    return mean_bound, var_bound


def gradients(x, gamma, dy, eps, dtype, axis=1):
    """Bounds on (dx elementwise, dgamma per channel, dbeta per channel)."""
    u = UNIT_ROUNDOFF[dtype]
    x, red, m, _, var, _ = _stats(x, eps, axis)
    dy = np.asarray(dy, dtype=np.float64)
    g = growth(m)
    k = kappa(x, eps, axis)
    dy_max = np.abs(dy).max(axis=red)
    dy_sum = np.abs(dy).sum(axis=red)
    eta = UNDERFLOW[dtype]
    dx = K * (u * g * (1 + k) * np.abs(gamma) / np.sqrt(var + eps) * dy_max + g * eta)
    dgamma = K * (u * (1 + 2 * g) * k * dy_sum + g * eta)
    dbeta = K * (u * g * dy_sum + g * eta)
    return np.broadcast_to(_bcast(dx, x, axis), x.shape), dgamma, dbeta


def excess(actual, expected, bound):
    """max(|actual − expected| / bound): ≤ 1 passes. NaN where either side is NaN counts as inf;
    equal values are no error, equal infinities included (two paths that overflow alike agree)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != expected {expected.shape}")
    with np.errstate(invalid="ignore"):
        err = np.abs(actual - expected)
    err = np.where(actual == expected, 0.0, np.where(np.isnan(err) | np.isinf(err), np.inf, err))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / np.broadcast_to(bound, err.shape))
    return float(ratio.max()) if ratio.size else 0.0


class ToleranceError(AssertionError):
    """An output out of its bound: what, the arrays, and the index of the worst element."""

    def __init__(self, what, actual, expected, bound, ratio):
        self.what, self.ratio = what, ratio
        self.actual = np.asarray(actual, dtype=np.float64)
        self.expected = np.asarray(expected, dtype=np.float64)
        self.bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), self.actual.shape)
        with np.errstate(invalid="ignore"):
            err = np.abs(self.actual - self.expected)
        err = np.where(self.actual == self.expected, 0.0, np.where(np.isnan(err) | np.isinf(err), np.inf, err))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(err == 0, 0.0, err / self.bound)
        self.index = tuple(int(i) for i in np.unravel_index(int(np.argmax(r)), r.shape)) if r.size else ()
        super().__init__(self.describe())

    @property
    def channel(self):
        """Channel of the worst element (canonical layout: axis 1, or axis 0 of a per-channel vector)."""
        return self.index[1] if len(self.index) >= 2 else (self.index[0] if self.index else None)

    def describe(self):
        i = self.index
        with np.errstate(invalid="ignore"):
            diff = np.where(self.actual == self.expected, 0.0, np.abs(self.actual - self.expected))
        worst = "NaN" if np.isnan(diff).any() else f"{np.max(diff) if diff.size else 0:.3g}"
        at = (f"; worst at index {i} (channel {self.channel}): implementation {self.actual[i]:.10g}, "
              f"oracle {self.expected[i]:.10g}, bound {self.bound[i]:.3g}") if i else ""
        return (f"{self.what}: max |error| {worst} is {self.ratio:.3g}× the bound "
                f"(max bound {np.max(self.bound) if self.bound.size else 0:.3g}){at}")


def assert_close(what, actual, expected, bound):
    """Fail with the measured error, the bound and where, when any element is out of bound."""
    r = excess(actual, expected, bound)
    if not r <= 1.0:
        raise ToleranceError(what, actual, expected, bound, r)
    return r
