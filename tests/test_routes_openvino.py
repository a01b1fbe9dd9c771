"""The OpenVINO routes (equiv.routes.openvino_route: openvino.convert_model from the onnx.node graph, from the
torch model, and from torch.builtin's ONNX export, compiled on the CPU plugin at its default inference
precision and at f32) on states drawn as trained networks have them (equiv.routes.states): per route, layer
(Conv or Linear/Gemm → BatchNorm, or BatchNorm alone on the layer's output) and every kind of state, the
compiled model against the float64 oracle under the folded layer's bound (the BatchNorm bound for the
layer alone) taken at the coarser of the state's dtype and the precision the compiled model reports (so
that the test holds on any CPU), the unconverted source (onnxruntime, or eager torch) against the oracle
under the unfolded bound, and the two under the sum; that every BatchNorm is decomposed (no
BatchNormInference, Sqrt or Divide left) and folded into the layer before it (by convert_model for a
Convolution, by the CPU plugin for a MatMul); the reported default precision against the CPU's
capabilities; that eps survives; that a training-mode torch module converts to inference; the documented
findings' witnesses (equiv.known.ROUTE_KNOWN) as strict xfails."""
import numpy as np
import pytest

from equiv import registry
from equiv.known import EXPORT_FINDINGS, ROUTE_KNOWN
from equiv.routes import ROUTES
from equiv.routes.states import KINDS, FoldState, fold_states
from equiv.tolerance import ToleranceError, assert_close
from tests.route_helpers import assert_witness_in_region, need, oracle_and_bounds, within_bound

OV = {n: r for n, r in ROUTES.items() if r.module == "equiv.routes.openvino_route"}
KNOWN = [d for d in ROUTE_KNOWN if set(d.implementations) & set(OV)]
PRECISION_FINDING = "openvino-default-precision-half"     # its bound is the compiled precision's, not excluded
# a conversion and a compile take ~0.3 s (torch: a trace, ~1 s): one state per (source, layer, kind) under ci
EXAMPLES = {"dev": 1, "ci": 1, "thorough": 20, "mutation": 3}


def convert(name, state, layer):
    """(the route's Made, the unconverted source's output) on the state."""
    from equiv.routes import openvino_route as ovr
    route = registry.load_route(name)
    if name.startswith("onnx.node"):
        model = ovr.onnx_model(state, layer)
        return route(model), ovr.run_onnx(model, state, layer)
    model = ovr.torch_model(state, layer)
    from equiv.routes import edge
    return route(model, ovr.model_input(state, layer)), edge.run(model, state, layer)


def check_made(name, made, y_source, state, layer, at_state_dtype=False):
    """The (route/oracle, source/oracle, route/source) error/bound ratios of a compiled route. The route's
    bound is taken at the compiled model's precision where coarser than the state's dtype, unless
    ``at_state_dtype``."""
    from equiv.routes import openvino_route as ovr
    assert made.decomposed(), f"{name} {layer}: ops {made.ops()}"
    if state.dtype == "float32":
        assert made.folded() == (layer in ROUTES[name].folds), f"{name} {layer}: {made.ops()}, {made.runtime_layers()}"
    y_route = made(ovr.model_input(state, layer))
    dtype = state.dtype if at_state_dtype else ovr.bound_dtype(state.dtype, made.precision)
    y, _, bound = oracle_and_bounds(state, layer, dtype)
    _, unfolded, _ = oracle_and_bounds(state, layer, state.dtype)
    return (assert_close(f"{name} {layer} at {made.precision} vs oracle", y_route, y, bound),
            assert_close(f"source {layer} vs oracle", y_source, y, unfolded),
            assert_close(f"{name} {layer} vs source", y_route, y_source, bound + unfolded))


def check_route(name, state, layer, at_state_dtype=False):
    """Convert, compile and run one route; returns check_made's ratios."""
    return check_made(name, *convert(name, state, layer), state, layer, at_state_dtype)


def check_both(name, state, layer):
    """The default route and its f32 twin on one conversion (the f32 route compiles the same converted
    model with INFERENCE_PRECISION_HINT f32, as its function does); returns the larger ratios."""
    from equiv.routes import openvino_route as ovr
    made, y_source = convert(name, state, layer)
    f32 = ovr.compile_model(made.model, "f32")
    return tuple(map(max, check_made(name, made, y_source, state, layer),
                     check_made(f"{name}_f32", f32, y_source, state, layer)))


def known(name, layer, state):
    return next((d for d in KNOWN if {name, f"{name}_f32"} & set(d.implementations) and layer in d.layers
                 and d.id != PRECISION_FINDING and d.region(state)), None)


DEFAULTS = [n for n in OV if not n.endswith("_f32")]
CASES = [(name, layer, kind) for name in DEFAULTS for layer in OV[name].layers for kind in KINDS]


