"""The onnx2tf routes (equiv.routes.tf_targets: onnx.node+onnx2tf, torch.builtin+onnx2tf) on states drawn
as trained networks have them (equiv.routes.states): per route, layer (Conv or Gemm → BatchNormalization,
or BatchNormalization alone on the layer's output) and kind of state, each thing onnx2tf makes (the
tf_keras model and the SavedModel, which keep the BatchNorm, against the float64 oracle under the
unfolded bound; the float32 TFLite flatbuffer, which folds it into the layer (no MUL, ADD, SUB, RSQRT
left), under the folded bound; for float16 states the float16 TFLite flatbuffer under float16's bounds),
the source run eagerly (the ONNX graph in onnxruntime, ORT_DISABLE_ALL; torch) against the oracle under
the unfolded bound, and each against the source under the sum; that the given eps survives; that a
training-mode node becomes an inference one; the documented findings' witnesses as strict xfails."""
from dataclasses import replace

import numpy as np
import pytest

from equiv import registry
from equiv.known import ROUTE_KNOWN
from equiv.known import route_excluded as excluded
from equiv.routes import ROUTES
from equiv.routes.states import KINDS, FoldState, fold_states
from equiv.tolerance import ToleranceError, assert_close, train_forward
from reference.batch_norm import batch_norm_train
from tests.route_helpers import assert_witness_in_region, need, oracle_and_bounds, within_bound, witness_params

# a conversion takes 1-2 s: one state per (route, layer, kind, dtype) under ci
EXAMPLES = {"dev": 1, "ci": 1, "thorough": 20, "mutation": 3}
ONNX2TF = {n: r for n, r in ROUTES.items() if r.module == "equiv.routes.tf_targets" and "onnx2tf" in r.function}
KNOWN = [d for d in ROUTE_KNOWN if set(d.implementations) & set(ONNX2TF)]
TRAINING = "onnx2tf-training-node-inference"


def source_and_eager(route, state, layer):
    """The model the route starts from (float32, the state's arrays) and its eager output, NCHW float64."""
    from equiv.routes import onnx_fold as of
    from equiv.routes import tf_targets as tt
    state32 = replace(state, dtype="float32", layer="conv" if layer == "bn" else state.layer)
    if route.source_adapter == "torch.builtin":
        from equiv.routes import torch_fold as tf
        model = tf.build(state32)
        return model, tf.run(model, state32)
    if layer == "bn":
        model = tt.bn_graph(state32)
        return model, tt.run_onnx(model, tt.bn_input(state))
    return of.build(state32), of.run(of.build(state), state)


def check_route(route, state, layer):
    """Convert and run; the error/bound ratios of each target against the oracle and against the source
    run eagerly (float16: the float16 flatbuffer only)."""
    from equiv.routes import tf_targets as tt
    model, y_eager = source_and_eager(route, state, layer)
    x = tt.bn_input(state) if layer == "bn" else state.x
    made = registry.load_route(route.name)(*((model, np.asarray(x, np.float32)) if route.source_adapter ==
                                             "torch.builtin" else (model,)))
    y, unfolded, folded = oracle_and_bounds(state, layer)
    folds = layer in route.folds
    assert made.folded() == folds, f"{route.name} {layer}: TFLite ops {made.ops()}"
    lite = folded if folds else unfolded
    ratios = [assert_close(f"eager {layer} vs oracle", y_eager, y, unfolded)]
    targets = [("tflite", state.dtype, lite)] if state.dtype == "float16" else \
        [("keras", "float32", unfolded), ("saved_model", "float32", unfolded), ("tflite", "float32", lite)]
    for target, dtype, bound in targets:
        out = made.run(x, target, dtype)[0]
        ratios += [assert_close(f"{route.name} {target} {dtype} {layer} vs oracle", out, y, bound),
                   assert_close(f"{route.name} {target} {dtype} {layer} vs eager", out, y_eager, bound + unfolded)]
    return tuple(ratios)


CASES = [(name, layer, kind, dtype) for name, r in ONNX2TF.items() for layer in r.layers for kind in KINDS
         for dtype in r.dtypes]


@pytest.mark.parametrize("name,layer,kind,dtype", CASES, ids=["-".join(c) for c in CASES])
def test_onnx2tf_within_bound(name, layer, kind, dtype):
    route = ROUTES[name]
    need(route)
    source = "conv" if layer == "bn" else layer
    within_bound(fold_states(source, kind, (dtype,)), lambda state: check_route(route, state, layer), EXAMPLES, 1,
                 skip=lambda state: _known(name, layer, state))


