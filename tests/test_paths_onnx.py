"""The ONNX paths against their eager counterparts (torch.builtin for the exports, onnx.node for its
opsets and optimization level), on Hypothesis cases, under the sum of the two bounds: training and
inference output, and the running statistics after k training steps. A case inside a documented
divergence of either side (equiv/known/) is left out of the quantity it affects; each such
divergence's witness runs as a strict xfail of the same comparison. Also: the dynamo path's graph
instantiation equals a real export, and the exported BN-LeNet in inference mode (BatchNorm folded
into the convolutions by onnxruntime) against torch's inference forward."""
import numpy as np
import pytest
from hypothesis import given, settings

from equiv import registry
from equiv import tolerance as tol
from equiv.core import FrameworkMissing
from equiv.known import KNOWN, divergences, excluded
from equiv.strategies import cases

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

EAGER = {"torch.builtin+onnx": "torch.builtin", "torch.builtin+onnx_dynamo": "torch.builtin",
         "onnx.node+opset9": "onnx.node", "onnx.node+opset14": "onnx.node", "onnx.node+optimized": "onnx.node"}


def _load(name):
    try:
        return registry.load(name)
    except FrameworkMissing as e:
        pytest.skip(str(e))


def _build(A, case):
    a = A(case.channels, case.ndim, dtype=case.dtype, new_batch_weight=case.new_batch_weight, eps=case.eps)
    a.set_state(**case.state)
    return a


def _biased_to(var_eager, case, w, est_path, est_eager, old):
    """The eager running variance re-expressed with the path's estimator (a declared, measured
    convention difference, conventions.md): new = (1 − w)·old + w·c·var, c = m/(m − 1) if unbiased."""
    if est_path == est_eager:
        return var_eager
    m = case.count
    c = m / (m - 1) if m > 1 else 1.0
    batch_term = (var_eager - (1 - w) * old) / w if w else 0.0
    return (1 - w) * old + w * (batch_term / c if est_eager == "unbiased" else batch_term * c)


def compare(path, eager, case):
    """Raise AssertionError where path and eager differ by more than the sum of their bounds."""
    P, E = _load(path), _load(eager)
    skip = lambda prop: excluded(P, prop, case) or excluded(E, prop, case)  # noqa: E731
    worst = 0.0
    x, g, b = case.x, case.gamma, case.beta
    if not skip("train_forward"):
        bound = 2 * tol.train_forward(x, g, b, case.eps, case.dtype)
        worst = max(worst, tol.assert_close("training output, path vs eager", _build(P, case).forward_train(x),
                                            _build(E, case).forward_train(x), bound))
    if not skip("infer_forward"):
        bound = 2 * tol.infer_forward(x, g, b, case.running_mean, case.running_var, case.eps, case.dtype)
        worst = max(worst, tol.assert_close("inference output, path vs eager", _build(P, case).forward_infer(x),
                                            _build(E, case).forward_infer(x), bound))
    if not skip("running_stats") and P.conventions.stats_update != "never":
        p, e = _build(P, case), _build(E, case)
        bm = bv = 0.0
        for i in range(case.steps):
            xi = case.batch(i)
            old_p, old_e = p.get_state(), e.get_state()
            p.train_step(xi, case.dy)
            e.train_step(xi, case.dy)
            sp, se = p.get_state(), e.get_state()
            dm, dv = tol.running_stats(xi, old_e["running_mean"], old_e["running_var"], se["running_mean"],
                                       se["running_var"], case.new_batch_weight, case.dtype)
            bm, bv = bm + 2 * dm, bv + 2 * dv
            worst = max(worst, tol.assert_close(f"running mean after step {i + 1}, path vs eager",
                                                sp["running_mean"], se["running_mean"], bm))
            var_e = _biased_to(se["running_var"], case, case.new_batch_weight, P.conventions.running_var,
                               E.conventions.running_var, old_p["running_var"])
            worst = max(worst, tol.assert_close(f"running var after step {i + 1}, path vs eager",
                                                sp["running_var"], var_e, bv))
            # carry the path's own state on both sides: the comparison is of one step each
            e.set_state(**sp)
    return worst


