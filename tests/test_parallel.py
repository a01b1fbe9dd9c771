"""Every registered data-parallel implementation that can run here, against the oracle under what
it declares (``equiv.parallel.expect``): synchronized ≡ the global batch, unsynchronized ≡ per shard,
running statistics of every replica after k steps, gradients as the layer (or its wrapper) leaves
them. Known divergences are listed in ``equiv.known`` like the single-device ones."""
import pytest
from hypothesis import assume, given, settings

from equiv import registry
from equiv.known import PARALLEL_KNOWN, parallel_excluded
from equiv.parallel.expect import compare, expected
from equiv.strategies import parallel_cases

NAMES = registry.known_names(registry.PARALLEL)


def _adapter_or_skip(name):
    if not registry.framework_installed(name, registry.PARALLEL):
        pytest.skip(f"{name}: framework not installed ({registry.install_command(name, registry.PARALLEL)})")
    A = registry.load_parallel(name)
    reason = A.unavailable()
    if reason:
        pytest.skip(reason)
    return A


@pytest.mark.parametrize("name", NAMES or [pytest.param(None, marks=pytest.mark.skip(reason="none registered"))])
def test_matches_the_oracle_under_its_declaration(name):
    A = _adapter_or_skip(name)
    conv = A.conventions

    @settings(max_examples=getattr(A, "max_examples", 10), deadline=None)
    @given(parallel_cases(replicas=A.replicas, dtypes=A.dtypes, ndims=A.ndims, unequal=A.unequal_shards,
                          empty=conv.empty_shard == "skip"))
    def check(pc):
        assume(parallel_excluded(name, pc) is None)   # a documented divergence: its witness runs below
        _check(A, pc)
    check()


def _check(A, pc):
    conv = A.conventions
    c = pc.case
    with A(c.channels, c.ndim, pc.replicas, dtype=c.dtype, new_batch_weight=c.new_batch_weight, eps=c.eps) as a:
        got = a.run(c.state, pc.steps())
        want = expected(conv, a.single, c.state, pc.steps(), eps=a.eps, new_batch_weight=a.new_batch_weight)
        return compare(conv, got, want, pc.steps(), c.state, eps=a.eps, new_batch_weight=a.new_batch_weight,
                       dtype=c.dtype, gradients=A.has_gradients)


WITNESSES = [pytest.param(name, d, id=f"{name}-{d.id}",
                          marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=d.reason))
             for d in PARALLEL_KNOWN for name in d.implementations]


@pytest.mark.parametrize("name,divergence", WITNESSES or [pytest.param(None, None, marks=pytest.mark.skip(
    reason="none documented"))])
def test_witness_diverges(name, divergence):
    _check(_adapter_or_skip(name), divergence.witness)


@pytest.mark.parametrize("d", PARALLEL_KNOWN, ids=lambda d: d.id)
def test_witness_lies_in_its_region(d):
    assert d.region(d.witness)
    assert set(d.implementations) <= set(NAMES), d.id
