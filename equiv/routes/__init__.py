"""Conversion and deployment routes: a tool that rewrites a trained model before it is shipped, here
by folding BatchNorm into the convolution or linear layer before it, in the model's own precision, or
by converting the model to another runtime (TFLite, jax2tf, tf2onnx into onnxruntime, onnx2tf).

A route is data (``Route``: the source layers, the tool and its version pin, what it folds, the
dtypes it runs, how to install it) plus a small function in a module of this package, one module per
tool family, that takes the eval-mode model (layer → BatchNorm) and returns the model the tool makes
of it; ``equiv.registry`` resolves a route's name (``load_route``, install command, whether it can run here).
tests/test_routes_*.py hold each route's folded output to the float64 oracle
(reference/conv_bn.py) under the folded layer's bound (equiv/tolerance_fold.py), and to the
unfolded model under the sum of both bounds. Findings: equiv/known/torch.py, onnx.py, tf.py (ROUTE_KNOWN).
"""
from dataclasses import dataclass

# What a route can keep of a BatchNorm: its inference numbers (within the bound, findings aside), a training
# mode (the batch statistics' forward, and its gradients where the source has any), the eps and momentum it was
# built with, its running-variance estimator, and its state (running statistics updated by training)
SURVIVES = ("inference", "training mode", "eps", "momentum", "running-variance estimator", "running statistics")

# what a route makes of a source given in training mode (Route.training), in words
TRAINING_WORDS = {"batch statistics": "the training forward (batch statistics)",
                  "inference": "**the inference layer, silently**", "neither": "**neither forward**",
                  "refused": "an error (the tool refuses it)"}


@dataclass(frozen=True)
class Route:
    name: str             # "torch.builtin+fuse_conv_bn_eval": the source adapter + the tool
    source: str           # the layers it starts from
    tool: str             # the call that rewrites the model
    pin: str              # the tool's version the findings were measured on
    folds: tuple          # the layers whose BatchNorm it folds into the weights: ("conv", "linear")
    module: str           # where the function lives
    function: str         # model (eval mode) -> the model the tool makes
    dtypes: tuple = ("float32",)
    runs: tuple = ()      # layers it is run on without folding them (measured: it keeps BatchNorm)
    requires: tuple = ("torch",)   # the modules it imports (the registry derives the install command)
    example_budget: str = ""   # "compile": the smaller example budget of compiled paths
    lands: str = ""       # the runtime the model lands in, by its import name ("torch", "onnxruntime",
    #                       "tflite", "tensorflow"); "" = the source's own (a folder)
    # what survives, measured by the route's tests (SURVIVES): every route's tests draw dead channels (running
    # variance ≈ 0, where eps decides the output), so a route within bound there keeps the eps it was given;
    # training mode, momentum, estimator and running statistics: measured by equiv.routes.probes on the route's
    # training form (a training-mode source, or an ONNX training node)
    keeps: tuple = ("inference", "eps")
    nets: tuple = ()      # the BN-LeNets (equiv.lenet.NETS labels) it is run on whole (tests/test_lenet_routes.py)
    # what it makes of its source given in training mode, measured by equiv.routes.probes (TRAINING_FORMS):
    # "batch statistics" (the training forward survives; the running-statistics updates survive only where
    # ``keeps`` says so), "inference" (silently the inference layer: a finding), "refused" (the tool raises),
    # "neither" (neither forward: a finding)
    training: str = "batch statistics"
    call: str = "inference"   # what a plain call of what the route returns does, the source in eval mode (probed)

    @property
    def lost(self):
        """What does not survive the route (SURVIVES minus ``keeps``)."""
        return tuple(k for k in SURVIVES if k not in self.keeps)

    @property
    def source_adapter(self):
        return self.name.partition("+")[0]

    @property
    def layers(self):
        return self.folds + self.runs


_TORCH = "equiv.routes.torch_fold"
_PIN = "torch==2.13.0"
_CONV = "torch.nn.Conv2d → BatchNorm2d"
_LINEAR = "torch.nn.Linear → BatchNorm1d"
_HALF = ("float32", "float16", "bfloat16")

