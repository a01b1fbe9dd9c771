"""The tf2onnx routes (equiv.routes.onnx_convert: tf.keras+tf2onnx under ORT_DISABLE_ALL, and
tf.keras+tf2onnx+ort_all, the same graph under onnxruntime's default ORT_ENABLE_ALL) on states drawn as
trained networks have them (equiv.routes.states): per route, layer (Conv2D or Dense → BatchNormalization,
or BatchNormalization alone on the layer's output), kind of state and dtype (float32; float16: a float16
Keras model), the converted model in onnxruntime against the float64 oracle under the folded layer's
bound where the route folds (no Mul, Add left: tf2onnx folds a float32 Conv2D without a bias,
ORT_ENABLE_ALL every Conv2D) and the unfolded bound where it does not, eager Keras against it under the
unfolded bound, and the two under the sum; that no BatchNormalization node is left; that the state's eps
survives; that a training-mode trace converts to the batch statistics' forward, within the training
bound, with the running statistics' updates dropped; that bfloat16 becomes float16; the documented
findings' witnesses (equiv.known.ROUTE_KNOWN) as strict xfails."""
import numpy as np
import pytest

from equiv import registry
from equiv.known import ROUTE_KNOWN
from equiv.routes import ROUTES
from equiv.routes.states import KINDS, FoldState, fold_states
from equiv.tolerance import ToleranceError, assert_close, train_forward
from reference.batch_norm import batch_norm_train
from tests.route_helpers import oracle_and_bounds, within_bound

NAME = "tf.keras+tf2onnx"
ROUTE = ROUTES[NAME]
# what each route folds (measured): tf2onnx a float32 Conv2D without a bias (with one, in float16 a Cast
# between the Conv and the Mul, and after a Dense, Mul and Add stay); ORT_ENABLE_ALL every Conv2D
FOLDS = {NAME: lambda state, layer: layer == "conv" and not state.bias and state.dtype == "float32",
         "tf.keras+tf2onnx+ort_all": lambda state, layer: layer == "conv"}
# a conversion takes ~0.5 s: one state per (layer, kind, dtype) under ci
EXAMPLES = {"dev": 1, "ci": 1, "thorough": 20, "mutation": 3}
KNOWN = [d for d in ROUTE_KNOWN if set(FOLDS) & set(d.implementations)]

pytestmark = pytest.mark.skipif(not registry.framework_installed(NAME, registry.ROUTE),
                                reason=f"{NAME} needs {', '.join(ROUTE.requires)}: "
                                       f"{registry.install_command(NAME, registry.ROUTE)}")


def known(name, layer, state):
    return next((d for d in KNOWN if name in d.implementations and layer in d.layers and d.region(state)), None)


def check_route(state, layer, name=NAME):
    """Convert and run; returns the (onnx/oracle, eager/oracle, onnx/eager) error/bound ratios."""
    from equiv.routes import onnx_convert as oc
    from equiv.routes import tf_convert as tc
    model = tc.keras_model(state, layer, state.dtype)
    converted = registry.load_route(name)(model)
    y_onnx, y_eager = oc.run(converted, state, layer), tc.run_keras(model, state, layer)
    y, unfolded, folded = oracle_and_bounds(state, layer)
    assert "BatchNormalization" not in converted.ops, converted.ops
    folds = FOLDS[name](state, layer)
    assert converted.folded() == folds, f"{name} {layer} bias {state.bias}: ops {converted.ops}"
    bound = folded if folds else unfolded
    return (assert_close(f"{name} {layer} vs oracle", y_onnx, y, bound),
            assert_close(f"eager keras {layer} vs oracle", y_eager, y, unfolded),
            assert_close(f"{name} {layer} vs eager", y_onnx, y_eager, bound + unfolded))


CASES = [(name, layer, kind, dtype) for name in FOLDS for layer in ROUTES[name].layers for kind in KINDS
         for dtype in ROUTES[name].dtypes]


@pytest.mark.parametrize("name,layer,kind,dtype", CASES, ids=["-".join(c) for c in CASES])
def test_tf2onnx_within_bound(name, layer, kind, dtype):
    within_bound(fold_states("conv" if layer == "bn" else layer, kind, (dtype,)),
                 lambda state: check_route(state, layer, name), EXAMPLES, 1,
                 skip=lambda state: known(name, layer, state))


@pytest.mark.parametrize("bias", [False, True])
def test_tf2onnx_folds_a_conv_only_without_bias(bias):
    """The transpose optimizer folds the Mul into a Conv without a bias (and the Add becomes its bias); a
    Conv with a bias keeps Conv, Mul, Add."""
    from equiv.routes import tf_convert as tc
    state = FoldState(layer="conv", kind="ordinary", dtype="float32", seed=0, bias=bias)
    ops = registry.load_route(NAME)(tc.keras_model(state, "conv")).ops
    assert [op for op in ops if op != "Transpose"] == (["Conv", "Mul", "Add"] if bias else ["Conv"])


