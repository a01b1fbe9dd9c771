"""Measure a data-parallel implementation's conventions through the protocol alone, field by field,
so that the declaration on the class (``ParallelConventions``) is checked, not trusted.

Each probe runs in the widest dtype the implementation supports (float64, else float32).

- synchronized, weighting, running_stats, param_grads, dx: one run of 2 steps on 2 replicas with
  unequal shards of different means (|mean|/std ≤ 3, where every variance formula is
  within the tolerance), compared with the oracle's run under every candidate declaration; the
  one candidate within tolerance is the measurement (none or several: ``ProbeError``).
- variance: one synchronized step on equal shards at |mean|/std ≈ 1e5 in float64 (≈ 300 in
  float32), new-batch weight 1: the running variance is the merged batch variance; the two-pass
  merge keeps it to ~1e-15 (float32: ~1e-6), E[x²] − E[x]² loses ~u·ratio², ≈ 1e-6 (float32: ≈ 1e-3).
- empty_shard: one step with replica 0 given no values: "error" (it raises), "nan" (NaN or inf in
  what the others computed or hold, or in the empty replica's running statistics), "skip" (the
  oracle's run without it).
"""
import itertools
from dataclasses import replace

import numpy as np

from equiv.dtypes import round_to
from equiv.parallel import ParallelConventions
from equiv.parallel.expect import compare, expected
from equiv.strategies import Case, ParallelCase
from equiv.tolerance import ToleranceError


class ProbeError(AssertionError):
    """The measurement is not one of the candidates (or more than one fits)."""


def _dtype(A):
    return "float64" if "float64" in A.dtypes else A.dtypes[0]


def _case(sizes, steps, log10_offset, dtype, seed=11, ndim=2):
    shape = (sum(sizes), 3) if ndim == 2 else (sum(sizes), 3, 2, 2)
    return ParallelCase(Case(dtype=dtype, shape=shape, seed=seed, log10_scale=0.0, log10_offset=log10_offset,
                             constant_channel=False, eps=1e-3, new_batch_weight=0.25, steps=steps), tuple(sizes))


def _skewed(pc):
    """The case's steps with replica r's shard shifted by r·2 std: the shards' means differ, so the
    global statistics differ from every replica's own (and equal from count weighting)."""
    out = []
    for shards, dys in pc.steps():
        out.append(([round_to(s + 2.0 * r, pc.case.dtype) for r, s in enumerate(shards)], dys))
    return out


def _run(A, pc, steps, **kw):
    c = pc.case
    with A(c.channels, c.ndim, pc.replicas, dtype=c.dtype, new_batch_weight=kw.get("w", c.new_batch_weight),
           eps=c.eps) as a:
        return a, a.run(c.state, steps)


def _fits(conv, a, got, pc, steps, gradients):
    c = pc.case
    try:
        want = expected(conv, a.single, c.state, steps, eps=a.eps, new_batch_weight=a.new_batch_weight)
        compare(conv, got, want, steps, c.state, eps=a.eps, new_batch_weight=a.new_batch_weight, dtype=c.dtype,
                gradients=gradients)
        return True
    except (ToleranceError, NotImplementedError):
        return False


# Synchronized, every replica's running statistics follow the merged ones ("global"; the oracle has
# nothing else to offer there); unsynchronized, "own" or "rank0-broadcast".
CANDIDATES = [dict(synchronized=s, weighting=w, running_stats=r, param_grads=g, dx="global")
              for (s, w, r), g in itertools.product(
                  ((True, "count", "global"), (True, "equal", "global"), (False, "n/a", "own"),
                   (False, "n/a", "rank0-broadcast")), ("local", "sum", "mean"))]


def measure_merge(A):
    """synchronized, weighting, running_stats, param_grads, dx: the one candidate within tolerance."""
    pc = _case((2, 5), steps=2, log10_offset=None, dtype=_dtype(A), ndim=A.ndims[0])
    steps = _skewed(pc)
    a, got = _run(A, pc, steps)
    fits = []
    for cand in CANDIDATES:
        conv = ParallelConventions(variance="n/a", **cand)
        if _fits(conv, a, got, pc, steps, A.has_gradients):
            fits.append(cand)
    if A.has_gradients:   # unsynchronized, the gradient of the replica's loss is its only one
        fits = [dict(f, dx="global" if f["synchronized"] else "local") for f in fits]
    if len(fits) != 1:
        raise ProbeError(f"{A.name}: {len(fits)} candidate declarations fit the unequal-shard run: {fits}")
    return fits[0]


def measure_variance(A, synchronized):
    if not synchronized:
        return "n/a"
    dtype = _dtype(A)
    offset, two_pass, fast = (5.0, 1e-11, 1e-9) if dtype == "float64" else (2.5, 1e-5, 1e-4)
    pc = _case((4, 4), steps=1, log10_offset=offset, dtype=dtype, ndim=A.ndims[0])
    pc = replace(pc, case=replace(pc.case, new_batch_weight=1.0))
    a, got = _run(A, pc, pc.steps(), w=1.0)
    c = pc.case
    exact = expected(ParallelConventions(True, "count", "two-pass", "global", "local"), a.single, c.state,
                     pc.steps(), eps=a.eps, new_batch_weight=a.new_batch_weight).states[0]["running_var"]
    rel = float(np.max(np.abs(got.states[0]["running_var"] / exact - 1)))
    if rel < two_pass:
        return "two-pass"
    if rel > fast:
        return "fast"
    raise ProbeError(f"{A.name}: {dtype} running variance off by {rel:.3g} relatively at |mean|/std "
                     f"10^{offset}: neither two-pass (< {two_pass:g}) nor fast (> {fast:g})")


def measure_empty_shard(A, conv):
    if not A.unequal_shards:
        return "n/a"
    pc = _case((0, 4), steps=1, log10_offset=None, dtype=_dtype(A), ndim=A.ndims[0])
    try:
        a, got = _run(A, pc, pc.steps())
    except Exception:   # noqa: BLE001  whatever the engine raises
        return "error"
    values = [v for r in range(pc.replicas) for v in (got.ys[0][r], *(got.states[r].values()))]
    if any(not np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in values):
        return "nan"
    return "skip" if _fits(conv, a, got, pc, pc.steps(), A.has_gradients) else "other"


def measure(A):
    """The measured ``ParallelConventions`` of a ParallelAdapter class."""
    merge = measure_merge(A)
    conv = ParallelConventions(variance=measure_variance(A, merge["synchronized"]), **merge)
    return replace(conv, empty_shard=measure_empty_shard(A, conv))