@pytest.mark.parametrize("path", sorted(EAGER))
def test_path_matches_its_eager_counterpart(path, profile):
    P = _load(path)

    @settings(settings.get_profile(profile), max_examples=min(settings.get_profile(profile).max_examples, 15))
    @given(case=cases(dtypes=P.dtypes, max_steps=3))
    def run(case):
        from equiv.properties import Rejected
        try:
            compare(path, EAGER[path], case)
        except Rejected:
            pass

    run()


WITNESSES = [pytest.param(path, d, id=f"{path}-{d.id}",
                          marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=d.reason))
             for path in sorted(EAGER) if EAGER[path] == "torch.builtin"
             for d in KNOWN if path in d.implementations]


@pytest.mark.parametrize("path,divergence", WITNESSES)
def test_divergence_witness_differs_from_eager(path, divergence):
    """Each divergence documented for an exported path shows against eager torch on its witness
    (the region is removed from the comparison above, so the witness is compared in full)."""
    P, E = _load(path), _load(EAGER[path])
    case = divergence.witness
    a, b = _build(P, case), _build(E, case)
    if divergence.witness_property == "infer_forward":
        bound = 2 * tol.infer_forward(case.x, case.gamma, case.beta, case.running_mean, case.running_var,
                                      case.eps, case.dtype)
        tol.assert_close("inference output", a.forward_infer(case.x), b.forward_infer(case.x), bound)
    elif divergence.witness_property == "train_forward":
        tol.assert_close("training output", a.forward_train(case.x), b.forward_train(case.x),
                         2 * tol.train_forward(case.x, case.gamma, case.beta, case.eps, case.dtype))
    else:
        a.train_step(case.x, case.dy)
        b.train_step(case.x, case.dy)
        dm, _ = tol.running_stats(case.x, case.running_mean, case.running_var, b.get_state()["running_mean"],
                                  b.get_state()["running_var"], case.new_batch_weight, case.dtype)
        tol.assert_close("running mean", a.get_state()["running_mean"], b.get_state()["running_mean"], 2 * dm)


def test_node_paths_inherit_and_add_no_divergence():
    """The opsets and the optimization level compute what onnx.node computes: they have its
    divergences and none of their own."""
    for path in ("onnx.node+opset9", "onnx.node+opset14", "onnx.node+optimized"):
        assert [d.id for d in divergences(path)] == [d.id for d in divergences("onnx.node")]
        assert not [d for d in KNOWN if path in d.implementations]


