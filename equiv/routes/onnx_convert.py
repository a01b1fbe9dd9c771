"""Routes of the ONNX converters: a Keras 3 model (keras.layers.BatchNormalization alone, after a
Conv2D, after a Dense: the models of ``equiv.routes.tf_convert.keras_model``, NHWC) converted by
tf2onnx's Python API (``tf2onnx.convert.from_keras``, opset 17, input named "x") and run by
onnxruntime's CPU provider under ORT_DISABLE_ALL (``onnx_fold.load``: onnxruntime folds nothing of its
own). Outputs come back NCHW as float64.

tf2onnx 1.17.0 (its wheel's source; with tensorflow-cpu 2.21.0, keras 3.15.1, onnx 1.23.2, protobuf
7.36.2, measured): the converted graph holds no BatchNormalization node. tf2onnx freezes the traced
``model(x, training=False)`` and runs grappler's constfold on it (tf2onnx/tf_loader.py:811-840,
tf_optimize_grappler), which computes Keras' inv = gamma·rsqrt(var + eps) and beta − mean·inv
(tf.nn.batch_normalization, tensorflow/python/ops/nn_impl.py:1491-1497) as constants: the layer
becomes Mul and Add. tf2onnx's transpose optimizer then folds the Mul into a Conv only when the Conv has
no bias (tf2onnx/optimizer/transpose_optimizer.py:581, ``len(t_p.input) == 2``; the weights multiplied
in NumPy, in their own dtype, :586-592) and the Add becomes its bias (:475-512): a float32 Conv2D with
use_bias=False → BatchNormalization is folded (one Conv left), a Conv2D with a bias keeps Conv, Mul,
Add, and a Dense keeps MatMul (Gemm with a bias), Mul, Add (measured). ``folded`` says which, per
model. The given eps survives (it is in the constants: dead channels within bound with eps 1e-5).
float16 (a Keras model of dtype float16): the converted graph computes the BatchNormalization's Mul
and Add in float32 between Casts, as Keras does, and the Conv2D or Dense in float16; the Cast between
the Conv and the Mul keeps the optimizer from folding, so nothing is folded in float16.
bfloat16 is not a dtype of the route: tf2onnx maps TensorFlow's bfloat16 to ONNX FLOAT16
(tf2onnx/tf_utils.py:76, TF_TO_ONNX_DTYPE), so a bfloat16 BatchNormalization alone becomes a float16 graph
(float16 input and output: more precise than bfloat16, range 65504), and after a Conv2D or a Dense,
whose weights stay bfloat16, onnxruntime refuses the graph (measured; tests/test_routes_onnx_convert.py).

What does not survive: the conversion is of an inference function. The running statistics, the
momentum and the running-variance estimator are gone (constants in Mul and Add); a training-mode trace
(``tf.function(lambda x: model(x, training=True))`` through ``from_function``) converts to the batch
statistics' forward (ReduceMean, Sub, Mul, ...) with the moving-statistics updates dropped:
tf2onnx/tf_loader.py:285-296, fix_freezing_errors, removes every AssignVariableOp (its warning names
the node after the one it removed) and the graph's one output is y (tests/test_routes_onnx_convert.py).

``tf.keras+tf2onnx+ort_all``: the same graph in an InferenceSession with onnxruntime's default
ORT_ENABLE_ALL (the model it saves to optimized_model_filepath). Its ConvMulFusion and ConvAddFusion fold
the Mul and the Add that tf2onnx left after a Conv with a bias, and after a float16 Conv: W·s and b·s
(onnxruntime/core/optimizer/conv_mul_fusion.cc:64, :68), then b·s + (beta − mean·s)
(conv_add_fusion.cc:57; read at microsoft/onnxruntime@047055a): every Conv2D → BatchNormalization is
folded, as measured, and a float16 Conv runs in float32 between Casts. MatMul or Gemm, Mul, Add stay.
Finding: tf2onnx-ort-fold-bias-cancels (equiv/known/onnx.py).

onnx2torch (``onnx.node+onnx2torch``, ``torch.builtin+onnx2torch``): ``onnx2torch.convert(model)`` of an ONNX
graph (the onnx.node graphs of equiv.routes.onnx_fold and tf_targets.bn_graph, or torch.onnx.export of the
torch model as it is given) returns a torch.fx.GraphModule. onnx2torch 1.5.15 imports torchvision, which
loads only next to torch 2.14.1 and torchvision 0.29.1 here (CUDA builds, run on the CPU: tox -e
routes-torchvision). Its converter (onnx2torch/node_converters/batch_norm.py) makes an inference node
with constant inputs a torch BatchNorm1d/2d/3d with eps = the node's float32 epsilon (:57) and momentum
= 1 − the node's momentum (:58, default 0.9), the statistics as buffers (:77); a training node (three
outputs) raises NotImplementedError (:94). The GraphModule is returned in training mode (converter.py:173
builds it and calls nothing on it): a plain call normalizes with the batch's statistics and moves the
running ones. ``eval`` is the module after ``.eval()``, as a user must call it.
"""

