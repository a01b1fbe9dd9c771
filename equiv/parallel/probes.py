"""Measure a data-parallel implementation's conventions through the ``ParallelAdapter`` protocol
alone, field by field, so that the declaration (``equiv.parallel.conventions.DECLARED``, read by the
class) is checked, not trusted. One module for every engine: it never looks at an adapter's code.

Each probe runs in the widest dtype the implementation supports (float64, else float32) unless told.

- synchronized, weighting, running_stats, param_grads, dx: one run of 2 steps on 2 replicas whose
  shards have different means (|mean|/std ≤ 3, where every variance formula is within the
  tolerance): unequal sizes (2, 5), or equal ones (4, 4) where the implementation takes equal
  shards only (``unequal_shards = False``). The run is compared with the oracle's under every
  candidate declaration; the candidates within tolerance are the measurement. With equal shards
  count and equal weighting give the same statistics: weighting is then not measured; without
  gradients (``has_gradients = False``) neither are param_grads and dx. Any other ambiguity, or no
  candidate at all, is a ``ProbeError``. dx is "global" when a synchronized run's gradients match the
  global loss's, "local" when an unsynchronized run's match each replica's own loss's (the only
  gradients the oracle has for either).
- variance: one synchronized step on equal shards at |mean|/std ≈ 1e5 in float64 (≈ 300 in
  float32), new-batch weight 1: the running variance is the merged batch variance; the two-pass
  merge keeps it to ~1e-15 (float32: ~1e-6), E[x²] − E[x]² loses ~u·ratio², ≈ 1e-6 (float32: ≈ 1e-3).
- empty_shard: one step with replica 0 given no values: "error" (it raises), "nan" (NaN or inf in
  what the others computed or hold, or in the empty replica's running statistics), "skip" (the
  oracle's run without it). Not measured where the implementation takes equal shards only.

``measure(A)`` returns a ``Measurement``: the measured ``ParallelConventions`` (None in a field not
measured), why each unmeasured field is not, and the numbers decided on. ``check(A)`` holds the
declaration to it on the measured fields and names the fields it could not check.
"""
import itertools
from dataclasses import dataclass, field, fields, replace

import numpy as np

from equiv.dtypes import round_to
from equiv.parallel import ParallelConventions
from equiv.parallel.expect import compare, expected
from equiv.strategies import Case, ParallelCase
from equiv.tolerance import ToleranceError

FIELDS = tuple(f.name for f in fields(ParallelConventions))
EQUAL_SHARDS = "equal shards only: count and equal weighting give the same statistics"
NO_EMPTY = "equal shards only: no replica can be given an empty shard"
NO_GRADIENTS = "no gradients returned"


class ProbeError(AssertionError):
    """The measurement is not one of the candidates (or more than one fits where none may)."""


@dataclass
class Measurement:
    name: str
    conventions: ParallelConventions          # None in every field that is not measured
    not_measured: dict = field(default_factory=dict)   # field -> why
    numbers: dict = field(default_factory=dict)

    def differences(self, declared):
        """[(field, declared, measured)] over the measured fields where the declaration differs."""
        got = self.conventions.as_dict()
        return [(f, getattr(declared, f), got[f]) for f in FIELDS
                if f not in self.not_measured and got[f] != getattr(declared, f)]

    def __str__(self):
        got = self.conventions.as_dict()
        text = ", ".join(f"{f}={got[f]!r}" for f in FIELDS if f not in self.not_measured)
        if self.not_measured:
            text += "; not measured: " + "; ".join(f"{f} ({why})" for f, why in self.not_measured.items())
        return f"{self.name}: {text}"


def _dtype(A):
    return "float64" if "float64" in A.dtypes else A.dtypes[0]


def _replicas(A):
    return 2 if 2 in A.replicas else A.replicas[0]


def _case(sizes, steps, log10_offset, dtype, seed=11, ndim=2):
    shape = (sum(sizes), 3) if ndim == 2 else (sum(sizes), 3, 2, 2)
    return ParallelCase(Case(dtype=dtype, shape=shape, seed=seed, log10_scale=0.0, log10_offset=log10_offset,
                             constant_channel=False, eps=1e-3, new_batch_weight=0.25, steps=steps), tuple(sizes))


def _skewed(pc):
    """The case's steps with replica r's shard shifted by r·2 std: the shards' means differ, so the
    global statistics differ from every replica's own (and, with unequal counts, equal weighting
    from count weighting)."""
    out = []
    for shards, dys in pc.steps():
        out.append(([round_to(s + 2.0 * r, pc.case.dtype) for r, s in enumerate(shards)], dys))
    return out


def _run(A, pc, steps, w=None):
    c = pc.case
    with A(c.channels, c.ndim, pc.replicas, dtype=c.dtype, new_batch_weight=c.new_batch_weight if w is None else w,
           eps=c.eps) as a:
        return a, a.run(c.state, steps)


def _fits(conv, a, got, pc, steps, gradients):
    c = pc.case
    try:
        want = expected(conv, a.single, c.state, steps, eps=a.eps, new_batch_weight=a.new_batch_weight)
        compare(conv, got, want, steps, c.state, eps=a.eps, new_batch_weight=a.new_batch_weight, dtype=c.dtype,
                gradients=gradients)
        return True
    except (ToleranceError, NotImplementedError, ValueError, FloatingPointError):
        return False