ROUTES = {r.name: r for r in [
    Route("torch.builtin+fuse_conv_bn_eval", _CONV, "torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)", _PIN,
          ("conv",), _TORCH, "fuse_eval", _HALF, training="refused"),
    Route("torch.builtin+fuse_linear_bn_eval", _LINEAR, "torch.nn.utils.fusion.fuse_linear_bn_eval(linear, bn)",
          _PIN, ("linear",), _TORCH, "fuse_eval", _HALF, training="refused"),
    Route("torch.builtin+ao_fuse_modules", f"{_CONV}; {_LINEAR}",
          "torch.ao.quantization.fuse_modules(model.eval(), [['0', '1']])", _PIN, ("conv", "linear"), _TORCH,
          "ao_fuse_modules", _HALF, nets=("torch.builtin",), training="refused"),
    Route("torch.builtin+fx_fuse", f"{_CONV}; {_LINEAR}", "torch.fx.experimental.optimization.fuse(model.eval())",
          _PIN, ("conv", "linear"), _TORCH, "fx_fuse", _HALF, nets=("torch.builtin",), training="refused"),
    Route("torch.builtin+inductor_freezing", f"{_CONV}; {_LINEAR}",
          "torch.compile(model.eval()) under torch._inductor.config.freezing = True and torch.no_grad(), CPU",
          _PIN, ("conv",), _TORCH, "inductor_freezing", runs=("linear",), example_budget="compile",
          nets=("torch.builtin",)),
]}


# TensorFlow's own converters (equiv.routes.tf_convert): TFLite for Keras, jax2tf for Flax
_TF = "equiv.routes.tf_convert"
ROUTES.update({r.name: r for r in [
    Route("tf.keras+tflite", "keras.layers.Conv2D → BatchNormalization; Dense → BatchNormalization; "
          "BatchNormalization alone (NHWC)",
          "tf.lite.TFLiteConverter.from_keras_model(model).convert() (float16: optimizations = [Optimize.DEFAULT], "
          "supported_types = [tf.float16]), run by tf.lite.Interpreter", "tensorflow-cpu==2.21.0, keras==3.15.1",
          ("conv", "linear"), _TF, "tflite", ("float32", "float16"), runs=("bn",), requires=("tensorflow", "keras"),
          lands="tflite", nets=("tf.keras",), training="neither"),
    Route("flax.linen+jax2tf", "flax.linen.BatchNorm (NHWC): inference, and a training step with "
          "mutable=['batch_stats']", "tf.function(jax.experimental.jax2tf.convert(apply), autograph=False)",
          "jax==0.10.2, flax==0.12.8, tensorflow-cpu==2.21.0", (), _TF, "jax2tf", runs=("bn",),
          requires=("jax", "flax", "tensorflow"), lands="tensorflow", keeps=SURVIVES,
          nets=("flax.linen",)),
]})

# --- ONNX folders (equiv.routes.onnx_fold): the graph built with onnx.helper, run by onnxruntime's CPU
# provider; none of them folds a Gemm (measured: BatchNormalization stays after it)
_ONNX = "equiv.routes.onnx_fold"
_ONNX_SOURCE = "ONNX Conv → BatchNormalization; Gemm → BatchNormalization (onnx.helper, opset 17)"
_ORT_PIN = "onnxruntime==1.32.0"
_ORT = ("onnxruntime", "onnx")
_LEVEL = ("onnxruntime.InferenceSession(model, SessionOptions(graph_optimization_level={}), "
          "CPUExecutionProvider); the model it saves to optimized_model_filepath")
_ONNX_HALF = ("float32", "float16")
# a training node (training_mode=1) is left as it is: its forward, ONNX's momentum and biased running variance
# and the running-statistics outputs survive (equiv.routes.probes, measured on each folder): keeps=SURVIVES

