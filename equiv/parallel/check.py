"""``equiv distributed``: each data-parallel implementation against the oracle under what it
declares, and its conventions measured: what tests/test_parallel.py and the probes' tests assert,
for a user's run. An implementation is a registered name (``equiv list``) or
``package.module:Class``, a ``ParallelAdapter`` subclass of the user's own (its ``conventions``,
``base`` and ``engine`` set on the class), which runs every check a registered one does."""
import time

from equiv import registry
from equiv.core import FrameworkMissing, Unsupported
from equiv.parallel import ParallelAdapter


class SelectionError(ValueError):
    """A name or spec that cannot be run; the message says what to do."""


def load(spec):
    """The ParallelAdapter class of a registered name or of ``package.module:Class``."""
    if ":" not in spec:
        try:
            return registry.load_parallel(spec)
        except KeyError as e:
            raise SelectionError(f"--impls: {e.args[0]} (see: equiv list)") from None
    from equiv.external import SpecError, _import, parse_spec
    try:
        module_name, attr, _ = parse_spec(spec)
        obj = getattr(_import(module_name, spec), attr, None)
    except SpecError as e:
        raise SelectionError(str(e).replace("--adapters", "--impls")) from None
    if not (isinstance(obj, type) and issubclass(obj, ParallelAdapter)):
        raise SelectionError(f"--impls {spec}: {attr!r} is not a subclass of equiv.parallel.ParallelAdapter")
    missing = [a for a in ("conventions", "base") if not getattr(obj, a, None)]
    if missing:
        raise SelectionError(f"--impls {spec}: set {' and '.join(missing)} on the class "
                             "(see equiv/parallel/__init__.py)")
    return type(obj.__name__, (obj,), {"name": spec}) if not obj.name else obj


def findings(name):
    from equiv.known import PARALLEL_FINDINGS, PARALLEL_KNOWN
    return [d.id for d in (*PARALLEL_KNOWN, *PARALLEL_FINDINGS) if name in d.implementations]


def check(A, name, profile="ci", examples=None):
    """The record of one implementation: declared and measured conventions (and the differences,
    in words), the property's examples, its largest error/bound ratio per quantity, the failing case
    if any, the documented findings, seconds."""
    from hypothesis import HealthCheck, assume, given, settings

    from equiv.known import parallel_excluded as excluded
    from equiv.parallel.expect import compare, expected
    from equiv.parallel.probes import ProbeError, measure
    from equiv.strategies import parallel_cases
    from equiv.tolerance import ToleranceError

    t0 = time.perf_counter()
    conv = A.conventions
    rec = {"implementation": name, "engine": A.engine, "base": A.base, "version": _version(A),
           "declared": conv.as_dict(), "findings": findings(name)}
    why = A.unavailable()
    if why:
        return dict(rec, status="n/a", reason=why)
    try:
        m = measure(A)
        rec["measured"] = {k: v for k, v in m.conventions.as_dict().items() if k not in m.not_measured}
        rec["not_measured"] = m.not_measured
        rec["differences"] = [f"declared {f} {d!r}, measured {g!r}" for f, d, g in m.differences(conv)]
    except (ProbeError, Unsupported) as e:
        rec["differences"] = [f"the probes could not measure it: {e}"]
    stats = {"examples": 0, "excluded": 0, "worst": 0.0, "worst_by": {}}
    failing = {}

    @settings(settings.get_profile(profile), max_examples=examples or getattr(A, "max_examples", 10) *
              (10 if profile == "thorough" else 1), deadline=None, suppress_health_check=list(HealthCheck))
    @given(parallel_cases(replicas=A.replicas, dtypes=A.dtypes, ndims=A.ndims, unequal=A.unequal_shards,
                          empty=conv.empty_shard == "skip"))
    def run(pc):
        if excluded(name, pc) is not None:   # a documented divergence (equiv.known.PARALLEL_KNOWN)
            stats["excluded"] += 1
            assume(False)
        c = pc.case
        with A(c.channels, c.ndim, pc.replicas, dtype=c.dtype, new_batch_weight=c.new_batch_weight, eps=c.eps) as a:
            got = a.run(c.state, pc.steps())
            want = expected(conv, a.single, c.state, pc.steps(), eps=a.eps, new_batch_weight=a.new_batch_weight)
            try:
                worst = compare(conv, got, want, pc.steps(), c.state, eps=a.eps, new_batch_weight=a.new_batch_weight,
                                dtype=c.dtype, gradients=A.has_gradients, worst_by=stats["worst_by"])
            except ToleranceError:
                failing["case"] = pc
                raise
        stats["examples"] += 1
        stats["worst"] = max(stats["worst"], worst)

    try:
        run()
        rec["status"] = "pass"
    except ToleranceError as e:
        rec.update(status="fail", error=" ".join(str(e).split()), case=repr(failing.get("case")))
    except (Unsupported, FrameworkMissing) as e:
        rec.update(status="n/a", reason=str(e))
    rec.update(stats, worst_by={k: float(f"{v:.3g}") for k, v in stats["worst_by"].items()},
               worst=float(f"{stats['worst']:.3g}"), seconds=round(time.perf_counter() - t0, 1))
    if rec.get("differences") and rec["status"] == "pass":
        rec["status"] = "differs"
    return rec


def _version(A):
    try:
        return A.version()
    except Exception:
        return None
