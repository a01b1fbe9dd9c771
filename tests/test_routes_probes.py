"""The route probes (equiv.routes.probes) on every route whose tools are installed here (the others skip
with the install hint): measured after conversion, the eps given (PROBE_EPS, no framework's default)
survives on every layer and artifact; a plain call of what the route makes is the inference layer; the
layers with no BatchNorm left are the route's ``folds``; what it makes of the same source in training mode
is its declared ``training``, and where it outputs the running statistics, its training step's new-batch
weight and running-variance estimator are the source's; a plain call that is not the inference layer is
the route's declared ``call``; every silent change of a route's conventions is a documented finding that
names it. Run by every env that
installs a route's tools."""
import numpy as np
import pytest

from equiv.known import ALL
from equiv.routes import ROUTES
from equiv.routes import probes as rp
from tests.route_helpers import need

# the finding that documents each route's silent change of a training-mode source
TRAINING_FINDINGS = {
    "tf.keras+tflite": "tflite-training-call-uninitialized-variables",
    "onnx.node+onnx2tf": "onnx2tf-training-node-inference",
    "torch.builtin+onnx2tf": "onnx-torchscript-export-default-eval",
    "torch.builtin+openvino": "openvino-convert-model-sets-eval",
    "torch.builtin+openvino_f32": "openvino-convert-model-sets-eval",
    "torch.builtin+onnx_openvino": "onnx-torchscript-export-default-eval",
    "torch.builtin+onnx_openvino_f32": "onnx-torchscript-export-default-eval",
    "torch.builtin+onnx2torch": "onnx-torchscript-export-default-eval",
}
# the finding that documents a plain call of what a route returns that is not the inference layer
CALL_FINDINGS = {"onnx.node+onnx2torch": "onnx2torch-returns-training-mode",
                 "torch.builtin+onnx2torch": "onnx2torch-returns-training-mode"}
# the finding that documents a route whose training form updates its running statistics otherwise than its source
UPDATE_FINDINGS = {"torch.builtin+nobuco": "nobuco-training-module-traced"}
SILENT = ("inference", "neither")


def expected_mode(route, key, folded):
    """A plain call: the inference layer after .eval() (the "eval" artifact) or where the BatchNorm is folded
    away; otherwise what the route declares (``Route.call``)."""
    layer, _, artifact = key.partition(" ")
    return "inference" if artifact == "eval" or layer in folded else route.call


@pytest.mark.parametrize("name", list(ROUTES))
def test_route_conventions_after_conversion(name):
    route = ROUTES[name]
    need(route)
    rec = rp.measure(route)
    lost = {k: v for k, v in rec["eps"].items() if v != "n/a" and not rp.eps_kept(v)}   # n/a: not an inference call
    assert not lost, f"{name}: eps {rp.PROBE_EPS:g} given, measured {lost}"
    assert all(any(rp.eps_kept(v) for k, v in rec["eps"].items() if k.split()[0] == layer) for layer in route.layers)
    assert rec["folded"] == [layer for layer in route.layers if layer in route.folds], rec["folded"]
    want = {key: expected_mode(route, key, rec["folded"]) for key in rec["mode"]}
    assert rec["mode"] == want, f"{name}: a plain call measured {rec['mode']}, declared {want}"
    assert rec["training"].partition(":")[0] == route.training, \
        f"{name}: a training-mode source measured {rec['training']!r}, declared {route.training!r}"
    kept = {"momentum", "running-variance estimator", "running statistics"} & set(route.keeps)
    assert not rec["training_updates"] or kept, (rec["training_updates"], route.keeps)
    assert "training mode" not in route.keeps or route.training == "batch statistics"
    said = rp.changes(route, rec)
    documented = ("a training-mode source",) + (("the model: a training step",) if name in UPDATE_FINDINGS else ()) \
        + (tuple(f"{layer}: an eval-mode source became a {route.call} call" for layer in route.layers)
           if name in CALL_FINDINGS else ())
    assert all(w.startswith(documented) for w in said), said


def test_every_silent_training_change_is_a_finding_that_names_the_route():
    by_id = {d.id: d for d in ALL}
    silent = {n for n, r in ROUTES.items() if r.training in SILENT}
    assert silent == set(TRAINING_FINDINGS)
    assert {n for n, r in ROUTES.items() if r.call != "inference"} == set(CALL_FINDINGS)
    for name, fid in {**TRAINING_FINDINGS, **CALL_FINDINGS, **UPDATE_FINDINGS}.items():
        assert name in by_id[fid].implementations, (name, fid)
    assert all(r.training in SILENT + ("batch statistics", "refused") for r in ROUTES.values())


@pytest.mark.parametrize("layer", ["conv", "linear", "bn"])
def test_the_probes_read_the_oracle_as_what_it_is(layer):
    """Meta-test: on the oracle's own outputs the probes measure eps PROBE_EPS and the right mode; a model
    with eps 1e-5 or the running statistics of the batch is told apart."""
    from reference.batch_norm import batch_norm_infer, batch_norm_train
    state = rp.probe_state(layer)
    z = rp._input(state, layer)
    y_infer = batch_norm_infer(z, **state.bn, eps=state.eps)
    y_train = batch_norm_train(z, state.gamma, state.beta, eps=state.eps)[0]
    assert rp.mode_of(y_infer, state, layer) == "inference" and rp.eps_kept(rp.eps_of(y_infer, state, layer))
    assert rp.mode_of(y_train, state, layer) == "training"
    assert rp.mode_of(np.zeros_like(y_infer), state, layer) == "other"
    other = batch_norm_infer(z, **state.bn, eps=1e-5)
    assert rp.mode_of(other, state, layer) == "inference"        # eps decides the dead channel only
    assert not rp.eps_kept(rp.eps_of(other, state, layer))
    assert rp.eps_of(batch_norm_infer(z, **state.bn, eps=1e-3), state, layer) == pytest.approx(1e-3, rel=1e-3)
    y32 = y_infer.astype(np.float32).astype(np.float64)
    assert rp.eps_kept(rp.eps_of(y32, state, layer))                # float32 rounding resolves eps


def test_committed_route_ratios_cover_every_route_and_stay_below_one():
    """reference/data/routes/ratios_mutation.json (its README says how it was measured): a ratio for every
    route (an OpenVINO route's f32 twin runs inside its default route's test), all below 1."""
    import json
    from pathlib import Path
    data = json.loads((Path(__file__).parents[1] / "reference/data/routes/ratios_mutation.json").read_text())
    ratios = {test: r for env in data.values() for test, r in env.items()}
    by_file = {"tests/test_routes_tf.py": "tf.keras+tflite", "tests/test_routes_jax2tf.py": "flax.linen+jax2tf"}
    covered = {by_file.get(test.split("::")[0]) or test.split("[")[1].split("-")[0] for test in ratios}
    covered |= {f"{n}_f32" for n in covered if "openvino" in n}
    assert covered == set(ROUTES), set(ROUTES) ^ covered
    assert max(ratios.values()) < 1