def _known(name, layer, state):
    return next((d for d in KNOWN if name in d.implementations and layer in d.layers and d.region(state)), None) \
        if layer == "bn" else excluded(name, state)


@pytest.mark.parametrize("name", sorted(ONNX2TF))
def test_onnx2tf_keeps_the_given_eps(name):
    """A dead channel (running variance 0) with eps 1e-5: every target within bound of the oracle with
    1e-5, and out of it with 1e-3 (the channel's scale is 10× apart)."""
    route = ROUTES[name]
    need(route)
    state = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False)
    other = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False, eps=1e-3)
    from equiv.routes import tf_targets as tt
    model, _ = source_and_eager(route, state, "conv")
    made = registry.load_route(name)(*((model, np.asarray(state.x, np.float32)) if route.source_adapter ==
                                       "torch.builtin" else (model,)))
    _, _, folded = oracle_and_bounds(state, "conv")
    for target in tt.TARGETS:
        out = made.run(state.x, target)[0]
        assert assert_close(f"{name} {target} eps 1e-5", out, state.oracle(), folded) <= 1
        with pytest.raises(ToleranceError):
            assert_close(f"{name} {target} vs eps 1e-3", out, other.oracle(), folded)


def check_training_node(state):
    """A BatchNormalization node with training_mode=1 through onnx2tf: each target's output against the
    training forward of the oracle (batch statistics) under its bound; the node's running-statistics
    outputs must be there."""
    from equiv.routes import tf_targets as tt
    made = registry.load_route("onnx.node+onnx2tf")(tt.bn_graph(state, training=True))
    z = tt.bn_input(state)
    y = batch_norm_train(z, state.gamma, state.beta, eps=state.eps)[0]
    bound = train_forward(z, state.gamma, state.beta, state.eps, "float32")
    for target in tt.TARGETS:
        outs = made.run(z, target)
        assert_close(f"onnx2tf {target} training node vs training oracle", outs[0], y, bound)
        assert len(outs) == 3, f"onnx2tf {target}: {len(outs)} outputs of the training node's 3"


def test_onnx2tf_training_node_becomes_inference():
    """What the finding says, measured: the training node's output is the inference one (within the
    inference bound), and only that output is left."""
    need(ROUTES["onnx.node+onnx2tf"])
    from equiv.routes import tf_targets as tt
    state = FoldState(layer="conv", kind="ordinary", dtype="float32", seed=0, bias=True)
    made = registry.load_route("onnx.node+onnx2tf")(tt.bn_graph(state, training=True))
    y, bound, _ = oracle_and_bounds(state, "bn")
    for target in tt.TARGETS:
        outs = made.run(tt.bn_input(state), target)
        assert len(outs) == 1
        assert assert_close(f"onnx2tf {target} training node vs inference oracle", outs[0], y, bound) <= 1


WITNESSES = witness_params([d for d in KNOWN if d.id != TRAINING], ROUTES)


@pytest.mark.parametrize("d", KNOWN, ids=[d.id for d in KNOWN])
def test_known_onnx2tf_witness_in_region(d):
    assert_witness_in_region(d)


@pytest.mark.parametrize("d,name", WITNESSES)
def test_known_onnx2tf_witness(d, name):
    """Strict xfail: out of its bound against the oracle on the witness (a fixed release turns it red)."""
    need(ROUTES[name])
    check_route(ROUTES[name], d.witness, "bn" if "bn" in d.layers else d.witness.layer)


@pytest.mark.xfail(strict=True, raises=ToleranceError, reason=TRAINING)
def test_known_onnx2tf_training_witness():
    need(ROUTES["onnx.node+onnx2tf"])
    check_training_node(next(d.witness for d in KNOWN if d.id == TRAINING))


def test_onnx2tf_fetches_nothing(monkeypatch):
    """A conv state's input is 4-D with 3 channels, where onnx2tf loads its calibration images: from the
    file the route writes, with every socket connection refused (onnx2tf would fetch it from GitHub)."""
    import socket
    need(ROUTES["onnx.node+onnx2tf"])

    def refuse(*args, **kwargs):
        raise AssertionError(f"onnx2tf opened a connection: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    state = FoldState(layer="conv", kind="ordinary", dtype="float32", seed=0, bias=True)
    assert state.x.shape[1] == 3
    assert max(check_route(ROUTES["onnx.node+onnx2tf"], state, "conv")) <= 1
