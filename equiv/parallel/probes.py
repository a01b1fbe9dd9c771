"""Convention probes for data-parallel implementations: each field of ``ParallelConventions``
measured by running the implementation (any ``ParallelAdapter``) on inputs built to tell the
candidates apart, and comparing with the oracle's run under every candidate value
(``equiv.parallel.expect.expected``). Nothing here knows a framework.

- synchronized, weighting: unequal shards with different means; the outputs are those of each
  shard alone, of the global batch (count-weighted) or of the replicas' means counted once each.
- variance: a synchronized layer on data of |mean|/std = 1e6 (float64): E[x²] − E[x]² loses ~u·1e12
  of the variance, the two-pass merge keeps it.
- running_stats: two steps, different shards per replica; every replica's state after them.
- param_grads: dgamma and dbeta against the replica's own sum, the sum over replicas and its mean.
- dx: against the gradient of the global Σ y·dy and of the replica's own Σ y·dy.
- empty_shard: one replica given no values: an exception, NaN, or the others as if it were absent.
"""
from dataclasses import replace

import numpy as np

from equiv.parallel import ParallelConventions
from equiv.parallel.expect import compare, expected
from reference import parallel as par

MATCH = 1e-9        # relative distance below which a float64 run "is" a candidate
FAST_LOSS = 1e-7    # relative error of the batch variance at |mean|/std = 1e6 beyond which it is "fast"


def _setup(A, sizes, means, steps=1, seed=0, channels=2, scale=1.0):
    rng = np.random.default_rng(seed)
    ndim = 2 if 2 in A.ndims else A.ndims[0]
    tail = () if ndim == 2 else (1, 2)
    state = dict(gamma=rng.uniform(0.5, 2, channels), beta=rng.standard_normal(channels),
                 running_mean=rng.standard_normal(channels), running_var=rng.uniform(0.5, 2, channels))
    run_steps = []
    for _ in range(steps):
        xs = [m + scale * rng.standard_normal((n, channels) + tail) for n, m in zip(sizes, means)]
        dys = [rng.standard_normal((n, channels) + tail) for n in sizes]
        run_steps.append((xs, dys))
    return ndim, state, run_steps


def _dtype(A):
    return "float64" if "float64" in A.dtypes else A.dtypes[0]


def _run(A, ndim, state, steps, *, new_batch_weight=0.5, eps=1e-5):
    R = len(steps[0][0])
    with A(len(state["gamma"]), ndim, R, dtype=_dtype(A), new_batch_weight=new_batch_weight, eps=eps) as a:
        return a, a.run(state, steps)


def _distance(got, want):
    """max |got − want| / max(|want|, tiny) over a list of arrays (shape mismatch: inf)."""
    worst = 0.0
    for g, w in zip(got, want):
        g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        if g.shape != w.shape:
            return np.inf
        if g.size:
            d = np.abs(g - w).max() / max(np.abs(w).max(), 1e-300)
            worst = max(worst, np.inf if np.isnan(d) else d)
    return worst


def _pick(got, candidates, field):
    """The candidate label whose arrays ``got`` matches; ValueError naming the distances if none."""
    dist = {label: _distance(got, want) for label, want in candidates.items()}
    best = min(dist, key=dist.get)
    if not dist[best] <= MATCH:
        raise ValueError(f"{field}: no candidate matches (relative distances "
                         + ", ".join(f"{k} {v:.3g}" for k, v in dist.items()) + ")")
    return best


def _flat(per_step_per_replica):
    return [a for step in per_step_per_replica for a in step]


def probe_synchronized(A):
    """(synchronized, weighting) from the outputs on unequal shards of different means."""
    R = min(A.replicas)
    sizes = [2, 6, 3, 5][:R] if A.unequal_shards else [4] * R
    ndim, state, steps = _setup(A, sizes, means=[0.0, 3.0, -2.0, 1.0][:R])
    _, got = _run(A, ndim, state, steps)
    (xs, _), g, b = steps[0], state["gamma"], state["beta"]
    candidates = {"local": [f[0] for f in par.local_batch_norm_train(xs, g, b, eps=1e-5)]}
    for w in ("count", "equal"):
        candidates[w] = par.merged_batch_norm_train(xs, g, b, eps=1e-5, weighting=w)[0]
    found = _pick(got.ys[0], candidates, "synchronized")
    return (False, "n/a") if found == "local" else (True, found)


def probe_variance(A, synchronized, weighting):
    """"fast" or "two-pass" from the running variance (new-batch weight 1) at |mean|/std = 1e6;
    "n/a" unsynchronized."""
    if not synchronized:
        return "n/a"
    R = min(A.replicas)
    ndim, state, steps = _setup(A, [4] * R, means=[1e6] * R)
    a, got = _run(A, ndim, state, steps, new_batch_weight=1.0)
    conv = ParallelConventions(synchronized=True, weighting=weighting, variance="two-pass", running_stats="global",
                               param_grads="local")
    want = expected(conv, a.single, state, steps, eps=a.eps, new_batch_weight=1.0)
    err = _distance([got.states[0]["running_var"]], [want.states[0]["running_var"]])
    return "fast" if err > FAST_LOSS else "two-pass"