def test_tf2onnx_keeps_the_given_eps():
    """A dead channel (running variance 0) with eps 1e-5: the converted model is within bound of the
    oracle with 1e-5 and far out of it with Keras' default 1e-3 (the folded scale is 10× apart)."""
    from equiv.routes import onnx_convert as oc
    from equiv.routes import tf_convert as tc
    state = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False)
    converted = registry.load_route(NAME)(tc.keras_model(state, "conv"))
    assert converted.folded()
    y_onnx = oc.run(converted, state, "conv")
    _, _, folded = oracle_and_bounds(state, "conv")
    assert assert_close("tf2onnx vs oracle eps 1e-5", y_onnx, state.oracle(), folded) <= 1
    default = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False, eps=1e-3)
    with pytest.raises(ToleranceError):
        assert_close("tf2onnx vs oracle eps 1e-3", y_onnx, default.oracle(), folded)


@pytest.mark.parametrize("kind", ["ordinary", "offset", "large_gamma"])
def test_tf2onnx_training_trace_drops_the_running_statistics(kind):
    """``from_function`` of ``model(x, training=True)``: the batch statistics' forward, within the training
    bound of the oracle; no BatchNormalization node, one output (y): the moving mean and variance updates
    (AssignVariableOp) are removed, so the momentum does not survive."""
    from equiv.routes import onnx_convert as oc
    from equiv.routes import tf_convert as tc
    state = FoldState(layer="conv", kind=kind, dtype="float32", seed=1, bias=False)
    converted = oc.tf2onnx_training(tc.keras_model(state, "bn"))
    assert "BatchNormalization" not in converted.ops and "ReduceMean" in converted.ops, converted.ops
    assert len(converted.model.graph.output) == 1
    z = tc.bn_input(state)
    y, _, _ = batch_norm_train(z, state.gamma, state.beta, eps=state.eps)
    assert assert_close("tf2onnx training vs oracle", oc.run(converted, state, "bn"), y,
                        train_forward(z, state.gamma, state.beta, state.eps, "float32")) <= 1
    y_running = oracle_and_bounds(state, "bn")[0]
    assert not np.allclose(oc.run(converted, state, "bn"), y_running, atol=1e-2), "ran the running statistics"


def test_tf2onnx_removed_warning_names_the_next_op():
    """tf2onnx-removed-warning-names-the-next-op: the warnings that report the dropped moving-statistics
    updates name the removed AssignVariableOp nodes with another op's type (a fixed release turns it red)."""
    import logging

    from equiv.routes import onnx_convert as oc
    from equiv.routes import tf_convert as tc
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(handler)
    try:
        oc.tf2onnx_training(tc.keras_model(FoldState(layer="conv", kind="ordinary", dtype="float32", seed=1,
                                                     bias=False), "bn"))
    finally:
        logger.removeHandler(handler)
    removed = [m.split() for m in messages if m.startswith("Removed ")]
    assert len(removed) == 2 and all(name.rsplit("/", 1)[-1].startswith("AssignVariableOp") for _, _, name in removed)
    assert [op for _, op, _ in removed] == ["Mul", "Mul"], removed


@pytest.mark.parametrize("d,name", [pytest.param(d, n, id=f"{d.id}-{n}", marks=pytest.mark.xfail(
    strict=True, raises=ToleranceError, reason=d.id)) for d in KNOWN for n in d.implementations])
def test_known_tf2onnx_witness(d, name):
    """Strict xfail: out of its bound against the oracle on the witness (a fixed release turns it red)."""
    assert d.region(d.witness) and d.witness.representable()
    check_route(d.witness, "bn" if "bn" in d.layers else d.witness.layer, name)


def test_known_tf2onnx_witness_within_bound_without_onnxruntime_folding():
    """The finding is onnxruntime's fold: the same graph under ORT_DISABLE_ALL (Conv, Mul, Add) is within
    the unfolded bound on each witness."""
    for d in KNOWN:
        assert max(check_route(d.witness, d.witness.layer)) <= 1


def test_tf2onnx_bfloat16_becomes_float16():
    """tf2onnx maps TensorFlow's bfloat16 to ONNX FLOAT16 (tf2onnx/tf_utils.py:76): a bfloat16 Keras
    BatchNormalization alone converts to a graph whose input and output are float16 (its Mul and Add in
    float32 between Casts), within the bfloat16 bound of the oracle and closer to it than eager Keras in
    bfloat16; after a Conv2D or a Dense the layer's weights stay bfloat16 and onnxruntime refuses the graph."""
    import onnx

    from equiv.routes import onnx_convert as oc
    from equiv.routes import tf_convert as tc
    from equiv.tolerance import infer_forward
    from reference.batch_norm import batch_norm_infer
    state = FoldState(layer="conv", kind="ordinary", dtype="bfloat16", seed=0, bias=False)
    model = tc.keras_model(state, "bn", "bfloat16")
    converted = registry.load_route(NAME)(model)
    graph = converted.model.graph
    assert {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]} == {onnx.TensorProto.FLOAT16}
    z = tc.bn_input(state)
    y = batch_norm_infer(z, **state.bn, eps=state.eps)
    bound = infer_forward(z, state.gamma, state.beta, state.running_mean, state.running_var, state.eps, "bfloat16")
    ratio = assert_close("tf2onnx bfloat16 bn vs oracle", oc.run(converted, state, "bn"), y, bound)
    assert ratio < assert_close("eager keras bfloat16 bn vs oracle", tc.run_keras(model, state, "bn"), y, bound)
    for layer in ("conv", "linear"):
        with pytest.raises(Exception, match="bfloat16"):
            registry.load_route(NAME)(tc.keras_model(FoldState(layer=layer, kind="ordinary", dtype="bfloat16",
                                                               seed=0, bias=True), layer, "bfloat16"))