def test_running_var_estimator_is_a_convention_difference():
    """torch.builtin+onnx keeps the biased running variance of the ONNX node; torch.builtin the
    unbiased one: on one batch of 4 with biased variance 4 and weight 1, 4 against 16/3."""
    x = np.array([[-2.0], [2.0], [-2.0], [2.0]])
    out = {}
    for name in ("torch.builtin+onnx", "torch.builtin"):
        a = _load(name)(1, 2, dtype="float64", new_batch_weight=1.0)
        a.train_step(x, np.zeros_like(x))
        out[name] = float(a.get_state()["running_var"][0])
    assert out == {"torch.builtin+onnx": 4.0, "torch.builtin": pytest.approx(16 / 3, rel=1e-15)}


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_dynamo_instantiation_equals_a_real_export(mode):
    """The dynamo path exports once per (ndim, dtype, mode) and instantiates the graph per call;
    a real export for the call's shape, state, eps and momentum is the same graph."""
    import torch
    from onnx import helper, numpy_helper

    from equiv.paths import onnx_paths as op

    def summary(model):
        node = op.bn_node(model)
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        attrs = sorted((a.name, helper.get_attribute_value(a)) for a in node.attribute)
        shapes = [[d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in list(model.graph.input) + list(model.graph.output)]
        return ([n.op_type for n in model.graph.node], attrs, [inits[n].tolist() for n in node.input[1:5]], shapes)

    for shape, eps, momentum, dtype in (((5, 3), 1e-3, 0.25, "float32"), ((2, 4, 3, 1), 0.1, 0.7, "float64")):
        c = shape[1]
        m = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(c, eps=eps, momentum=momentum)
        m = m.to(torch.float64 if dtype == "float64" else torch.float32)
        with torch.no_grad():
            for i, v in enumerate((m.weight, m.bias, m.running_mean, m.running_var)):
                v.copy_(torch.arange(c) + 0.5 + 3 * i)
        x = torch.ones(shape, dtype=m.weight.dtype)
        real = op.export(m, x, mode, dynamo=True)
        inst = op.instantiate(op.dynamo_template(len(shape), dtype, mode), shape, op._state_arrays(m, dtype),
                              eps, momentum)
        assert summary(inst) == summary(real)


LENET_EXPORTS = {   # exporter options -> BatchNormalization nodes in the export, and after onnxruntime's optimizations
    "torchscript": (dict(dynamo=False), 2, 2),                                  # the exporter folds bn1, bn2 into Conv
    "torchscript-no-folding": (dict(dynamo=False, do_constant_folding=False), 4, 2),   # onnxruntime folds them
    "dynamo": (dict(dynamo=True), 0, 0),                                        # the exporter folds all four
}


@pytest.fixture(scope="module")
def lenet():
    """BN-LeNet (equiv/lenet/torch_net.py, float32) after 5 training steps on synthetic data, in
    inference mode, with an evaluation batch of 128 and torch's inference logits for it."""
    import torch

    from equiv.lenet import synthetic, torch_net
    from reference import lenet as ref

    net = torch_net.build("builtin", "float32")
    torch_net.load_params(net, ref.init_params(0))
    x, y = synthetic(128 * 6, 0)
    for s in range(5):
        torch_net.step(net, x[128 * s:128 * (s + 1)], y[128 * s:128 * (s + 1)], 0.1, capture=False)
    net.eval()
    xt = torch.as_tensor(x[640:], dtype=torch.float32)
    with torch.no_grad():
        return net, xt, net(xt).numpy().astype(np.float64)


@pytest.mark.parametrize("how", sorted(LENET_EXPORTS))
def test_exported_lenet_inference_matches_torch(lenet, how, tmp_path):
    """The exported BN-LeNet in inference mode, run by onnxruntime with graph optimizations off and
    on (where BatchNorm is folded into the preceding Conv), against torch's inference forward: the
    logits agree within the lockstep tolerance of one float32 step, 6.9e-5 (measured: 6.1e-7 to
    7.8e-7 normwise relative, folded or not)."""
    import onnx
    import onnxruntime as ort

    from equiv.lenet.lockstep import rel_error, tolerance
    from equiv.paths.onnx_paths import export

    net, xt, expected = lenet
    options, exported_bn, optimized_bn = LENET_EXPORTS[how]
    model = export(net, xt, "infer", **options)
    assert [n.op_type for n in model.graph.node].count("BatchNormalization") == exported_bn
    bound = tolerance("float32", 128)
    for optimize, count in ((False, exported_bn), (True, optimized_bn)):
        so = ort.SessionOptions()
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        so.intra_op_num_threads, so.log_severity_level = 1, 3
        so.optimized_model_filepath = str(tmp_path / f"optimized-{optimize}.onnx")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: xt.numpy()})[0]
        ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
        assert ops.count("BatchNormalization") == count, ops
        err = rel_error(got, expected)
        assert err <= bound, f"{how}, optimizations {'on' if optimize else 'off'}: {err:.3g} > {bound:.3g}"
