"""Routes into TensorFlow from other frameworks: onnx2tf (ONNX → a tf_keras model, its SavedModel and
TFLite flatbuffers), from the ONNX graphs of equiv.routes.onnx_fold and from torch.builtin's ONNX
export; and nobuco (PyTorch → Keras 2).

onnx2tf 1.28.8 (the last release for Python 3.11: 2.x requires Python >= 3.12), tensorflow-cpu 2.21.0,
tf-keras 2.21.0, ai-edge-litert 2.3.0 (onnx2tf imports its Interpreter: onnx2tf/utils/common_functions.py:20).
``onnx2tf.convert(onnx_graph=model, output_folder_path=..., not_use_onnxsim=True)`` returns a tf_keras
model and writes saved_model.pb, model_float32.tflite and model_float16.tflite (float16 weights,
computed in float32) into the folder. Its BatchNormalization is tf.nn.batch_normalization with the
node's mean, variance, scale and offset as constants and the node's epsilon
(onnx2tf/ops/BatchNormalization.py:89, 155-169); training_mode is read and not used (:91, "disuse"):
a training node becomes an inference one. A 4-D input is taken NHWC (N, H, W, C); outputs come back NHWC.

Offline: where every input is 4-D with a batch of at most 20 and 3 channels (the conv states' input),
onnx2tf loads calibration_image_sample_data_20x128x128x3_float32.npy from the working directory,
or downloads it from GitHub when it is not there (common_functions.py:4259-4283, called at
onnx2tf.py:1093), and uses it for its own check of the converted layers. ``convert`` runs onnx2tf in
a temporary directory holding such a file, made here (uniform [0, 1), seed 0): nothing is fetched.

Layout as equiv.routes.tf_convert: the states' NCHW input goes in NHWC (a 2-D input as it is), the
outputs come back NCHW as float64.
"""
import contextlib
import copy
import io
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from equiv.routes.states import bn_input, model_input
from equiv.routes.tf_convert import LITE_FOLDED, _nchw, _nhwc
from equiv.routes.tf_convert import litert_interpreter as _interpreter

CALIBRATION = "calibration_image_sample_data_20x128x128x3_float32.npy"
TARGETS = ("keras", "saved_model", "tflite")


def bn_graph(state, training=False):
    """The ONNX graph of a BatchNormalization alone (opset 17, float32) on the state's layer output z;
    training: training_mode=1, the running mean and variance as outputs as well."""
    import onnx
    from onnx import helper, numpy_helper
    z = bn_input(state)
    f32 = onnx.TensorProto.FLOAT
    init = [numpy_helper.from_array(np.asarray(getattr(state, k), np.float32), n)
            for n, k in (("gamma", "gamma"), ("beta", "beta"), ("mean", "running_mean"), ("var", "running_var"))]
    outputs = ["y", "new_mean", "new_var"] if training else ["y"]
    node = helper.make_node("BatchNormalization", ["z", "gamma", "beta", "mean", "var"], outputs, epsilon=state.eps,
                            training_mode=int(training))
    c = z.shape[1]
    graph = helper.make_graph([node], "bn", [helper.make_tensor_value_info("z", f32, list(z.shape))],
                              [helper.make_tensor_value_info("y", f32, list(z.shape))]
                              + [helper.make_tensor_value_info(n, f32, [c]) for n in outputs[1:]], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def run_onnx(model, x):
    """The ONNX model's first output in onnxruntime (ORT_DISABLE_ALL) on ``x``, as float64."""
    from equiv.routes import onnx_fold as of
    sess = of.load(model).runner
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, np.float32)})[0], np.float64)


@dataclass
class Converted:
    """What onnx2tf writes for one ONNX model: the tf_keras model, the SavedModel (loaded by TensorFlow)
    and the two TFLite flatbuffers ("float32", "float16": float16 weights)."""
    keras: object
    saved_model: object
    lite: dict

    def ops(self, dtype="float32"):
        """The builtin ops of a flatbuffer, read without the default XNNPACK delegate."""
        return tuple(op["op_name"] for op in _interpreter(self.lite[dtype], plain=True)._get_ops_details())

    def folded(self, dtype="float32"):
        return not any(op in LITE_FOLDED for op in self.ops(dtype))

    def run(self, x, target, dtype="float32"):
        """The target's outputs on the NCHW input ``x``, NCHW float64 (a list: one per graph output)."""
        x = _nhwc(np.asarray(x, dtype=np.float32))
        if target == "keras":
            out = self.keras(x, training=False)
        elif target == "saved_model":
            fn = self.saved_model.signatures["serving_default"]
            name = next(iter(fn.structured_input_signature[1]))
            res = fn(**{name: x})
            out = [res[k] for k in sorted(res)]
        else:
            it = _interpreter(self.lite[dtype])   # the default: XNNPACK delegate, as a deployed model runs
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            out = [it.get_tensor(d["index"]) for d in it.get_output_details()]
        out = out if isinstance(out, (list, tuple)) else [out]
        return [_nchw(np.asarray(o)) for o in out]