@pytest.mark.parametrize("name,layer,kind", CASES, ids=["-".join(c) for c in CASES])
def test_route_within_bound(name, layer, kind):
    """The default route and its f32 twin (``name`` + "_f32")."""
    need(ROUTES[name])
    within_bound(fold_states("conv" if layer == "bn" else layer, kind, ROUTES[name].dtypes),
                 lambda state: check_both(name, state, layer), EXAMPLES, 1,
                 skip=lambda state: known(name, layer, state))


def test_default_precision_is_the_cpus():
    """The default inference precision is a half precision only where the CPU lists it among its
    capabilities (x86-64: bf16 where AVX512-BF16 or AMX; ARM: f16); the f32 hint is f32 everywhere."""
    need(OV["onnx.node+openvino"])
    import openvino as ov

    from equiv.routes import openvino_route as ovr
    state = FoldState(layer="conv", kind="ordinary", dtype="float32", seed=0, bias=True)
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    default = ovr.onnx_default(ovr.onnx_model(state, "conv")).precision
    assert default == "float32" or {"bfloat16": "BF16", "float16": "FP16"}[default] in caps, (default, caps)
    assert ovr.onnx_f32(ovr.onnx_model(state, "conv")).precision == "float32"


@pytest.mark.parametrize("name", [n for n in OV if n.endswith("_f32")])
def test_eps_survives(name):
    """A dead channel (running variance 0) with eps 1e-5: within the folded bound of the oracle with
    1e-5, far out of it with 1e-3 (the folded scale is 10× apart)."""
    need(ROUTES[name])
    state = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False)
    from equiv.routes import openvino_route as ovr
    made, _ = convert(name, state, "conv")
    y_route = made(ovr.model_input(state, "conv"))
    _, _, folded = oracle_and_bounds(state, "conv", "float32")
    assert assert_close(f"{name} vs oracle eps 1e-5", y_route, state.oracle(), folded) <= 1
    other = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False, eps=1e-3)
    with pytest.raises(ToleranceError):
        assert_close(f"{name} vs oracle eps 1e-3", y_route, other.oracle(), folded)


TRAINING = [f for f in EXPORT_FINDINGS if set(f.implementations) & set(OV)]


@pytest.mark.parametrize("name", [n for n in OV if n.startswith("torch.builtin+openvino")])
def test_torch_training_module_converts_to_inference(name):
    """openvino-convert-model-sets-eval: convert_model of a training-mode BatchNorm2d leaves the module in eval
    mode and normalizes with the running statistics (within the BatchNorm bound of the inference oracle),
    not the batch's (far from it); the module's running statistics do not move."""
    need(ROUTES[name])
    import torch

    from equiv.routes import openvino_route as ovr
    assert any(name in f.implementations for f in TRAINING)
    state = FoldState(layer="conv", kind="ordinary", dtype="float32", seed=0, bias=True)
    module = ovr.torch_model(state, "bn").train()
    z = ovr.model_input(state, "bn")
    made = registry.load_route(name)(module, z)
    y = made(z)
    assert not module.training
    assert np.array_equal(module.running_mean.numpy(), state.running_mean.astype(np.float32))
    y_infer, bound, _ = oracle_and_bounds(state, "bn", ovr.bound_dtype(state.dtype, made.precision))
    assert assert_close(f"{name} vs inference", y, y_infer, bound) <= 1
    with torch.no_grad():
        y_train = torch.nn.functional.batch_norm(torch.from_numpy(z), None, None, module.weight, module.bias,
                                                 training=True, eps=state.eps).double().numpy()
    with pytest.raises(ToleranceError):
        assert_close(f"{name} vs training", y, y_train, bound)


@pytest.mark.parametrize("d", KNOWN, ids=[d.id for d in KNOWN])
def test_known_route_witness_in_region(d):
    assert_witness_in_region(d)
    assert all(set(d.layers) <= set(OV[n].layers) for n in d.implementations)


WITNESSES = [pytest.param(d, name, id=f"{d.id}-{name}", marks=pytest.mark.xfail(strict=True, raises=ToleranceError,
                                                                                  reason=d.id))
             for d in KNOWN for name in d.implementations]


@pytest.mark.parametrize("d,name", WITNESSES)
def test_known_route_divergence_witness(d, name):
    """Strict xfail: out of its bound against the oracle on the witness (a fixed release turns it red). The
    default precision's finding is held to the state's own dtype, where the CPU's default is a half precision."""
    need(ROUTES[name])
    if d.id == PRECISION_FINDING:
        made, _ = convert(name, d.witness, d.witness.layer)
        if made.precision == "float32":
            pytest.skip("this CPU's default inference precision is f32")
    check_route(name, d.witness, d.witness.layer, at_state_dtype=d.id == PRECISION_FINDING)