ROUTES.update({r.name: r for r in [
    Route("onnx.node+ort_basic", _ONNX_SOURCE, _LEVEL.format("ORT_ENABLE_BASIC"), _ORT_PIN, ("conv",), _ONNX,
          "ort_basic", _ONNX_HALF, runs=("linear",), requires=_ORT,
          nets=("torch.builtin",), keeps=SURVIVES),
    Route("onnx.node+ort_extended", _ONNX_SOURCE, _LEVEL.format("ORT_ENABLE_EXTENDED"), _ORT_PIN, ("conv",), _ONNX,
          "ort_extended", _ONNX_HALF, runs=("linear",), requires=_ORT,
          nets=("torch.builtin",), keeps=SURVIVES),
    Route("onnx.node+ort_all", _ONNX_SOURCE, _LEVEL.format("ORT_ENABLE_ALL"), _ORT_PIN, ("conv",), _ONNX,
          "ort_all", _ONNX_HALF, runs=("linear",), requires=_ORT,
          nets=("torch.builtin",), keeps=SURVIVES),
    Route("onnx.node+onnxoptimizer", _ONNX_SOURCE, "onnxoptimizer.optimize(model, ['fuse_bn_into_conv'])",
          "onnxoptimizer==0.4.2", ("conv",), _ONNX, "onnxoptimizer_fuse", _ONNX_HALF, runs=("linear",),
          requires=_ORT + ("onnxoptimizer",), nets=("torch.builtin",), keeps=SURVIVES),
    Route("onnx.node+onnxslim", _ONNX_SOURCE, "onnxslim.slim(model)", "onnxslim==0.1.98", ("conv",), _ONNX,
          "onnxslim_slim", _ONNX_HALF, runs=("linear",),
          requires=_ORT + ("onnxslim",), nets=("torch.builtin",), keeps=SURVIVES),
    Route("onnx.node+onnxsim", _ONNX_SOURCE, "onnxsim.simplify(model)", "onnxsim==0.8.1", ("conv",), _ONNX,
          "onnxsim_simplify", _ONNX_HALF, runs=("linear",),
          requires=_ORT + ("onnxsim",), nets=("torch.builtin",), keeps=SURVIVES),
]})

# --- ONNX converters (equiv.routes.onnx_convert): tf2onnx's Keras conversion, run by onnxruntime; what it
# folds depends on the layer's bias (a float32 Conv2D without one: folded; with one, in float16 and every
# Dense: Mul, Add kept), and onnxruntime's default optimization level folds the Conv's Mul and Add
ROUTES.update({r.name: r for r in [
    Route("tf.keras+tf2onnx", "keras.layers.Conv2D → BatchNormalization; Dense → BatchNormalization; "
          "BatchNormalization alone (NHWC)",
          "tf2onnx.convert.from_keras(model, input_signature, opset=17), run by onnxruntime (CPU, ORT_DISABLE_ALL)",
          "tf2onnx==1.17.0, tensorflow-cpu==2.21.0, keras==3.15.1, onnx==1.23.2, onnxruntime==1.32.0",
          ("conv",), "equiv.routes.onnx_convert", "tf2onnx_keras", ("float32", "float16"), runs=("linear", "bn"),
          requires=("tf2onnx", "tensorflow", "keras") + _ORT, lands="onnxruntime", nets=("tf.keras",)),
    Route("tf.keras+tf2onnx+ort_all", "keras.layers.Conv2D → BatchNormalization; Dense → BatchNormalization; "
          "BatchNormalization alone (NHWC)", "tf2onnx.convert.from_keras(model, input_signature, opset=17), run by "
          "onnxruntime's default InferenceSession (CPU, ORT_ENABLE_ALL)",
          "tf2onnx==1.17.0, tensorflow-cpu==2.21.0, keras==3.15.1, onnx==1.23.2, onnxruntime==1.32.0",
          ("conv",), "equiv.routes.onnx_convert", "tf2onnx_keras_ort_all", ("float32", "float16"),
          runs=("linear", "bn"), requires=("tf2onnx", "tensorflow", "keras") + _ORT, lands="onnxruntime",
          nets=("tf.keras",)),
]})


