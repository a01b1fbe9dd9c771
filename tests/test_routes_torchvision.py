"""The routes whose tools import torchvision (tox -e routes-torchvision: torch 2.14.1 and torchvision 0.29.1,
CUDA builds run on the CPU, the one pair whose torchvision loads here): onnx2torch (equiv.routes.onnx_convert:
onnx.node+onnx2torch, torch.builtin+onnx2torch) and nobuco (equiv.routes.tf_targets: torch.builtin+nobuco,
into Keras 2 under tensorflow-cpu 2.15.1). On states drawn as trained networks have them
(equiv.routes.states), per route, layer and kind: what the route makes (onnx2torch's module after .eval();
nobuco's Keras model called with training=False) against the float64 oracle under the unfolded bound (the
folded one where torch's exporter folded the Conv), the source run eagerly (onnxruntime, or torch) against
it, and the two against each other under the sum; what each makes of a training step, pinned as measured;
the findings (equiv/known/onnx.py, torch.py) held to what they say."""
import numpy as np
import pytest

from equiv.routes import ROUTES
from equiv.routes.states import KINDS, FoldState, fold_states
from equiv.tolerance import assert_close
from tests.route_helpers import need, oracle_and_bounds, within_bound

TV = {n: r for n, r in ROUTES.items() if "torchvision" in r.requires}
EXAMPLES = {"dev": 1, "ci": 1, "thorough": 20, "mutation": 3}   # a conversion per state: ~0.1 s, nobuco ~1 s


def source_output(name, state, layer):
    """The route's source run eagerly on the state: the ONNX graph in onnxruntime (ORT_DISABLE_ALL), or torch."""
    from equiv.routes import onnx_fold as of
    from equiv.routes import tf_targets as tt
    if name.startswith("onnx.node"):
        return tt.run_onnx(tt.bn_graph(state), tt.bn_input(state)) if layer == "bn" else of.run(of.build(state), state)
    from equiv.routes import edge
    return edge.run(edge.build(state, layer), state, layer)


def made_output(name, state, layer):
    """(what the route makes, on the state's input: onnx2torch's module after .eval(), nobuco's Keras model;
    whether its BatchNorm is folded)."""
    import importlib
    route = ROUTES[name]
    outputs, folded = importlib.import_module(route.module).output(route, state, layer)
    return outputs.get("eval", outputs[""]), folded


def check_route(name, layer, state):
    y_made, folded = made_output(name, state, layer)
    y_source = source_output(name, state, layer)
    y, unfolded, folded_bound = oracle_and_bounds(state, layer)
    bound = folded_bound if folded else unfolded
    return (assert_close(f"{name} {layer} vs oracle", y_made, y, bound),
            assert_close(f"source {layer} vs oracle", y_source, y, unfolded),
            assert_close(f"{name} {layer} vs source", y_made, y_source, bound + unfolded))


CASES = [(name, layer, kind) for name, r in TV.items() for layer in r.layers for kind in KINDS]


@pytest.mark.parametrize("name,layer,kind", CASES, ids=["-".join(c) for c in CASES])
def test_torchvision_route_within_bound(name, layer, kind):
    need(TV[name])
    within_bound(fold_states("conv" if layer == "bn" else layer, kind), lambda state: check_route(name, layer, state),
                 EXAMPLES, 1)


def _torch_step(module, x):
    """One training-mode forward of a torch module: (running mean, running var) of its BatchNorm after it."""
    import torch

    from equiv.routes import torch_fold as tf
    module.train()
    with torch.no_grad():
        module(torch.as_tensor(np.asarray(x, dtype=np.float32)))
    bn = tf.batch_norms(module)[0]
    return bn.running_mean.double().numpy(), bn.running_var.double().numpy()


def test_onnx2torch_module_trains_with_torch_conventions():
    """onnx2torch-unbiased-running-variance: the module onnx2torch makes of an ONNX inference node (momentum
    0.9, the default) trains with new-batch weight 0.1 (ONNX's, translated) and torch's unbiased running
    variance, where ONNX's training node (the same graph with training_mode=1, run by onnxruntime) updates
    with the biased one."""
    need(ROUTES["onnx.node+onnx2torch"])
    from equiv.routes import onnx_convert as oc
    from equiv.routes import onnx_fold as of
    from equiv.routes import probes as rp
    state = rp.probe_state("conv")
    module = oc.onnx2torch(of.build(state))
    assert rp.update_of(_torch_step(module, state.x), state, "conv") == {"new_batch_weight": 0.1,
                                                                          "running_var": "unbiased"}
    ort = of.load(of.build(state, training=True)).runner.run(None, {"x": state.x.astype(np.float32)})
    assert rp.update_of(ort[1:], state, "conv") == {"new_batch_weight": 0.1, "running_var": "biased"}


def test_onnx2torch_returns_a_training_mode_module():
    """onnx2torch-returns-training-mode: the GraphModule comes back with training=True and its plain call
    normalizes with the batch's statistics and moves the running ones."""
    need(ROUTES["onnx.node+onnx2torch"])
    from equiv.routes import onnx_convert as oc
    from equiv.routes import onnx_fold as of
    from equiv.routes import probes as rp
    state = rp.probe_state("conv")
    module = oc.onnx2torch(of.build(state))
    assert module.training
    from equiv.routes import edge
    from equiv.routes import torch_fold as tf
    y = edge.run(module, state, "conv")
    assert rp.mode_of(y, state, "conv") == "training"
    moved = tf.batch_norms(module)[0].running_mean.double().numpy()
    assert not np.allclose(moved, state.running_mean, rtol=1e-3)


