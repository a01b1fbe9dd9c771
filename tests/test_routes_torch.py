"""The torch folding routes (equiv.routes.torch_fold) on states drawn as trained networks have them
(equiv.routes.states): per route, layer and kind of state, the folded model against the float64
oracle under the folded layer's bound, eager torch against it under the unfolded bound, and the two
against each other under the sum; that each route folds what it declares (no BatchNorm module left;
for inductor, no BatchNorm kernel in the generated code); the documented findings' witnesses
(equiv.known.ROUTE_KNOWN) as strict xfails."""
import pytest

from equiv import registry
from equiv import tolerance_fold as tb
from equiv.known import ROUTE_KNOWN
from equiv.known import route_excluded as excluded
from equiv.routes import ROUTES as ALL_ROUTES
from equiv.routes.states import fold_states
from equiv.tolerance import assert_close
from tests.route_helpers import assert_witness_in_region, need, route_cases, within_bound, witness_params

# the torch routes and their findings (the other tool families have their own test files)
ROUTES = {n: r for n, r in ALL_ROUTES.items() if r.module == "equiv.routes.torch_fold"}
KNOWN = [d for d in ROUTE_KNOWN if set(d.implementations) & set(ROUTES)]

# Examples per (route, layer, kind): the folders take milliseconds; inductor compiles every state
# (seconds each on the CPU), so it draws one state per layer and kind under ci.
EXAMPLES = {"dev": 4, "ci": 4, "thorough": 50, "mutation": 10}
COMPILE_EXAMPLES = {"dev": 1, "ci": 1, "thorough": 10, "mutation": 2}


def check_route(route, state):
    """Run the route on ``state``; returns (folded/oracle, eager/oracle, folded/eager) error/bound ratios."""
    from equiv.routes import torch_fold as tf
    model = tf.build(state)
    made = registry.load_route(route.name)(model)
    y_route, y_eager, y = tf.run(made, state), tf.run(model, state), state.oracle()
    args = (state.x, state.w, state.b)
    unfolded = tb.unfolded(*args, **state.bn, **state.bound_args())
    folds = state.layer in route.folds
    bound = tb.folded(*args, **state.bn, **state.bound_args()) if folds else unfolded
    if isinstance(made, tf.Frozen):
        assert made.folded() == folds, f"inductor freezing folded {state.layer}: {made.folded()}"
    else:
        assert not tf.has_batch_norm(made), f"{route.name} left a BatchNorm in {made}"
    return (assert_close(f"{route.name} {state.layer} vs oracle", y_route, y, bound),
            assert_close(f"eager {state.layer} vs oracle", y_eager, y, unfolded),
            assert_close(f"{route.name} {state.layer} vs eager", y_route, y_eager, bound + unfolded))


CASES = route_cases(ROUTES)


@pytest.mark.parametrize("name,layer,kind", CASES, ids=["-".join(c) for c in CASES])
def test_route_within_bound(name, layer, kind):
    route = ROUTES[name]
    need(route)
    budget = COMPILE_EXAMPLES if route.example_budget == "compile" else EXAMPLES
    within_bound(fold_states(layer, kind, route.dtypes), lambda state: check_route(route, state), budget, 4,
                 skip=lambda state: excluded(name, state))


WITNESSES = witness_params(KNOWN, ROUTES)


@pytest.mark.parametrize("d", KNOWN, ids=[d.id for d in KNOWN])
def test_known_route_witness_in_region(d):
    assert_witness_in_region(d)
    assert any(d.witness.layer in ROUTES[n].layers for n in d.implementations)


@pytest.mark.parametrize("d,name", WITNESSES)
def test_known_route_divergence_witness(d, name):
    """Strict xfail: out of its bound against the oracle on the witness (a fixed release turns it red)."""
    need(ROUTES[name])
    check_route(ROUTES[name], d.witness)


def test_inductor_freezing_folds_the_float16_conv_witness_within_bound():
    """Inductor's freezing folds in float32 and casts (torch/_inductor/fx_passes/binary_folding.py:44-60):
    the conv state on which the float16 folders overflow (torch-fold-conv-fp16-scale-overflow) folds
    finite and within the folded bound."""
    route = ROUTES["torch.builtin+inductor_freezing"]
    need(route)
    witness = next(d.witness for d in KNOWN if d.id == "torch-fold-conv-fp16-scale-overflow")
    assert check_route(route, witness)[0] <= 1.0
