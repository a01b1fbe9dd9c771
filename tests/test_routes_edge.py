"""The edge runtimes' routes (equiv.routes.edge: ExecuTorch's XNNPACK delegate, litert-torch in the LiteRT
interpreter, Apache TVM's relax on the llvm CPU target) on states drawn as trained networks have them
(equiv.routes.states): per route, layer (Conv2d → BatchNorm2d, Linear → BatchNorm1d, or BatchNorm2d alone
on the conv layer's output), kind of state and dtype, the lowered program in the tool's runtime against
the float64 oracle under the folded layer's bound where the tool folds (no BatchNorm op, nor its MUL and
ADD, left in the lowered program) and the unfolded bound where it does not, eager torch against it under
the unfolded bound, and the two under the sum; that the state's eps survives; the documented findings'
witnesses (equiv.known.ROUTE_KNOWN) as strict xfails; the parts that do not convert
(equiv.routes.NOT_RUN), held to the error they give. Run by the routes-edge and routes-tvm tox envs."""
import importlib.metadata

import pytest

from equiv import registry
from equiv.known import ROUTE_KNOWN
from equiv.routes import NOT_RUN
from equiv.routes import ROUTES as ALL_ROUTES
from equiv.routes.states import KINDS, FoldState, fold_states
from equiv.tolerance import ToleranceError, assert_close
from tests.route_helpers import need, oracle_and_bounds, within_bound

ROUTES = {n: r for n, r in ALL_ROUTES.items() if r.module == "equiv.routes.edge"}
KNOWN = [d for d in ROUTE_KNOWN if set(d.implementations) & set(ROUTES)]
ET, LITERT, TVM = "torch.builtin+executorch_xnnpack", "torch.builtin+litert_torch", "torch.builtin+tvm_relax"
# a lowering takes seconds (an export and a compile per state): one state per (route, layer, kind, dtype) under ci
EXAMPLES = {"dev": 1, "ci": 1, "thorough": 20, "mutation": 3}


def known(name, layer, state):
    return next((d for d in KNOWN if name in d.implementations and layer in d.layers and d.region(state)), None)


def check_route(name, layer, state):
    """Lower and run; returns the (route/oracle, eager/oracle, route/eager) error/bound ratios."""
    from equiv.routes import edge
    route = ROUTES[name]
    model = edge.build(state, layer)
    made = registry.load_route(name)(model)
    y_route, y_eager = edge.run(made, state, layer), edge.run(model, state, layer)
    y, unfolded, folded = oracle_and_bounds(state, layer)
    folds = layer in route.folds
    assert made.folded(edge.UNFOLDED[route.function]) == folds, f"{name} {layer}: ops {made.ops}"
    bound = folded if folds else unfolded
    return (assert_close(f"{name} {layer} vs oracle", y_route, y, bound),
            assert_close(f"eager torch {layer} vs oracle", y_eager, y, unfolded),
            assert_close(f"{name} {layer} vs eager", y_route, y_eager, bound + unfolded))


CASES = [(name, layer, kind, dtype) for name, r in ROUTES.items() for layer in r.layers for kind in KINDS
         for dtype in r.dtypes]


@pytest.mark.parametrize("name,layer,kind,dtype", CASES, ids=["-".join(c) for c in CASES])
def test_edge_route_within_bound(name, layer, kind, dtype):
    need(ROUTES[name])
    within_bound(fold_states("conv" if layer == "bn" else layer, kind, (dtype,)),
                 lambda state: check_route(name, layer, state), EXAMPLES, 1,
                 skip=lambda state: known(name, layer, state))


@pytest.mark.parametrize("name", list(ROUTES))
def test_edge_route_keeps_the_given_eps(name):
    """A dead channel (running variance 0) with eps 1e-5: the lowered program is within bound of the
    oracle with 1e-5 and far out of it with 1e-3 (the scale of the dead channel is 10× apart)."""
    need(ROUTES[name])
    from equiv.routes import edge
    state = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False)
    y_route = edge.run(registry.load_route(name)(edge.build(state, "conv")), state, "conv")
    _, unfolded, folded = oracle_and_bounds(state, "conv")
    bound = folded if "conv" in ROUTES[name].folds else unfolded
    assert assert_close(f"{name} vs oracle eps 1e-5", y_route, state.oracle(), bound) <= 1
    other = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False, eps=1e-3)
    with pytest.raises(ToleranceError):
        assert_close(f"{name} vs oracle eps 1e-3", y_route, other.oracle(), bound)