# Synchronized, every replica's running statistics follow the merged ones ("global"; the oracle has
# nothing else to offer there); unsynchronized, "own" or "rank0-broadcast".
CANDIDATES = [dict(synchronized=s, weighting=w, running_stats=r, param_grads=g)
              for (s, w, r), g in itertools.product(
                  ((True, "count", "global"), (True, "equal", "global"), (False, "n/a", "own"),
                   (False, "n/a", "rank0-broadcast")), ("local", "sum", "mean"))]


def measure_merge(A, dtype=None):
    """({field: value} for synchronized, weighting, running_stats, param_grads, dx; {field: why not
    measured}): the candidates within tolerance, which may differ only in the fields the run cannot
    tell apart."""
    R = _replicas(A)
    sizes = (2, 5) + (3,) * (R - 2) if A.unequal_shards else (4,) * R
    pc = _case(sizes, steps=2, log10_offset=None, dtype=dtype or _dtype(A), ndim=A.ndims[0])
    steps = _skewed(pc)
    a, got = _run(A, pc, steps)
    fits = [c for c in CANDIDATES if _fits(ParallelConventions(variance="n/a", **c), a, got, pc, steps,
                                           A.has_gradients)]
    blind = {}
    if not A.unequal_shards:
        blind["weighting"] = EQUAL_SHARDS
    if not A.has_gradients:
        blind.update(param_grads=NO_GRADIENTS, dx=NO_GRADIENTS)
    seen = {k: {f[k] for f in fits} for k in CANDIDATES[0]}
    clear = [k for k in seen if k not in blind or len(seen[k]) == 1]
    if not fits or any(len(seen[k]) != 1 for k in clear) or \
            len(fits) != np.prod([len(v) for k, v in seen.items() if k not in clear]):
        raise ProbeError(f"{A.name}: {len(fits)} candidate declarations fit the run on shards {list(sizes)}: {fits}")
    out = {k: seen[k].pop() if k in clear else None for k in seen}
    if A.has_gradients:   # the gradients matched: the global loss's when synchronized, the replica's own if not
        out["dx"] = "global" if out["synchronized"] else "local"
    else:
        out["dx"] = None
    return out, {k: why for k, why in blind.items() if out[k] is None}


def measure_variance(A, synchronized, dtype=None):
    """("two-pass" | "fast" | "n/a", relative error of the running variance)."""
    if not synchronized:
        return "n/a", None
    dtype = dtype or _dtype(A)
    offset, two_pass, fast = (5.0, 1e-11, 1e-9) if dtype == "float64" else (2.5, 1e-5, 1e-4)
    pc = _case((4,) * _replicas(A), steps=1, log10_offset=offset, dtype=dtype, ndim=A.ndims[0])
    pc = replace(pc, case=replace(pc.case, new_batch_weight=1.0))
    a, got = _run(A, pc, pc.steps(), w=1.0)
    c = pc.case
    exact = expected(ParallelConventions(True, "count", "two-pass", "global", "local"), a.single, c.state,
                     pc.steps(), eps=a.eps, new_batch_weight=a.new_batch_weight).states[0]["running_var"]
    rel = float(np.max(np.abs(got.states[0]["running_var"] / exact - 1)))
    if rel < two_pass:
        return "two-pass", rel
    if rel > fast:
        return "fast", rel
    raise ProbeError(f"{A.name}: {dtype} running variance off by {rel:.3g} relatively at |mean|/std "
                     f"10^{offset}: neither two-pass (< {two_pass:g}) nor fast (> {fast:g})")


def measure_empty_shard(A, conv, dtype=None):
    """("error" | "nan" | "skip" | "other", the error's text or None)."""
    pc = _case((0,) + (4,) * (_replicas(A) - 1), steps=1, log10_offset=None, dtype=dtype or _dtype(A),
               ndim=A.ndims[0])
    try:
        a, got = _run(A, pc, pc.steps())
    except Exception as e:   # noqa: BLE001  whatever the engine raises
        return "error", f"{type(e).__name__}: {e}"[:200]
    values = [v for r in range(pc.replicas) for v in (got.ys[0][r], *(got.states[r].values()))]
    if any(not np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in values):
        return "nan", None
    return ("skip" if _fits(replace(conv, empty_shard="skip"), a, got, pc, pc.steps(), A.has_gradients)
            else "other"), None


def measure(A, dtype=None):
    """The ``Measurement`` of a ParallelAdapter class (in ``dtype``, else its widest)."""
    merge, not_measured = measure_merge(A, dtype)
    numbers = {}
    variance, numbers["variance_relative_error"] = measure_variance(A, merge["synchronized"], dtype)
    conv = ParallelConventions(variance=variance, empty_shard=None, **merge)
    if A.unequal_shards:
        empty, error = measure_empty_shard(A, replace(conv, **{k: getattr(A.conventions, k) for k in not_measured}),
                                           dtype)
        conv = replace(conv, empty_shard=empty)
        if error:
            numbers["empty_shard_error"] = error
    else:
        not_measured["empty_shard"] = NO_EMPTY
    return Measurement(A.name, conv, not_measured, numbers)


def check(A, dtype=None, measurement=None):
    """The ``Measurement`` of ``A`` (or the one given); ``ProbeError`` naming every measured field
    whose declaration (``A.conventions``) differs, and the fields that were not measured."""
    m = measurement or measure(A, dtype)
    diffs = m.differences(A.conventions)
    if diffs:
        unchecked = f"; not measured: {', '.join(m.not_measured)}" if m.not_measured else ""
        raise ProbeError(f"{A.name}: declared ≠ measured: " + "; ".join(
            f"{f} declared {d!r}, measured {g!r}" for f, d, g in diffs) + unchecked)
    return m