# --- into TensorFlow from other frameworks (equiv.routes.tf_targets): onnx2tf's tf_keras model and SavedModel
# keep the BatchNorm (tf.nn.batch_normalization, constants); its TFLite flatbuffers fold it ("folds")
_TARGETS = "equiv.routes.tf_targets"
_ONNX2TF_PIN = "onnx2tf==1.28.8, tensorflow-cpu==2.21.0, tf-keras==2.21.0, ai-edge-litert==2.3.0, onnx==1.23.2"
_ONNX2TF = ("onnx2tf", "tensorflow", "tf_keras", "ai_edge_litert", "onnx", "onnxruntime")
_ONNX2TF_CALL = ("onnx2tf.convert(onnx_graph=model, not_use_onnxsim=True), offline: the tf_keras model, its SavedModel "
                 "(tf.saved_model.load) and model_float32.tflite / model_float16.tflite (ai_edge_litert's Interpreter)")
# keeps the default (inference, eps) only: a training node becomes an inference one
# (onnx2tf-training-node-inference), so no training mode, momentum or state

ROUTES.update({r.name: r for r in [
    Route("onnx.node+onnx2tf", _ONNX_SOURCE + "; BatchNormalization alone", _ONNX2TF_CALL, _ONNX2TF_PIN,
          ("conv", "linear"), _TARGETS, "onnx2tf", _ONNX_HALF, runs=("bn",), requires=_ONNX2TF, lands="tensorflow",
          training="inference"),
    Route("torch.builtin+onnx2tf", f"{_CONV}; {_LINEAR}",
          "torch.onnx.export(model.eval(), dynamo=False), then " + _ONNX2TF_CALL, f"{_PIN}, {_ONNX2TF_PIN}",
          ("conv", "linear"), _TARGETS, "torch_onnx2tf", requires=_ONNX2TF + ("torch",), lands="tensorflow",
          nets=("torch.builtin",), training="inference"),
]})


# --- edge runtimes (equiv.routes.edge): torch.export of the eval-mode model, lowered by the tool and
# run by its own runtime; each in a tox env of its own pins (routes-edge: ExecuTorch and litert-torch;
# routes-tvm: Apache TVM, whose apache-tvm-ffi wants typing-extensions>=4.13 where litert-torch's xdsl pins <4.13)
_EDGE = "equiv.routes.edge"
_EDGE_SOURCE = f"{_CONV}; {_LINEAR}; BatchNorm2d alone on the conv layer's output"

ROUTES.update({r.name: r for r in [
    Route("torch.builtin+executorch_xnnpack", _EDGE_SOURCE,
          "to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])"
          ".to_executorch(), run by executorch.runtime.Runtime", f"executorch==1.5.1, {_PIN}",
          ("conv", "linear", "bn"), _EDGE, "executorch_xnnpack", ("float32", "float16"),
          requires=("torch", "executorch"), lands="executorch", nets=("torch.builtin",), training="refused"),
    Route("torch.builtin+litert_torch", _EDGE_SOURCE,
          "litert_torch.convert(model, (x,)), run by ai_edge_litert's Interpreter (default XNNPACK delegate)",
          f"litert-torch==0.10.0, ai-edge-litert==2.3.0, {_PIN}", ("conv", "linear"), _EDGE, "litert",
          runs=("bn",), requires=("torch", "litert_torch", "ai_edge_litert"), lands="litert",
          nets=("torch.builtin",)),
    Route("torch.builtin+tvm_relax", _EDGE_SOURCE,
          "relax.frontend.torch.from_exported_program(torch.export.export(model, (x,))), tvm.compile(mod, "
          "target='llvm'), run by relax.VirtualMachine on tvm.cpu()", f"apache-tvm==0.27.0.post1, {_PIN}",
          (), _EDGE, "tvm_relax", runs=("conv", "linear", "bn"), requires=("torch", "tvm"), lands="tvm",
          nets=("torch.builtin",)),
]})


@dataclass(frozen=True)
class NotRun:
    """A route tool that does not install or run here, with the measured reason (never dropped silently)."""
    tool: str         # "executorch"
    route: str        # the route it would be: "torch.builtin+executorch_xnnpack"
    tried: str        # what was tried: "pip install executorch==1.2.0 next to torch==2.13.0"
    reason: str       # what happened, measured: the resolver's or the import's own words, shortened
    measured: str     # the date and machine: "2026-12-07, x86-64 Linux, Python 3.11"