def _layer(d):
    return "bn" if "bn" in d.layers else d.witness.layer


WITNESSES = [pytest.param(d, n, id=f"{d.id}-{n}", marks=pytest.mark.xfail(strict=True, raises=ToleranceError,
                                                                           reason=d.id))
             for d in KNOWN for n in d.implementations if n in ROUTES]


@pytest.mark.parametrize("d", KNOWN, ids=[d.id for d in KNOWN])
def test_known_edge_witness_in_region(d):
    assert d.region(d.witness) and d.witness.representable()
    assert all(_layer(d) in ROUTES[n].layers and d.witness.dtype in ROUTES[n].dtypes for n in d.implementations)


@pytest.mark.parametrize("d,name", WITNESSES)
def test_known_edge_witness(d, name):
    """Strict xfail: out of its bound against the oracle on the witness (a fixed release turns it red)."""
    need(ROUTES[name])
    check_route(name, _layer(d), d.witness)


# --- what does not convert (equiv.routes.NOT_RUN), and why the two envs are apart ---------------------

def _not_run(route):
    return next(r for r in NOT_RUN.values() if r.route == route)


def test_not_run_rows_name_edge_routes():
    assert {r.route for r in NOT_RUN.values()} >= {LITERT, TVM}
    assert all(r.tried and r.reason and r.measured for r in NOT_RUN.values())
    assert {LITERT, TVM} <= set(ALL_ROUTES)   # the edge rows name routes that run (in float32)


@pytest.mark.parametrize("layer,error", [("conv", "failed to legalize operation 'tfl.conv_2d'"),
                                         ("linear", "Failed to export flatbuffer")])
def test_litert_torch_does_not_convert_float16(layer, error):
    need(ROUTES[LITERT])
    from equiv.routes import edge
    assert error in _not_run(LITERT).reason
    state = FoldState(layer=layer, kind="ordinary", dtype="float16", seed=0, bias=True)
    with pytest.raises(ValueError, match=error):
        edge.run(edge.litert(edge.build(state, layer)), state, layer)


TVM_ERRORS = {False: "requires all the input tensors to have the same dtype",   # by the layer's bias
               True: "Binary operators must have the same datatype for both operands"}


@pytest.mark.parametrize("layer", ["conv", "linear"])
@pytest.mark.parametrize("bias", [False, True])
def test_tvm_does_not_convert_float16_conv_or_linear(layer, bias):
    need(ROUTES[TVM])
    from equiv.routes import edge
    error = TVM_ERRORS[bias]
    assert error in _not_run(TVM).reason
    state = FoldState(layer=layer, kind="ordinary", dtype="float16", seed=0, bias=bias)
    with pytest.raises(TypeError, match=error):
        edge.run(edge.tvm_relax(edge.build(state, layer)), state, layer)


def test_tvm_runs_a_float16_batch_norm_alone_within_bound():
    need(ROUTES[TVM])
    state = FoldState(layer="conv", kind="dead_large_gamma", dtype="float16", seed=0, bias=True)
    assert check_route(TVM, "bn", state)[0] <= 1


def test_the_two_envs_cannot_be_one():
    """apache-tvm-ffi wants typing-extensions>=4.13, xdsl 0.28.0 (litert-torch's ai-edge-litert[model-utils])
    <4.13 (the installed wheels' metadata): the tools live in two tox envs, routes-edge and routes-tvm."""
    pins = {"tvm": ("apache-tvm-ffi", ">=4.13"), "litert_torch": ("xdsl", "<4.13")}
    found = {m: p for m, p in pins.items() if registry._found(m)}
    if not found:
        pytest.skip("neither tvm nor litert_torch is installed")
    for dist, pin in found.values():
        wants = [r.split(";")[0] for r in importlib.metadata.requires(dist) or [] if r.startswith("typing-extensions")]
        assert any(pin in w for w in wants), (dist, wants)


def test_tvm_keeps_eps_and_inference():
    """The relax module keeps BatchNorm with the given eps, exactly, and training off."""
    need(ROUTES[TVM])
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    from equiv.routes import edge
    state = FoldState(layer="conv", kind="ordinary", dtype="float32", seed=0, bias=False, eps=1e-3)
    model = edge.build(state, "conv")
    program = torch.export.export(model, (edge.model_input(state, "conv"),))
    mod = from_exported_program(program, keep_params_as_input=False)
    attrs = edge.relax_ops(mod)["relax.nn.batch_norm"]
    assert float(attrs.epsilon) == 1e-3 and not bool(attrs.training)

