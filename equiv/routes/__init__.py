"""Conversion and deployment routes: a tool that rewrites a trained model before it is shipped, here
by folding BatchNorm into the convolution or linear layer before it, in the model's own precision, or
by converting the model to another runtime (TFLite, jax2tf).

A route is data (``Route``: the source layers, the tool and its version pin, what it folds, the
dtypes it runs, how to install it) plus a small function in a module of this package, one module per
tool family, that takes the eval-mode model (layer → BatchNorm) and returns the model the tool makes
of it; ``equiv.registry`` resolves a route's name (``load_route``, install command, whether it can run here).
tests/test_routes_*.py hold each route's folded output to the float64 oracle
(reference/conv_bn.py) under the folded layer's bound (equiv/tolerance_fold.py), and to the
unfolded model under the sum of both bounds. Findings: equiv/known/torch.py, onnx.py, tf.py (ROUTE_KNOWN).
"""
from dataclasses import dataclass


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
          ("conv",), _TORCH, "fuse_eval", _HALF),
    Route("torch.builtin+fuse_linear_bn_eval", _LINEAR, "torch.nn.utils.fusion.fuse_linear_bn_eval(linear, bn)",
          _PIN, ("linear",), _TORCH, "fuse_eval", _HALF),
    Route("torch.builtin+ao_fuse_modules", f"{_CONV}; {_LINEAR}",
          "torch.ao.quantization.fuse_modules(model.eval(), [['0', '1']])", _PIN, ("conv", "linear"), _TORCH,
          "ao_fuse_modules", _HALF),
    Route("torch.builtin+fx_fuse", f"{_CONV}; {_LINEAR}", "torch.fx.experimental.optimization.fuse(model.eval())",
          _PIN, ("conv", "linear"), _TORCH, "fx_fuse", _HALF),
    Route("torch.builtin+inductor_freezing", f"{_CONV}; {_LINEAR}",
          "torch.compile(model.eval()) under torch._inductor.config.freezing = True and torch.no_grad(), CPU",
          _PIN, ("conv",), _TORCH, "inductor_freezing", runs=("linear",), example_budget="compile"),
]}