# Rendered in the docs' routes page (docs/routes.md); a row names the tool and, where only part of a route
# fails, the part.
NOT_RUN: dict = {}

# --- OpenVINO (equiv.routes.openvino_route): openvino.convert_model, compiled on the CPU plugin at its default
# inference precision (which depends on the CPU: bf16 where AVX512-BF16 or AMX) and at f32
_OV = "equiv.routes.openvino_route"
_OV_PIN = "openvino==2026.4.1"
_OV_LAYERS = "Conv → BatchNormalization; Gemm → BatchNormalization; BatchNormalization alone"
_OV_RUN = "compiled on the CPU plugin ({}), run as compiled(inputs)"
_OV_DEFAULT, _OV_F32 = "its default INFERENCE_PRECISION_HINT", "INFERENCE_PRECISION_HINT f32"
_OV_ROWS = [("onnx.node+openvino{}", f"ONNX (onnx.helper, opset 17): {_OV_LAYERS}",
             "openvino.convert_model(io.BytesIO(model.SerializeToString())), ", "onnx", _ONNX_HALF, _ORT),
            ("torch.builtin+openvino{}", f"{_CONV}; {_LINEAR}; BatchNorm2d alone",
             "openvino.convert_model(model.eval(), example_input=x), ", "torch", _ONNX_HALF, ("torch",)),
            ("torch.builtin+onnx_openvino{}", f"{_CONV}; {_LINEAR}; BatchNorm2d alone, exported by "
             "torch.onnx.export(dynamo=False) in eval mode (the exporter folds the Conv's BatchNorm itself)",
             "openvino.convert_model(io.BytesIO(torch.onnx.export(...))), ", "torch_onnx", ("float32",),
             ("torch", "onnx"))]
ROUTES.update({r.name: r for r in [
    Route(name.format(suffix), source, tool + _OV_RUN.format(hint), _OV_PIN, ("conv", "linear"), _OV,
          f"{fn}_{suffix.strip('_') or 'default'}", dtypes, runs=("bn",), requires=("openvino",) + requires,
          lands="openvino", nets=("torch.builtin",) if fn.startswith("torch") else (),
          training="inference" if fn.startswith("torch") else "batch statistics",
          keeps=SURVIVES if fn == "onnx" else ("inference", "eps"))
    for name, source, tool, fn, dtypes, requires in _OV_ROWS
    for suffix, hint in (("", _OV_DEFAULT), ("_f32", _OV_F32))]})


_MEASURED = "2026-12-07, x86-64 Linux, Python 3.11.7"
NOT_RUN.update({t.route: t for t in [
    NotRun("onnx2tf 2.6.9", "onnx.node+onnx2tf",
           "pip install onnx2tf==2.6.9 next to tensorflow-cpu==2.21.0 and torch==2.13.0",
           "\"onnx2tf==2.6.9 depends on Python>=3.12\" (uv's resolver; unpinned, it picks 1.28.8, the last release for "
           "Python 3.11, which the routes run; the pinned CPU torch wheel is cp311)", _MEASURED),
]})

NOT_RUN.update({n.route: n for n in [
    NotRun("onnx2torch", "tf.keras+tf2onnx+onnx2torch",
           "the ONNX file of tf.keras+tf2onnx into onnx2torch 1.5.15 (tox -e routes-torchvision runs onnx2torch)",
           "not run: tf2onnx's graph holds no BatchNormalization node (Mul and Add of constants, or folded into the "
           "Conv: equiv.routes.onnx_convert), so onnx2torch would translate arithmetic, not a BatchNorm; and "
           "tf2onnx wants the Keras 3 TensorFlow (2.21) whose protobuf the onnx2torch env's TensorFlow 2.15 "
           "(for nobuco) cannot share. What onnx2torch makes of a BatchNormalization node is measured on "
           "onnx.node+onnx2torch and torch.builtin+onnx2torch", _MEASURED),
]})

