"""Measure what a layer option (equiv.options) does, by running the layer, never by reading a
declaration; ``equiv.conventions.OPTION_DECLARED`` holds what each implementation declares, and
equiv/suite/test_options.py holds the two to each other. A probe of an option the adapter does not take
measures "n/a"."""
import numpy as np

import reference as ref
from equiv.options import unsupported


def _fresh(A, options, c=3, weight=0.1):
    if unsupported(A, options):
        return None
    dtype = "float64" if "float64" in A.dtypes else "float32"
    a = A(c, 2, dtype=dtype, new_batch_weight=weight, options=options)
    a.set_state(gamma=np.ones(c), beta=np.zeros(c), running_mean=np.zeros(c), running_var=np.ones(c))
    return a


def _batch(mean, seed, shape=(8, 3)):
    x = np.random.default_rng(seed).standard_normal(shape)
    return mean + (x - x.mean(axis=0)) / x.std(axis=0)     # batch mean exactly ``mean`` per channel


def _weights(a, means):
    """The new-batch weight of each training step, solved from the running mean: w = Δmean/(batch − old)."""
    out = []
    for k, mean in enumerate(means):
        old = a.get_state()["running_mean"]
        x = _batch(mean, k)
        a.train_step(x, np.zeros_like(x))
        out.append(float(np.mean((a.get_state()["running_mean"] - old) / (mean - old))))
    return out


def _as_fractions(weights, offset=0):
    """"1/k" when the k-th weight is 1/(k + offset) for every k (within 1e-6), else the weights."""
    if all(abs(w - 1.0 / (k + offset)) < 1e-6 for k, w in enumerate(weights, start=1)):
        return "1/k"
    return "other: " + ", ".join(f"{w:.6g}" for w in weights)


def cumulative_weights(A):
    """The weight sequence of momentum="cumulative" over 5 steps (batch means 1, 3, 6, 10, 15): "1/k"."""
    a = _fresh(A, {"momentum": "cumulative"})
    return "n/a" if a is None else _as_fractions(_weights(a, (1.0, 3.0, 6.0, 10.0, 15.0)))


def momentum_switch(A):
    """momentum=None set after one step at new-batch weight 0.1: the weights of the next three steps are
    1/k counted over every step ("1/k over every step": 1/2, 1/3, 1/4) or since the switch ("1/k since
    the switch": 1, 1/2, 1/3)."""
    a = _fresh(A, {"momentum": "cumulative_after_ema"})
    if a is None:
        return "n/a"
    w = _weights(a, (1.0, 3.0, 6.0, 10.0))[1:]
    for name, offset in (("1/k over every step", 1), ("1/k since the switch", 0)):
        if _as_fractions(w, offset) == "1/k":
            return name
    return _as_fractions(w)


def set_false_inference(A):
    """What inference mode normalizes with after track_running_stats is set to False on the built layer:
    "stored statistics" or "batch statistics"."""
    a = _fresh(A, {"track_running_stats": "set_false"})
    if a is None:
        return "n/a"
    a.set_state(gamma=np.ones(3), beta=np.zeros(3), running_mean=np.full(3, 5.0), running_var=np.full(3, 4.0))
    x = _batch(1.0, 0)
    y = a.forward_infer(x)
    if np.allclose(y, ref.batch_norm_infer(x, np.ones(3), np.zeros(3), np.full(3, 5.0), np.full(3, 4.0),
                                           eps=a.eps), atol=1e-6):
        return "stored statistics"
    if np.allclose(y, ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=a.eps)[0], atol=1e-6):
        return "batch statistics"
    return "other"


def no_affine_gradients(A):
    """The parameter gradients of a training step without affine parameters: "none" or "given"."""
    a = _fresh(A, {"affine": False})
    if a is None:
        return "n/a"
    x = _batch(1.0, 0)
    _, _, dgamma, dbeta = a.train_step(x, np.ones_like(x))
    return "none" if dgamma is None and dbeta is None else "given"


def synchronized_variance(A):
    """The batch variance of synchronized=True on one device, read from the running variance after one step
    at new-batch weight 1 on float64 data at |mean|/std = 1e7 (E[x²] − E[x]² loses ~1e-16·1e14 of it):
    "two-pass" (within 1e-6, relatively) or "E[x²] − E[x]²"."""
    a = _fresh(A, {"synchronized": True}, weight=1.0)
    if a is None:
        return "n/a"
    x = _batch(1e7, 0, (16, 3))
    a.train_step(x, np.zeros_like(x))
    var = x.var(axis=0) * (x.shape[0] / (x.shape[0] - 1) if a.conventions.running_var == "unbiased" else 1.0)
    return "two-pass" if np.abs(a.get_state()["running_var"] / var - 1).max() < 1e-6 else "E[x²] − E[x]²"


def float16_reductions(A):
    """The dtype float16 statistics are reduced in under force_float32_reductions=False, read from the
    training output of ±300 (mean 0, std 300): "float32" (±1) or "float16" (x², (x − mean)²
    overflow it: the variance is inf and the output 0 or NaN)."""
    options = {"force_float32_reductions": False}
    if unsupported(A, options) or "float16" not in A.dtypes:
        return "n/a"
    a = A(1, 2, dtype="float16", new_batch_weight=0.1, options=options)
    a.set_state(gamma=np.ones(1), beta=np.zeros(1), running_mean=np.zeros(1), running_var=np.ones(1))
    x = np.array([[300.0], [-300.0]])
    return "float32" if np.allclose(a.forward_train(x), [[1.0], [-1.0]], atol=1e-2) else "float16"


OPTION_PROBES = {
    "cumulative_weights": cumulative_weights,
    "momentum_switch": momentum_switch,
    "set_false_inference": set_false_inference,
    "no_affine_gradients": no_affine_gradients,
    "synchronized_variance": synchronized_variance,
    "float16_reductions": float16_reductions,
}
