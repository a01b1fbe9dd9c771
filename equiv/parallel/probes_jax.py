"""Measure a data-parallel implementation's conventions (``ParallelConventions``) by running it,
generically over the ``ParallelAdapter`` protocol: each field is the declaration under which the
oracle (``equiv.parallel.expect``) matches what the replicas computed, on a case built to tell the
values apart.

- synchronized, weighting, running_stats: shards of different means (and, where the implementation
  takes them, different sizes), two steps; outputs and running statistics compared with the global
  batch (count- or equal-weighted), with each shard alone, and with replica 0's buffers broadcast.
  With equal shards the two weightings coincide: weighting is then not measured (None).
- param_grads, dx: the same case with gradients: dgamma, dbeta against each replica's own sum, the
  sum over replicas and their mean; dx against the gradient of the global loss.
- variance: the batch variance (the running variance after one step with new-batch weight 1) of
  data with |mean|/std = 1e3 against the exact one: relative error above 1e3·u is "fast".
- empty_shard: one replica given no rows: an exception is "error", NaN outputs "nan", outputs that
  match the oracle without that replica "skip" (only where unequal shards are taken).

A field that cannot be measured is None; ``measure`` also returns the numbers it decided on.
"""
from dataclasses import replace

import numpy as np

from equiv.strategies import Case, ParallelCase
from equiv.tolerance import ToleranceError

U = {"float64": 2.0 ** -53, "float32": 2.0 ** -24}


def _case(sizes, dtype, seed=0, offset=None, steps=2, weight=0.1, channels=3):
    c = Case(dtype=dtype, shape=(sum(sizes), channels, 2, 2), seed=seed, log10_scale=0.0, log10_offset=offset,
             constant_channel=False, eps=1e-3, new_batch_weight=weight, steps=steps)
    return ParallelCase(case=c, sizes=tuple(sizes))


def _spread(pc, R):
    """The steps with shard r shifted by r (the shards' means differ: per-shard and global differ)."""
    return [([s + r for r, s in enumerate(xs)], dys) for xs, dys in pc.steps()]


def _run(A, pc, dtype, steps):
    c = pc.case
    with A(c.channels, c.ndim, pc.replicas, dtype=dtype, new_batch_weight=c.new_batch_weight, eps=c.eps) as a:
        return a, a.run(c.state, steps)


def _fits(conv, a, got, pc, steps, gradients):
    from equiv.parallel.expect import compare, expected
    c = pc.case
    try:
        want = expected(conv, a.single, c.state, steps, eps=a.eps, new_batch_weight=a.new_batch_weight)
        compare(conv, got, want, steps, c.state, eps=a.eps, new_batch_weight=a.new_batch_weight, dtype=c.dtype,
                gradients=gradients)
        return True
    except (ToleranceError, NotImplementedError, ValueError, FloatingPointError):
        return False


def measure(A, dtype=None):
    """{field: measured value or None} and {"numbers": ...} for the ParallelAdapter class ``A``."""
    dtype = dtype or A.dtypes[0]
    R = A.replicas[-1]
    decl = A.conventions
    sizes = [2 + r for r in range(R)] if A.unequal_shards else [3] * R
    pc = _case(sizes, dtype)
    steps = _spread(pc, R)
    a, got = _run(A, pc, dtype, steps)
    out, numbers = {}, {}
    # synchronized, weighting, running_stats: forward and running statistics
    candidates = [dict(synchronized=True, weighting=w, variance=decl.variance, running_stats="global")
                  for w in ("count", "equal")]
    candidates += [dict(synchronized=False, weighting="n/a", variance="n/a", running_stats=s)
                   for s in ("own", "rank0-broadcast")]
    fits = [f for f in candidates if _fits(replace(decl, **f), a, got, pc, steps, gradients=False)]
    if fits:
        out["synchronized"] = fits[0]["synchronized"]
        weightings = {f["weighting"] for f in fits}
        out["weighting"] = weightings.pop() if len(weightings) == 1 else None   # equal shards: both fit
        stats = {f["running_stats"] for f in fits}
        out["running_stats"] = stats.pop() if len(stats) == 1 else None
        best = [f for f in fits if f["weighting"] == out["weighting"]] or fits
        base = replace(decl, **best[0])
    else:
        out.update(synchronized=None, weighting=None, running_stats=None)
        base = decl
    # param_grads (and dx: the oracle has the global loss's gradient only)
    if A.has_gradients and fits:
        grads = [g for g in ("local", "sum", "mean") if _fits(replace(base, param_grads=g), a, got, pc, steps, True)]
        out["param_grads"] = grads[0] if len(grads) == 1 else None
        out["dx"] = "global" if grads else None
    # variance: the batch variance at |mean|/std = 1e3
    if out.get("synchronized"):
        vc = _case([4] * R, dtype, seed=1, offset=3.0, steps=1, weight=1.0, channels=2)
        _, vrun = _run(A, vc, dtype, vc.steps())
        x = vc.case.batch(0)
        exact = x.var(axis=(0, 2, 3))
        err = float((np.abs(vrun.states[0]["running_var"] - exact) / exact).max())
        numbers["variance_relative_error"] = err
        out["variance"] = "fast" if err > 1e3 * U[dtype] else "two-pass"
    # empty shard
    if A.unequal_shards and fits:
        es = [3] * R
        es[1] = 0
        ec = _case(es, dtype, seed=2)
        try:
            ea, erun = _run(A, ec, dtype, ec.steps())
        except Exception as e:   # the implementation refuses an empty replica
            numbers["empty_shard_error"] = f"{type(e).__name__}: {e}"[:200]
            out["empty_shard"] = "error"
        else:
            values = [y for ys in erun.ys for y in ys] + [s["running_mean"] for s in erun.states]
            if any(np.isnan(v).any() for v in values):
                out["empty_shard"] = "nan"
            else:
                out["empty_shard"] = "skip" if _fits(replace(base, empty_shard="skip"), ea, erun, ec, ec.steps(),
                                                      A.has_gradients) else None
    out["numbers"] = numbers
    return out


def differences(A, measured):
    """[(field, declared, measured)] where a measured field disagrees with the declaration."""
    decl = A.conventions.as_dict()
    return [(k, decl[k], v) for k, v in measured.items() if k in decl and v is not None and v != decl[k]]