NOT_RUN.update({r.route: r for r in [
    NotRun("litert-torch (float16 model)", "torch.builtin+litert_torch",
           "litert_torch.convert(model.half(), (x.half(),)) with litert-torch 0.10.0, torch 2.13.0",
           "Conv2d → BatchNorm2d: \"ValueError: Failed to run converter passes: ... error: failed to legalize "
           "operation 'tfl.conv_2d' that was explicitly marked illegal\"; Linear → BatchNorm1d and BatchNorm2d "
           "alone: \"ValueError: Failed to export flatbuffer: \" (no reason given); the float32 route runs",
           _MEASURED),
    NotRun("apache-tvm (float16 Conv2d or Linear)", "torch.builtin+tvm_relax",
           "from_exported_program of model.half() with apache-tvm 0.27.0.post1, torch 2.13.0",
           "\"TypeError: ... relax.nn.batch_norm ... requires all the input tensors to have the same dtype. However, "
           "the gamma has dtype T.float16 which is other than the input data's dtype T.float32\" (with the layer's "
           "bias: \"Binary operators must have the same datatype for both operands. However, R.add(...) uses "
           "datatype T.float32 on the LHS ... and datatype T.float16 on the RHS\"): the frontend "
           "emits conv2d and linear with out_dtype=\"float32\" (tvm/relax/frontend/torch/"
           "base_fx_graph_translator.py:1251 and :1584); a float16 BatchNorm2d alone converts and runs",
           _MEASURED),
]})


# --- the tools that import torchvision (equiv.routes.onnx_convert: onnx2torch; equiv.routes.tf_targets: nobuco):
# PyPI's torchvision for torch 2.13.0 does not load next to its CPU build; torch 2.14.1 and torchvision 0.29.1
# (CUDA builds, on the CPU) do, in tox -e routes-torchvision, with tensorflow-cpu 2.15.1 and Keras 2 for nobuco
_TV = "torch==2.14.1, torchvision==0.29.1 (CUDA builds, run on the CPU)"
_O2T = ("onnx2torch.convert(model): a torch.fx.GraphModule, called as it is returned (training mode) and "
        "after .eval()")
ROUTES.update({r.name: r for r in [
    Route("onnx.node+onnx2torch", _ONNX_SOURCE + "; BatchNormalization alone (training_mode 0, or 1 for the "
          "training form)", _O2T, f"onnx2torch==1.5.15, onnx==1.16.2, {_TV}", (), "equiv.routes.onnx_convert",
          "onnx2torch", runs=("conv", "linear", "bn"), requires=("onnx2torch", "torchvision"), lands="torch",
          keeps=("inference", "eps", "momentum", "running statistics"), training="refused", call="training"),
    Route("torch.builtin+onnx2torch", f"{_CONV}; {_LINEAR}", "torch.onnx.export(model, dynamo=False), the model as "
          "it is given (its constant folding folds the Conv's BatchNorm), then " + _O2T + " (BN-LeNet exported "
          "at opset 17: the default opset writes AveragePool-19, which onnx2torch 1.5.15 does not convert)",
          f"onnx2torch==1.5.15, onnx==1.16.2, {_TV}", ("conv",), "equiv.routes.onnx_convert",
          "torch_onnx2torch", runs=("linear",), requires=("onnx2torch", "torchvision"),
          lands="torch", keeps=("inference", "eps", "momentum", "running-variance estimator", "running statistics"),
          training="inference", call="training", nets=("torch.builtin",)),
    Route("torch.builtin+nobuco", f"{_CONV}; {_LINEAR}; BatchNorm2d alone",
          "nobuco.pytorch_to_keras(model, args=[x], inputs_channel_order=ChannelOrder.PYTORCH, "
          "outputs_channel_order=ChannelOrder.PYTORCH): a Keras 2 model, called with training=False, and "
          "training=True for the training form", f"nobuco==0.17.0, tensorflow-cpu==2.15.1, keras==2.15.0, {_TV}",
          (), "equiv.routes.tf_targets", "nobuco_keras", runs=("conv", "linear", "bn"),
          requires=("nobuco", "torchvision"), lands="tensorflow",
          keeps=("inference", "training mode", "eps", "momentum", "running statistics"), nets=("torch.builtin",)),
]})