def test_nobuco_dense_batch_norm_updates_the_biased_variance():
    """nobuco-dense-batchnorm-biased-running-variance: the Keras 2 model nobuco makes of an eval-mode torch
    model, trained with training=True: new-batch weight 0.1 (torch's, translated) on both; the running
    variance unbiased after Conv2d (Keras 2's fused kernel on a 4-D input) and biased after Linear (its
    2-D BatchNormalization is not fused), where torch's is unbiased on both."""
    need(ROUTES["torch.builtin+nobuco"])
    from equiv.routes import edge
    from equiv.routes import probes as rp
    from equiv.routes import tf_targets as tt
    found = {}
    for layer in ("conv", "linear"):
        state = rp.probe_state(layer)
        model = tt.nobuco_keras(edge.build(state, layer), state.x)
        model(state.x.astype(np.float32), training=True)
        bn = tt.keras_batch_norms(model)[0]
        found[layer] = rp.update_of((bn.moving_mean.numpy(), bn.moving_variance.numpy()), state, layer)
        assert rp.update_of(_torch_step(edge.build(state, layer), state.x), state, layer)["running_var"] == "unbiased"
    assert found == {"conv": {"new_batch_weight": 0.1, "running_var": "unbiased"},
                     "linear": {"new_batch_weight": 0.1, "running_var": "biased"}}, found


def test_nobuco_traces_a_training_module_and_copies_the_moved_statistics():
    """nobuco-training-module-traced: converting a training-mode module runs its forward in training mode,
    which moves its running statistics one step (0.1·(batch − running)) before the converter copies them:
    the Keras layer starts from the moved statistics, and its inference call is neither torch's inference
    output nor its training one."""
    need(ROUTES["torch.builtin+nobuco"])
    from equiv.routes import edge
    from equiv.routes import probes as rp
    from equiv.routes import tf_targets as tt
    state = rp.probe_state("bn")
    z = tt.bn_input(state)
    module = edge.build(state, "bn").train()
    model = tt.nobuco_keras(module, z)
    bn = tt.keras_batch_norms(model)[0]
    batch_mean = z.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.9 * state.running_mean + 0.1 * batch_mean, rtol=1e-5)
    assert rp.mode_of(np.asarray(model(z.astype(np.float32)), dtype=np.float64), state, "bn") == "other"


@pytest.mark.parametrize("kind", KINDS)
def test_torch_exporter_folds_the_conv_before_onnx2torch(kind):
    """torch.builtin+onnx2torch: the TorchScript exporter folds an eval Conv2d's BatchNorm (constant folding),
    so onnx2torch makes no BatchNorm module of it; a Linear's stays (a BatchNorm1d, in training mode)."""
    need(ROUTES["torch.builtin+onnx2torch"])
    state = FoldState(layer="conv", kind=kind, dtype="float32", seed=0, bias=True)
    assert made_output("torch.builtin+onnx2torch", state, "conv")[1]
    linear = FoldState(layer="linear", kind=kind, dtype="float32", seed=0, bias=True)
    assert not made_output("torch.builtin+onnx2torch", linear, "linear")[1]


def test_torch_onnx2torch_linear_trains_as_torch():
    """torch.builtin+onnx2torch: the BatchNorm1d that comes back after a Linear (the exporter keeps it a node:
    momentum 0.9 in the file) trains with torch's new-batch weight 0.1 and unbiased running variance, as the
    source does."""
    need(ROUTES["torch.builtin+onnx2torch"])
    from equiv.routes import onnx_convert as oc
    from equiv.routes import probes as rp
    from equiv.routes import torch_fold as tf
    state = rp.probe_state("linear")
    module = oc.torch_onnx2torch(tf.build(state), state.x.astype(np.float32))
    assert rp.update_of(_torch_step(module, state.x), state, "linear") == {"new_batch_weight": 0.1,
                                                                            "running_var": "unbiased"}


def test_importing_nobuco_patches_torch_for_the_whole_process():
    """nobuco-import-patches-torch, in a fresh process: after `import nobuco` a torch.fx GraphModule cannot be
    called (no forward) and TorchScript is disabled; before it, both work."""
    need(ROUTES["torch.builtin+nobuco"])
    import subprocess
    import sys
    code = ("import torch\n"
            "def call():\n"
            "    g = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 2)))\n"
            "    try:\n"
            "        g(torch.zeros(1, 3))\n"
            "        return 'called'\n"
            "    except NotImplementedError as e:\n"
            "        return 'refused: ' + str(e)\n"
            "print(call(), torch.jit._state._enabled.enabled)\n"
            "import nobuco\n"
            "print(call(), torch.jit._state._enabled.enabled)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600).stdout
    before, after = [line for line in out.splitlines() if line.startswith(("called", "refused"))]
    assert before == "called True"
    assert after.startswith("refused: ") and "missing the required" in after and after.endswith("False"), after
