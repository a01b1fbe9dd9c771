"""Routes of the ONNX folders: the eval-mode model is an ONNX graph built directly with onnx.helper
(Conv → BatchNormalization or Gemm → BatchNormalization, inference mode, opset 17, the FoldState's
arrays as initializers in its dtype), and each route hands it to one tool and returns what runs:
``Made``, the model the tool made and the onnxruntime InferenceSession (CPU) that runs it.

onnxruntime's graph optimization levels fold while the InferenceSession is built: ORT_ENABLE_BASIC and above run
ConvBNFusion (onnxruntime/core/optimizer/conv_bn_fusion.cc, read at microsoft/onnxruntime@562bf69, whose
initializer names ConvBnFusion_W_ and ConvBnFusion_BN_B_ are the ones 1.32.0 writes): epsilon taken as
float (:23), any floating-point initializers (:44-48), then var + eps, sqrt, scale / sqrt, W scaled per
output channel (:86-89) and the bias (b − mean)·s + B (:92-94; without a bias B − mean·s, :96-97), each
an Initializer operation in the initializers' own type (float16 included: measured, the fused float16
Conv is left between Casts to float32). Its SatisfyCondition matches Conv only: a Gemm →
BatchNormalization stays two nodes at every level (measured). The model a level makes is the one
``optimized_model_filepath`` saves.

onnxoptimizer 0.4.2's fuse_bn_into_conv (onnxoptimizer/passes/fuse_bn_into_conv.h:104-160) does not
compute the fold: it replaces BatchNormalization by a constant subgraph in front of the Conv
(Cast(eps), Add, Sqrt, Div, Unsqueeze, Mul for W; Cast, Sub, Mul, Add for the bias), which the runtime
evaluates (onnxruntime's CPU provider, ORT_DISABLE_ALL here, runs the float16 subgraph in float32 behind
the Casts it inserts; the source read in the vendored copy of onnxsim 0.8.1's sdist,
third_party/onnx-optimizer, VERSION_NUMBER 0.4.2). onnxsim 0.8.1 has its own copy of the pass
(onnxsim/passes/fuse_bn_into_conv.h): float and double folded numerically (ModifyConvNumeric, :113),
float16 by the same constant subgraph (:259-339), whose constants onnxsim then folds into float16
initializers. onnxslim 0.1.98 folds in NumPy, in the initializers' dtype (onnxslim/core/pattern/fusion/convbn.py:53,
bn_scale / np.sqrt(bn_running_var + bn_eps); W·s at :64, (b − mean)·s + bias at :65). None of the
four folds a Gemm.

The tools' models run under ORT_DISABLE_ALL, so that onnxruntime folds nothing of its own; the
unfolded reference ("eager") is the source graph under ORT_DISABLE_ALL.
"""
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

ELEM = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16}
NP = {"float32": np.float32, "float16": np.float16}
OPSET = 17
LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


@dataclass
class Made:
    model: object        # the ModelProto the tool returns (for an onnxruntime level: the one it saves)
    runner: object       # the onnxruntime InferenceSession (CPU) that runs it


def build(state, training=False):
    """The ONNX graph (layer → BatchNormalization, inference) of a FoldState, in its dtype; ``training``: the
    node with training_mode=1 (default momentum 0.9), its running mean and variance graph outputs too."""
    dtype = NP[state.dtype]
    init = lambda name, a: numpy_helper.from_array(np.asarray(a).astype(dtype), name)  # noqa: E731
    bn = [init(n, getattr(state, k)) for n, k in (("gamma", "gamma"), ("beta", "beta"), ("mean", "running_mean"),
                                                  ("var", "running_var"))]
    inputs = ["x", "W"] + (["B"] if state.bias else [])
    if state.layer == "conv":
        layer = helper.make_node("Conv", inputs, ["z"], strides=[state.stride] * 2, pads=[state.padding] * 4)
    else:
        layer = helper.make_node("Gemm", inputs, ["z"], transB=1)
    outputs = ["y", "new_mean", "new_var"] if training else ["y"]    # onnxruntime wants all three in training
    norm = helper.make_node("BatchNormalization", ["z", "gamma", "beta", "mean", "var"], outputs, epsilon=state.eps,
                            training_mode=int(training))
    out_shape = list(state.oracle().shape)
    stats = [helper.make_tensor_value_info(n, ELEM[state.dtype], [out_shape[1]]) for n in outputs[1:]]
    graph = helper.make_graph(
        [layer, norm], "layer_bn", [helper.make_tensor_value_info("x", ELEM[state.dtype], list(state.x.shape))],
        [helper.make_tensor_value_info("y", ELEM[state.dtype], out_shape)] + stats,
        [init("W", state.w)] + ([init("B", state.b)] if state.bias else []) + bn)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)


def load(model, level="disable"):
    """A one-thread CPU InferenceSession of ``model`` at an optimization level, and the model it optimized to."""
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as d:
        so.optimized_model_filepath = os.path.join(d, "optimized.onnx")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return Made(onnx.load(so.optimized_model_filepath), sess)


def run(made, state):
    """The output of a Made (or of a source ModelProto, unoptimized) on the state's input, as float64."""
    if not isinstance(made, Made):
        made = load(made)
    y = made.runner.run(None, {"x": state.x.astype(NP[state.dtype])})[0]
    return np.asarray(y, dtype=np.float64)


def has_batch_norm(made):
    """Whether a BatchNormalization node is left in the model the route returns."""
    return any(n.op_type == "BatchNormalization" for n in made.model.graph.node)


def ort_basic(model):
    return load(model, "basic")


def ort_extended(model):
    return load(model, "extended")


def ort_all(model):
    return load(model, "all")


def onnxoptimizer_fuse(model):
    import onnxoptimizer
    return load(onnxoptimizer.optimize(model, ["fuse_bn_into_conv"]))


def onnxslim_slim(model):
    import onnxslim
    return load(onnxslim.slim(model))


def onnxsim_simplify(model):
    import onnxsim
    simplified, ok = onnxsim.simplify(model)
    assert ok, "onnxsim's own check of the simplified model failed"
    return load(simplified)


def output(route, state, layer, training=False):
    """The route on the state's graph (equiv.routes.probes): ({"": y}, folded); in training, y and the running
    mean and variance outputs ({"": (y, mean, var)}) where the made graph keeps them."""
    made = globals()[route.function](build(state, training))
    out = [np.asarray(o, dtype=np.float64) for o in made.runner.run(None, {"x": state.x.astype(NP[state.dtype])})]
    return {"": tuple(out) if len(out) == 3 else out[0]}, not has_batch_norm(made)