def convert(model):
    """onnx2tf on an ONNX ModelProto, offline (see the module's docstring)."""
    import onnx2tf
    import tensorflow as tf
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        np.save(CALIBRATION, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
        out = os.path.join(d, "out")
        keras = onnx2tf.convert(onnx_graph=model, output_folder_path=out, not_use_onnxsim=True, non_verbose=True)
        lite = {dt: open(os.path.join(out, f"model_{dt}.tflite"), "rb").read() for dt in ("float32", "float16")}
        return Converted(keras, tf.saved_model.load(out), lite)


def onnx2tf(model):
    return convert(model)


def torch_onnx(model, x, as_given=False, opset=None):
    """torch.onnx.export of the eval-mode torch model on input ``x`` (the TorchScript exporter,
    dynamo=False, as torch.builtin+onnx; its constant folding folds an eval BatchNorm2d into the Conv);
    ``as_given``: the model in the mode it is in, the exporter's default training argument; ``opset``: an
    opset_version other than the exporter's default."""
    import onnx
    import torch
    m = copy.deepcopy(model) if as_given else copy.deepcopy(model).eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.as_tensor(x),), f, dynamo=False, input_names=["x"],
                          **({} if opset is None else {"opset_version": opset}))
    return onnx.load_from_string(f.getvalue())


def torch_onnx2tf(model, x):
    return convert(torch_onnx(model, x))


def output(route, state, layer, training=False):
    """The route on the state's source (equiv.routes.probes): ({target: y}, folded) for the three targets;
    ``training``: the torch model in training mode exported as it is, or the ONNX node with training_mode=1.
    nobuco: nobuco_output."""
    if route.function == "nobuco_keras":
        return nobuco_output(route, state, layer, training)
    from equiv.routes import onnx_fold as of
    x = model_input(state, layer)
    if route.source_adapter == "torch.builtin":
        from equiv.routes import torch_fold as tf
        made = convert(torch_onnx(tf.build(state).train(training), x, as_given=True))
    else:
        made = convert(bn_graph(state, training) if layer == "bn" else of.build(state, training))
    return {t: made.run(x, t)[0] for t in TARGETS}, made.folded()


# --- nobuco: torch → Keras 2 (tox -e routes-torchvision: tensorflow-cpu 2.15.1, keras 2.15.0, torch 2.14.1 and
# torchvision 0.29.1, CUDA builds run on the CPU; nobuco imports Keras 2 as `keras` and torchvision)

def nobuco_keras(model, x):
    """nobuco.pytorch_to_keras of the torch model as it is given, on the example input ``x`` (NCHW), the Keras
    model taking and giving NCHW (ChannelOrder.PYTORCH). Its converter (nobuco/node_converters/
    normalization.py:16-26) makes keras.layers.BatchNormalization(momentum=1 − momentum, epsilon=eps) with the
    module's weights and statistics, read after nobuco's trace of the module's forward."""
    import nobuco
    import torch
    from nobuco import ChannelOrder
    with contextlib.redirect_stdout(io.StringIO()):      # its trace and its check print a tree per conversion
        return nobuco.pytorch_to_keras(model, args=[torch.as_tensor(np.asarray(x, dtype=np.float32))],
                                       inputs_channel_order=ChannelOrder.PYTORCH,
                                       outputs_channel_order=ChannelOrder.PYTORCH)


def keras_batch_norms(model):
    return [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]


def nobuco_output(route, state, layer, training=False):
    """The route on the state's torch model (equiv.routes.probes): ({"": y}, folded); ``training``: the torch
    model given in training mode and the Keras model called with training=True, with the moving statistics
    that call leaves ({"": (y, mean, var)})."""
    from equiv.routes import edge
    x = model_input(state, layer)
    model = nobuco_keras(edge.build(state, layer).train(training), x)
    bns = keras_batch_norms(model)
    y = np.asarray(model(x, training=training), dtype=np.float64)
    if training:
        return {"": (y, bns[0].moving_mean.numpy(), bns[0].moving_variance.numpy())}, not bns
    return {"": y}, not bns