# TensorFlow's own converters (equiv.routes.tf_convert): TFLite for Keras, jax2tf for Flax
_TF = "equiv.routes.tf_convert"
ROUTES.update({r.name: r for r in [
    Route("tf.keras+tflite", "keras.layers.Conv2D → BatchNormalization; Dense → BatchNormalization; "
          "BatchNormalization alone (NHWC)",
          "tf.lite.TFLiteConverter.from_keras_model(model).convert() (float16: optimizations = [Optimize.DEFAULT], "
          "supported_types = [tf.float16]), run by tf.lite.Interpreter", "tensorflow-cpu==2.21.0, keras==3.15.1",
          ("conv", "linear"), _TF, "tflite", ("float32", "float16"), runs=("bn",), requires=("tensorflow", "keras")),
    Route("flax.linen+jax2tf", "flax.linen.BatchNorm (NHWC): inference, and a training step with "
          "mutable=['batch_stats']", "tf.function(jax.experimental.jax2tf.convert(apply), autograph=False)",
          "jax==0.10.2, flax==0.12.8, tensorflow-cpu==2.21.0", (), _TF, "jax2tf", runs=("bn",),
          requires=("jax", "flax", "tensorflow")),
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

ROUTES.update({r.name: r for r in [
    Route("onnx.node+ort_basic", _ONNX_SOURCE, _LEVEL.format("ORT_ENABLE_BASIC"), _ORT_PIN, ("conv",), _ONNX,
          "ort_basic", _ONNX_HALF, runs=("linear",), requires=_ORT),
    Route("onnx.node+ort_extended", _ONNX_SOURCE, _LEVEL.format("ORT_ENABLE_EXTENDED"), _ORT_PIN, ("conv",), _ONNX,
          "ort_extended", _ONNX_HALF, runs=("linear",), requires=_ORT),
    Route("onnx.node+ort_all", _ONNX_SOURCE, _LEVEL.format("ORT_ENABLE_ALL"), _ORT_PIN, ("conv",), _ONNX,
          "ort_all", _ONNX_HALF, runs=("linear",), requires=_ORT),
    Route("onnx.node+onnxoptimizer", _ONNX_SOURCE, "onnxoptimizer.optimize(model, ['fuse_bn_into_conv'])",
          "onnxoptimizer==0.4.2", ("conv",), _ONNX, "onnxoptimizer_fuse", _ONNX_HALF, runs=("linear",),
          requires=_ORT + ("onnxoptimizer",)),
    Route("onnx.node+onnxslim", _ONNX_SOURCE, "onnxslim.slim(model)", "onnxslim==0.1.98", ("conv",), _ONNX,
          "onnxslim_slim", _ONNX_HALF, runs=("linear",), requires=_ORT + ("onnxslim",)),
    Route("onnx.node+onnxsim", _ONNX_SOURCE, "onnxsim.simplify(model)", "onnxsim==0.8.1", ("conv",), _ONNX,
          "onnxsim_simplify", _ONNX_HALF, runs=("linear",), requires=_ORT + ("onnxsim",)),
]})


# --- edge runtimes (equiv.routes.edge): torch.export of the eval-mode model, lowered by the tool and
# run by its own runtime; each in a tox env of its own pins (routes-edge: ExecuTorch and litert-torch;
# routes-tvm: Apache TVM, whose apache-tvm-ffi wants typing-extensions>=4.13 where litert-torch's xdsl pins <4.13)
_EDGE = "equiv.routes.edge"
_EDGE_SOURCE = f"{_CONV}; {_LINEAR}; BatchNorm2d alone on the conv layer's output"
_TORCH_PIN = "torch==2.13.0"

ROUTES.update({r.name: r for r in [
    Route("torch.builtin+executorch_xnnpack", _EDGE_SOURCE,
          "to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])"
          ".to_executorch(), run by executorch.runtime.Runtime", f"executorch==1.5.1, {_TORCH_PIN}",
          ("conv", "linear", "bn"), _EDGE, "executorch_xnnpack", ("float32", "float16"),
          requires=("torch", "executorch")),
    Route("torch.builtin+litert_torch", _EDGE_SOURCE,
          "litert_torch.convert(model, (x,)), run by ai_edge_litert's Interpreter (default XNNPACK delegate)",
          f"litert-torch==0.10.0, ai-edge-litert==2.3.0, {_TORCH_PIN}", ("conv", "linear"), _EDGE, "litert",
          runs=("bn",), requires=("torch", "litert_torch", "ai_edge_litert")),
    Route("torch.builtin+tvm_relax", _EDGE_SOURCE,
          "relax.frontend.torch.from_exported_program(torch.export.export(model, (x,))), tvm.compile(mod, "
          "target='llvm'), run by relax.VirtualMachine on tvm.cpu()", f"apache-tvm==0.27.0.post1, {_TORCH_PIN}",
          (), _EDGE, "tvm_relax", runs=("conv", "linear", "bn"), requires=("torch", "tvm")),
]})


@dataclass(frozen=True)
class NotRun:
    """A route tool that does not install or run here, with the measured reason (never dropped silently)."""
    tool: str         # "executorch"
    route: str        # the route it would be: "torch.builtin+executorch_xnnpack"
    tried: str        # what was tried: "pip install executorch==1.2.0 next to torch==2.13.0"
    reason: str       # what happened, measured: the resolver's or the import's own words, shortened
    measured: str     # the date and machine: "2026-12-07, x86-64 Linux, Python 3.11"


# Filled by the tool families' modules' authors as they measure; rendered in the docs' routes page
# (docs/paths.md); a row names the tool and, where only part of a route fails, the part.
_MEASURED = "2026-12-07, x86-64 Linux, Python 3.11"
NOT_RUN: dict = {r.tool: r for r in [
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
]}
