"""Shared pieces of the folding-route tests (one test file per tool family: tests/test_routes_*.py)."""
import math
import os
from collections import Counter

import pytest
from hypothesis import assume, given, settings

from equiv import registry
from equiv import tolerance_fold as tb
from equiv.routes.states import KINDS
from equiv.strategies import default_profile
from equiv.tolerance import ToleranceError, infer_forward
from reference.batch_norm import batch_norm_infer

# a layer a route runs without folding it (inductor's Linear, onnx's Gemm) is checked on two kinds only
UNFOLDED_KINDS = ("ordinary", "dead_large_gamma")


def need(route):
    """Skip, with the registry's install hint, where the route's tools are not installed."""
    if not registry.framework_installed(route.name, registry.ROUTE):
        hint = registry.install_command(route.name, registry.ROUTE)
        pytest.skip(f"{route.name} needs {', '.join(route.requires)}: {hint}")


def route_cases(routes):
    """(name, layer, kind) per route and layer: every kind where it folds, UNFOLDED_KINDS where not."""
    return [(name, layer, kind) for name, r in routes.items() for layer in r.layers
            for kind in (KINDS if layer in r.folds else UNFOLDED_KINDS)]


# test id -> Counter of what left drawn states out: a finding's id, or "not representable" (the oracle's
# output does not fit the dtype); printed at the end of the run (tests/conftest.py)
LEFT_OUT: dict = {}
# test id -> the largest error/bound ratio of the states that ran (over every check a state makes: the route
# against the oracle, the source against it, the two against each other); written as JSON to
# $EQUIV_ROUTE_RATIOS at the end of the run where it is set (tests/conftest.py)
LARGEST: dict = {}


def _ratios(value):
    """The finite numbers in a check's result (a ratio, or a tuple or list of them)."""
    if isinstance(value, (tuple, list)):
        return [r for v in value for r in _ratios(v)]
    return [float(value)] if isinstance(value, (int, float)) and math.isfinite(value) else []


def within_bound(states, check, examples, default, skip=lambda state: None):
    """Run ``check`` on representable states drawn from ``states`` that ``skip`` leaves (it names the
    finding that covers a state, or None), as many as ``examples`` gives the Hypothesis profile
    (``default`` for a profile it does not name); at least one must run. The states left out, and by what,
    are counted in ``LEFT_OUT`` under the running test's id, with those that ran."""
    profile = default_profile()
    seen = []
    test_id = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    tally = LEFT_OUT.setdefault(test_id, Counter())

    @settings(settings.get_profile(profile), max_examples=examples.get(profile, default))
    @given(state=states)
    def run(state):
        why = "not representable" if not state.representable() else skip(state)
        if why is not None:
            d = getattr(why, "id", why)
            tally[d] += 1
        assume(why is None)
        seen.append(check(state))

    run()
    tally["ran"] += len(seen)
    assert seen, "no state ran"
    found = _ratios(seen)
    if found:
        LARGEST[test_id] = max(max(found), LARGEST.get(test_id, 0.0))


def witness_params(known, routes):
    """A strict xfail (raises ToleranceError) per finding and implementing route whose layers hold the witness's."""
    return [pytest.param(d, name, id=f"{d.id}-{name}",
                         marks=pytest.mark.xfail(strict=True, raises=ToleranceError, reason=d.id))
            for d in known for name in d.implementations if d.witness.layer in routes[name].layers]


def assert_witness_in_region(d):
    """The finding's witness lies in its own region and its oracle output fits the dtype."""
    assert d.region(d.witness), "the witness lies outside its own region"
    assert d.witness.representable(), "the witness's oracle output must fit the dtype"


def oracle_and_bounds(state, layer, dtype=None):
    """(oracle output, unfolded bound, folded bound) of ``layer`` on the state (NCHW float64), the bounds in
    ``dtype`` (default the state's); "bn": the BatchNorm alone on the state's layer output z, rounded to its
    dtype (both bounds its own)."""
    from equiv.routes.states import bn_input
    dtype = dtype or state.dtype
    if layer == "bn":
        z = bn_input(state)
        bound = infer_forward(z, state.gamma, state.beta, state.running_mean, state.running_var, state.eps,
                              dtype, axis=1)
        return batch_norm_infer(z, **state.bn, eps=state.eps), bound, bound
    args, kw = (state.x, state.w, state.b), {**state.bn, **state.bound_args(), "dtype": dtype}
    return state.oracle(), tb.unfolded(*args, **kw), tb.folded(*args, **kw)