from equiv.routes import onnx_fold
from equiv.routes import tf_convert as tc
from equiv.routes.states import model_input

OPSET = 17
BN_OPS = ("Mul", "Add", "Sub", "Sqrt", "Reciprocal", "Div", "BatchNormalization")   # a BatchNorm left shows as


class Converted(onnx_fold.Made):
    """tf2onnx's ModelProto and the onnxruntime InferenceSession (ORT_DISABLE_ALL) that runs it."""

    @property
    def ops(self):
        return tuple(n.op_type for n in self.model.graph.node)

    def folded(self):
        """No op of the BatchNorm's arithmetic left: its scale and shift went into the Conv's weights and bias."""
        return not set(self.ops) & set(BN_OPS)


def _convert(function, spec, keras_model=True):
    import tf2onnx
    convert = tf2onnx.convert.from_keras if keras_model else tf2onnx.convert.from_function
    proto, _ = convert(function, input_signature=spec, opset=OPSET)
    made = onnx_fold.load(proto)
    return Converted(made.model, made.runner)


def _spec(model):
    import tensorflow as tf
    return (tf.TensorSpec(model.inputs[0].shape, model.inputs[0].dtype, name="x"),)


def tf2onnx_keras(model):
    """``tf2onnx.convert.from_keras`` of a Keras model: the Converted."""
    return _convert(model, _spec(model))


def tf2onnx_keras_ort_all(model):
    """The same graph in an InferenceSession at ORT_ENABLE_ALL, as onnxruntime's default SessionOptions build it."""
    made = onnx_fold.load(tf2onnx_keras(model).model, "all")
    return Converted(made.model, made.runner)


def tf2onnx_training(model):
    """``tf2onnx.convert.from_function`` of the model's training-mode call: the Converted."""
    import tensorflow as tf
    return _convert(tf.function(lambda x: model(x, training=True)), _spec(model), keras_model=False)


def run(converted, state, layer):
    """The converted model on the state's input of ``layer`` ("conv", "linear", "bn"): NCHW float64."""
    half = converted.runner.get_inputs()[0].type == "tensor(float16)"
    x = tc.model_input(state, layer).astype("float16" if half else "float32")
    return tc._nchw(converted.runner.run(None, {"x": x})[0])


def output(route, state, layer, training=False):
    """The route on the state's Keras model (equiv.routes.probes): ({"": y}, folded); its training form:
    tf2onnx_training (the model's call with training=True), at the route's onnxruntime level. onnx2torch:
    onnx2torch_output."""
    if "onnx2torch" in route.function:
        return onnx2torch_output(route, state, layer, training)
    model = tc.keras_model(state, layer)
    if training:
        made = tf2onnx_training(model)
        if route.function.endswith("ort_all"):
            made = Converted(*vars(onnx_fold.load(made.model, "all")).values())
    else:
        made = globals()[route.function](model)
    return {"": run(made, state, layer)}, made.folded()


# --- onnx2torch: ONNX → torch.fx.GraphModule -------------------------------------------------------------

def onnx2torch(model):
    """``onnx2torch.convert`` of an ONNX ModelProto: the GraphModule as the tool returns it."""
    import onnx2torch as o2t
    return o2t.convert(model)


def torch_onnx2torch(model, x):
    """torch.onnx.export (TorchScript, dynamo=False) of the torch model as it is given, then onnx2torch."""
    from equiv.routes.tf_targets import torch_onnx
    return onnx2torch(torch_onnx(model, x, as_given=True))


def onnx2torch_output(route, state, layer, training=False):
    """The route on the state's source (equiv.routes.probes): {"": the plain call of the GraphModule as
    returned, "eval": after .eval()}, folded (False: no BatchNorm module left is folded); in training, the
    plain call with the running statistics it leaves ({"": (y, mean, var)})."""
    from equiv.routes import edge
    from equiv.routes import onnx_fold as of
    from equiv.routes import tf_targets as tt
    from equiv.routes import torch_fold as tf
    if route.source_adapter == "torch.builtin":
        make = lambda: torch_onnx2torch(tf.build(state).train(training), model_input(state, layer))  # noqa: E731
    else:
        make = lambda: onnx2torch(tt.bn_graph(state, training) if layer == "bn"  # noqa: E731
                                  else of.build(state, training))
    made = make()
    bns = tf.batch_norms(made)
    y = edge.run(made, state, layer)
    if training:
        return {"": (y, bns[0].running_mean.double().numpy(), bns[0].running_var.double().numpy()) if bns else y}, \
            not bns
    fresh = make().eval()           # a plain call moved the first one's running statistics
    return {"": y, "eval": edge.run(fresh, state, layer)}, not bns
