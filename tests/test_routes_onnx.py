"""The ONNX folding routes (equiv.routes.onnx_fold: onnxruntime's optimization levels, onnxoptimizer,
onnxslim, onnxsim) on states drawn as trained networks have them (equiv.routes.states): per route,
layer and kind of state, the route's output against the float64 oracle under the folded layer's bound
where it folds (under the unfolded bound where it keeps BatchNormalization), the source graph under
ORT_DISABLE_ALL ("eager") against it under the unfolded bound, and the two against each other under
the sum; that each route folds what it declares (no BatchNormalization node left in the model it
made, for onnxruntime the one optimized_model_filepath saves; one left after a Gemm); the documented
findings' witnesses (equiv.known.ROUTE_KNOWN) as strict xfails."""
import pytest
from hypothesis import assume, given, settings

from equiv import registry
from equiv import tolerance_fold as tb
from equiv.known import ROUTE_KNOWN
from equiv.known import route_excluded as excluded
from equiv.routes import ROUTES
from equiv.routes.states import KINDS, fold_states
from equiv.strategies import default_profile
from equiv.tolerance import ToleranceError, assert_close

EXAMPLES = {"dev": 4, "ci": 4, "thorough": 50, "mutation": 10}
ONNX = {n: r for n, r in ROUTES.items() if r.module == "equiv.routes.onnx_fold"}
KNOWN = [d for d in ROUTE_KNOWN if set(d.implementations) & set(ONNX)]


def _need(route):
    if not registry.framework_installed(route.name, registry.ROUTE):
        hint = registry.install_command(route.name, registry.ROUTE)
        pytest.skip(f"{route.name} needs {', '.join(route.requires)}: {hint}")


def check_route(route, state):
    """Run the route on ``state``; returns (route/oracle, eager/oracle, route/eager) error/bound ratios."""
    from equiv.routes import onnx_fold as of
    model = of.build(state)
    made = registry.load_route(route.name)(model)
    y_route, y_eager, y = of.run(made, state), of.run(model, state), state.oracle()
    args = (state.x, state.w, state.b)
    unfolded = tb.unfolded(*args, **state.bn, **state.bound_args())
    folds = state.layer in route.folds
    bound = tb.folded(*args, **state.bn, **state.bound_args()) if folds else unfolded
    assert of.has_batch_norm(made) != folds, f"{route.name} on {state.layer}: BatchNormalization left is " \
                                             f"{of.has_batch_norm(made)}, declared folded {folds}"
    return (assert_close(f"{route.name} {state.layer} vs oracle", y_route, y, bound),
            assert_close(f"eager {state.layer} vs oracle", y_eager, y, unfolded),
            assert_close(f"{route.name} {state.layer} vs eager", y_route, y_eager, bound + unfolded))


# a layer a route runs without folding it (Gemm) is checked on two kinds only
UNFOLDED_KINDS = ("ordinary", "dead_large_gamma")
CASES = [(name, layer, kind) for name, r in ONNX.items() for layer in r.layers
         for kind in (KINDS if layer in r.folds else UNFOLDED_KINDS)]


@pytest.mark.parametrize("name,layer,kind", CASES, ids=["-".join(c) for c in CASES])
def test_route_within_bound(name, layer, kind):
    route = ROUTES[name]
    _need(route)
    profile = default_profile()
    seen = []

    @settings(settings.get_profile(profile), max_examples=EXAMPLES.get(profile, 4))
    @given(state=fold_states(layer, kind, route.dtypes))
    def check(state):
        assume(state.representable() and excluded(name, state) is None)
        seen.append(check_route(route, state))

    check()
    assert seen, "no state ran"


WITNESSES = [pytest.param(d, name, id=f"{d.id}-{name}",
                          marks=pytest.mark.xfail(strict=True, raises=ToleranceError, reason=d.id))
             for d in KNOWN for name in d.implementations if d.witness.layer in ROUTES[name].layers]


@pytest.mark.parametrize("d", KNOWN, ids=[d.id for d in KNOWN])
def test_known_route_witness_in_region(d):
    assert d.region(d.witness), "the witness lies outside its own region"
    assert d.witness.representable(), "the witness's oracle output must fit the dtype"
    assert all(d.witness.layer in ROUTES[n].folds for n in d.implementations)


@pytest.mark.parametrize("d,name", WITNESSES)
def test_known_route_divergence_witness(d, name):
    """Strict xfail: out of its bound against the oracle on the witness (a fixed release turns it red)."""
    _need(ROUTES[name])
    check_route(ROUTES[name], d.witness)


# the routes without a documented float16 finding: on the state where the others overflow they fold finite
UNDOCUMENTED = sorted(n for n, r in ONNX.items() if "float16" in r.dtypes
                      and not any(n in d.implementations for d in KNOWN))


@pytest.mark.parametrize("name", UNDOCUMENTED)
def test_float16_overflow_witness_within_bound_where_undocumented(name):
    """On the float16 conv state where torch's folders overflow (torch-fold-conv-fp16-scale-overflow),
    a route without a documented finding folds finite and within the folded bound (onnxoptimizer leaves
    the fold to the runtime, which computes the float16 subgraph in float32 behind the Casts it inserts)."""
    _need(ROUTES[name])
    witness = next(d.witness for d in ROUTE_KNOWN if d.id == "torch-fold-conv-fp16-scale-overflow")
    assert check_route(ROUTES[name], witness)[0] <= 1.0