def _base(A, synchronized, weighting, variance):
    return ParallelConventions(synchronized=synchronized, weighting=weighting, variance=variance,
                               running_stats="global" if synchronized else "own", param_grads="local",
                               dx="global" if synchronized else "local")


def probe_running_stats(A, base):
    """Every replica's running statistics after two steps on different shards."""
    R = min(A.replicas)
    ndim, state, steps = _setup(A, [4] * R, means=[0.0, 5.0, -3.0, 2.0][:R], steps=2, seed=1)
    a, got = _run(A, ndim, state, steps)
    labels = ("global", "rank0-broadcast") if base.synchronized else ("own", "rank0-broadcast")
    candidates = {}
    for label in labels:
        want = expected(replace(base, running_stats=label), a.single, state, steps, eps=a.eps,
                        new_batch_weight=a.new_batch_weight)
        candidates[label] = [s[k] for s in want.states for k in ("running_mean", "running_var")]
    return _pick([s[k] for s in got.states for k in ("running_mean", "running_var")], candidates, "running_stats")


def probe_gradients(A, base):
    """(param_grads, dx) from one step on unequal shards."""
    if not A.has_gradients:
        return "n/a", "n/a"
    R = min(A.replicas)
    sizes = [2, 6, 3, 5][:R] if A.unequal_shards else [4] * R
    ndim, state, steps = _setup(A, sizes, means=[0.0, 3.0, -2.0, 1.0][:R], seed=2)
    a, got = _run(A, ndim, state, steps)
    candidates = {}
    for label in ("local", "sum", "mean"):
        want = expected(replace(base, param_grads=label), a.single, state, steps, eps=a.eps,
                        new_batch_weight=a.new_batch_weight)
        candidates[label] = _flat(want.dgammas) + _flat(want.dbetas)
    param_grads = _pick(_flat(got.dgammas) + _flat(got.dbetas), candidates, "param_grads")
    (xs, dys), g = steps[0], state["gamma"]
    if base.synchronized:
        glob = par.merged_batch_norm_backward(xs, g, dys, eps=a.eps, weighting=base.weighting)[0]
        own = [par.merged_batch_norm_backward(xs, g, [d if i == r else np.zeros_like(d) for i, d in enumerate(dys)],
                                              eps=a.eps, weighting=base.weighting)[0][r] for r in range(R)]
        dx = _pick(got.dxs[0], {"global": glob, "local": own}, "dx")
    else:
        dx = _pick(got.dxs[0], {"local": [b[0] for b in par.local_batch_norm_backward(xs, g, dys, eps=a.eps)]}, "dx")
    return param_grads, dx


def probe_empty_shard(A, conv):
    """What a replica given no values does: "error" (the run raises), "nan" (NaN anywhere), "skip"
    (every output and state as the oracle's with that replica weighing nothing); "n/a" for an
    implementation that takes equal shards only."""
    if not A.unequal_shards:
        return "n/a"
    R = min(A.replicas)
    sizes = [4] + [0] + [3, 5][:R - 2]
    ndim, state, steps = _setup(A, sizes, means=[0.0, 0.0, 1.0, 2.0][:R], steps=2, seed=3)
    try:
        a, got = _run(A, ndim, state, steps)
    except Exception:  # noqa: BLE001 - refusing an empty shard is the answer
        return "error"
    arrays = _flat(got.ys) + [s[k] for s in got.states for k in ("running_mean", "running_var")]
    if A.has_gradients:
        arrays += _flat(got.dxs) + _flat(got.dgammas) + _flat(got.dbetas)
    if any(np.isnan(np.asarray(x, dtype=np.float64)).any() for x in arrays):
        return "nan"
    conv = replace(conv, empty_shard="skip")
    want = expected(conv, a.single, state, steps, eps=a.eps, new_batch_weight=a.new_batch_weight)
    compare(conv, got, want, steps, state, eps=a.eps, new_batch_weight=a.new_batch_weight, dtype=_dtype(A),
            gradients=A.has_gradients)
    return "skip"


def measure(A):
    """The measured ``ParallelConventions`` of an implementation class."""
    synchronized, weighting = probe_synchronized(A)
    variance = probe_variance(A, synchronized, weighting)
    base = _base(A, synchronized, weighting, variance)
    running_stats = probe_running_stats(A, base)
    param_grads, dx = probe_gradients(A, replace(base, running_stats=running_stats))
    conv = replace(base, running_stats=running_stats, param_grads=param_grads, dx=dx)
    return replace(conv, empty_shard=probe_empty_shard(A, conv))
