"""What the ONNX exporters and onnxruntime do with BatchNorm, pinned with the versions they were
measured on (torch 2.13.0, onnx 1.23.2, onnxscript 0.7.2, onnxruntime 1.32.0): the graph each
exporter writes in inference and in training mode (nodes and attributes), what the TorchScript
export does to the module, and what onnxruntime's CPU provider refuses. A release that changes any
of these fails here, and the README's ONNX findings must be re-measured."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

from equiv.paths.onnx_paths import export  # noqa: E402


def _module(ndim=2):
    m = (torch.nn.BatchNorm1d if ndim == 2 else torch.nn.BatchNorm2d)(2)
    with torch.no_grad():   # distinct values: the exporters merge equal initializers
        m.weight.copy_(torch.tensor([1.5, 2.5]))
        m.bias.copy_(torch.tensor([0.25, 0.5]))
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
    return m


X = torch.tensor([[0.0, 1.0], [2.0, 5.0]])   # batch mean (1, 3), biased var (1, 4), unbiased (2, 8)


def graph(model):
    """[(op, number of outputs, attributes)], the graph's outputs and its initializers."""
    nodes = [(n.op_type, len(n.output), {a.name: round(helper.get_attribute_value(a), 10) for a in n.attribute})
             for n in model.graph.node]
    inits = {i.name: numpy_helper.to_array(i).tolist() for i in model.graph.initializer}
    return nodes, [o.name for o in model.graph.output], inits


def test_versions_measured():
    assert (torch.__version__.split("+")[0], onnx.__version__, ort.__version__) == ("2.13.0", "1.23.2", "1.32.0")


@pytest.mark.parametrize("dynamo", [False, True])
def test_inference_export_is_one_node_with_float32_attributes(dynamo):
    nodes, outputs, _ = graph(export(_module(), X, "infer", dynamo=dynamo))
    attrs = {"epsilon": round(float(np.float32(1e-5)), 10), "momentum": round(float(np.float32(0.9)), 10)}
    if not dynamo:
        attrs["training_mode"] = 0
    assert nodes == [("BatchNormalization", 1, attrs)] and len(outputs) == 1


def test_torchscript_training_export_leaves_running_stats_dangling_and_steps_them_once():
    """TrainingMode.TRAINING: training_mode=1 with three node outputs, of which only Y is a graph
    output; the running-statistics initializers are the module's after one torch training step on
    the example input (0.1·mean, 0.9 + 0.1·unbiased var), and the module itself has moved."""
    m = _module()
    model = export(m, X, "train", dynamo=False)     # exports a copy: m is unchanged
    nodes, outputs, inits = graph(model)
    assert nodes == [("BatchNormalization", 3, {"epsilon": round(float(np.float32(1e-5)), 10),
                                                "momentum": round(float(np.float32(0.9)), 10), "training_mode": 1})]
    assert len(outputs) == 1
    np.testing.assert_allclose(inits["running_mean"], [0.1, 0.3], rtol=1e-6)
    np.testing.assert_allclose(inits["running_var"], [1.1, 1.7], rtol=1e-6)
    assert float(m.running_mean.abs().max()) == 0.0
    import io
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (X,), io.BytesIO(), dynamo=False, training=torch.onnx.TrainingMode.TRAINING)
    assert m.running_mean.tolist() == pytest.approx([0.1, 0.3]) and int(m.num_batches_tracked) == 1


def test_dynamo_training_export_is_an_inference_node():
    """dynamo=True of a training-mode module (training=TRAINING is ignored): one BatchNormalization
    without training_mode, normalizing with the running statistics; no running-statistics output."""
    m = _module()
    m.train()
    model = export(m, X, "train", dynamo=True)
    nodes, outputs, _ = graph(model)
    assert nodes == [("BatchNormalization", 1, {"epsilon": round(float(np.float32(1e-5)), 10),
                                                "momentum": round(float(np.float32(0.9)), 10)})]
    assert len(outputs) == 1
    from equiv.backends.onnx import runtime
    y = runtime(model).run(None, {"input": X.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(y, m.eval()(X).numpy(), rtol=1e-6)      # the inference output


def test_onnxruntime_cpu_has_half_batch_norm_but_no_double_conv():
    """onnxruntime 1.32's CPU provider runs a float16 BatchNormalization (onnx.node holds it to the
    float16 bounds), but has no double Conv: a float64 BN-LeNet cannot run in it at all."""
    from equiv.adapters.onnx_node import node_runtime
    y = node_runtime(15, (2, 2), "float16", "infer", 1e-5, 0.9, False).run(
        None, {"X": X.numpy().astype(np.float16), "scale": np.ones(2, np.float16), "B": np.zeros(2, np.float16),
               "input_mean": np.zeros(2, np.float16), "input_var": np.ones(2, np.float16)})[0]
    assert y.dtype == np.float16
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).double().eval()
    model = export(conv, torch.ones(1, 1, 5, 5, dtype=torch.float64), "infer", dynamo=False)
    with pytest.raises(Exception, match="NOT_IMPLEMENTED.*Conv"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_opset9_training_outputs_saved_inverse_std():
    """Opset 9 training is five outputs; onnxruntime fills the fifth with 1/sqrt(var + eps), not
    the variance the spec calls saved_var (batch_norm.h: 'with opset <= 9 we will be outputting
    saved_inv_std_dev instead of saved_var')."""
    from equiv.adapters.onnx_node import STATE, node_runtime
    x = X.numpy().astype(np.float32)
    state = dict(zip(STATE, (np.ones(2, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
                             np.ones(2, np.float32))))
    out = node_runtime(9, (2, 2), "float32", "train", 1e-5, 0.9, False).run(None, {"X": x, **state})
    np.testing.assert_allclose(out[3], [1.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(out[4], 1 / np.sqrt(np.array([1.0, 4.0]) + 1e-5), rtol=1e-6)
