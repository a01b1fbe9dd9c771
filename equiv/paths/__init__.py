"""Execution paths: a registered adapter run along another path a user runs BatchNorm through
(compiled, exported, another memory layout or precision, another backend).

A path is data (``ExecutionPath``: which adapter, what is different, what it needs) plus a small
wrapper in a module of this package: a function that takes the base adapter class and returns a
subclass that builds or calls the layer the other way. It never copies the adapter. Its name says
adapter and path, ``torch.builtin+channels_last``; ``equiv.adapters.load`` accepts it like any
registered name, and every property, probe and golden vector runs on it.
"""
import importlib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutionPath:
    base: str            # the registered adapter it wraps: "torch.builtin"
    path: str            # "channels_last"
    module: str          # where the wrapper lives: "equiv.paths.torch_paths"
    wrapper: str         # function (base adapter class) -> adapter class
    what: str            # one line: what is different along this path
    requires: tuple = ()  # importable modules beyond the base's framework
    install: str = ""    # the command that installs them
    framework: str = ""  # import name of the framework the path runs on instead of the base's (then
    #                      only this, ``requires`` and ``install`` are needed: no TensorFlow for Keras on jax)
    backend: str = ""    # the Keras backend (KERAS_BACKEND, fixed per process) the path needs

    @property
    def name(self):
        return f"{self.base}+{self.path}"


_TORCH = "equiv.paths.torch_paths"
_ONNX = "equiv.paths.onnx_paths"
_TF = "equiv.paths.tf_paths"
_KERAS = "equiv.paths.keras_paths"
_PADDLE = "equiv.paths.paddle_paths"
_ORT = ("onnx", "onnxruntime")
_ORT_INSTALL = "pip install onnx onnxruntime"

PATHS = {p.name: p for p in [
    ExecutionPath("torch.builtin", "channels_last", _TORCH, "channels_last",
                  "BatchNorm2d module and input in torch.channels_last memory format (4-D only; 2-D as eager)"),
    ExecutionPath("torch.scratch", "channels_last", _TORCH, "channels_last",
                  "the book's layer on input in torch.channels_last memory format (4-D only; 2-D as eager)"),
    ExecutionPath("torch.builtin", "compile", _TORCH, "compile",
                  "the module called through torch.compile(fullgraph=True, dynamic=True), inductor on the CPU; "
                  "float32"),
    ExecutionPath("torch.scratch", "compile", _TORCH, "compile",
                  "the book's layer (or its batch_norm with the asked setting) called through "
                  "torch.compile(fullgraph=True, dynamic=True), inductor on the CPU"),
    ExecutionPath("torch.builtin", "bfloat16", _TORCH, "bfloat16",
                  "bfloat16 input and upstream gradient, float32 parameters and buffers (float32 input: as eager)"),
    ExecutionPath("torch.builtin", "autocast", _TORCH, "autocast",
                  "a float32 module called inside torch.autocast('cpu', dtype=torch.bfloat16)"),
    ExecutionPath("torch.builtin", "functional_call", _TORCH, "functional_call",
                  "torch.func.functional_call(module, explicit parameters and buffers, (x,))"),
    ExecutionPath("torch.builtin", "export", _TORCH, "export",
                  "torch.export.export of the module in train() or eval(), run through ExportedProgram.module()"),
    ExecutionPath("tf.keras", "xla", _TF, "xla",
                  "the layer's call and its training step (GradientTape inside) under "
                  "tf.function(jit_compile=True), XLA on the CPU"),
    ExecutionPath("tf.scratch", "xla", _TF, "xla",
                  "the book's layer's call and its training step (GradientTape inside) under "
                  "tf.function(jit_compile=True), XLA on the CPU"),
    ExecutionPath("torch.builtin", "onnx", _ONNX, "onnx_export",
                  "torch.onnx.export (TorchScript exporter, dynamo=False) per call, run by onnxruntime on the CPU",
                  _ORT, _ORT_INSTALL),
    ExecutionPath("torch.builtin", "onnx_dynamo", _ONNX, "onnx_dynamo",
                  "torch.onnx.export(dynamo=True), run by onnxruntime on the CPU",
                  _ORT + ("onnxscript",), _ORT_INSTALL + " onnxscript"),
    ExecutionPath("onnx.node", "opset9", _ONNX, "opset9",
                  "the BatchNormalization node in opset 9: no training_mode, training is five outputs"),
    ExecutionPath("onnx.node", "opset14", _ONNX, "opset14", "the BatchNormalization node in opset 14"),
    ExecutionPath("onnx.node", "optimized", _ONNX, "optimized",
                  "onnxruntime with every graph optimization (ORT_ENABLE_ALL) instead of none"),
    ExecutionPath("tf.keras", "jax", _KERAS, "jax",
                  "the Keras 3 layer with KERAS_BACKEND=jax (jax_enable_x64 on); gradients by "
                  "layer.stateless_call and jax.vjp; no TensorFlow",
                  ("jax",), "pip install keras jax", framework="keras", backend="jax"),
    ExecutionPath("tf.keras", "torch", _KERAS, "torch",
                  "the Keras 3 layer with KERAS_BACKEND=torch (CPU); gradients by torch autograd; no TensorFlow",
                  ("torch",), "pip install keras torch==2.13.0", framework="keras", backend="torch"),
    ExecutionPath("tf.keras", "numpy", _KERAS, "numpy",
                  "the Keras 3 layer with KERAS_BACKEND=numpy: inference and training forward, no gradients "
                  "(the backend has no autodiff); no TensorFlow",
                  ("scipy", "jax"), "pip install keras scipy jax", framework="keras", backend="numpy"),
    ExecutionPath("paddle.builtin", "nhwc", _PADDLE, "nhwc",
                  "BatchNorm2D(data_format='NHWC') on channels-last input (4-D only; 2-D as eager)"),
]}


# What an exporter does to the layer beyond the numbers (reference/data/findings.md); each pinned,
# graph and versions, by tests/test_onnx_findings.py.
EXPORT_FINDINGS = [
    ("onnx-torchscript-training-export",
     "torch.onnx.export(dynamo=False, training=TrainingMode.TRAINING) (torch 2.13.0, opset 20) writes one "
     "BatchNormalization(epsilon=float32(eps), momentum=float32(1 − momentum), training_mode=1) with three "
     "outputs, of which only Y is a graph output: the running mean and variance are computed and dropped "
     "(symbolic_opset14.batch_norm returns only Y). Wired out, they are ONNX's: a biased running variance "
     "where torch's is unbiased (torch.builtin+onnx declares and measures `biased`). Tracing runs the "
     "module's forward in training mode: the module's running statistics and num_batches_tracked move one "
     "step on the example input, and the file's running-statistics initializers are those moved values "
     "(0.1·mean and 0.9 + 0.1·unbiased var from 0 and 1), not the state before the export."),
    ("onnx-dynamo-training-export",
     "torch.onnx.export(dynamo=True) (torch 2.13.0, onnxscript 0.7.2) ignores training= and writes a "
     "training-mode module as one BatchNormalization(epsilon, momentum) without training_mode, one output: "
     "an inference node (documented divergence onnx-dynamo-training-exports-inference)."),
    ("onnx-lenet-folding",
     "BN-LeNet in inference mode: the TorchScript exporter folds bn1 and bn2 into the convolutions itself "
     "(constant folding; without it onnxruntime's basic optimizations do), bn3 and bn4 stay nodes after "
     "Gemm; the dynamo exporter folds all four. Logits within 6.1e-7 … 7.8e-7 (normwise relative) of torch's "
     "inference forward, folded or not (lockstep tolerance 6.9e-5). A float64 export cannot run: "
     "onnxruntime's CPU provider has no double Conv."),
]


def requirements_met(name):
    p = PATHS[name]
    if p.backend:
        from equiv.backends import keras_backend
        if keras_backend() != p.backend:
            return False
    return all(importlib.util.find_spec(m) is not None for m in p.requires)


def wrap(name, base_cls):
    """The adapter class of path ``name`` around the (already loaded) base adapter class."""
    p = PATHS[name]
    cls = getattr(importlib.import_module(p.module), p.wrapper)(base_cls)
    cls.name, cls.base_name, cls.path = name, p.base, p.path
    if "supported_options" not in vars(cls):   # a path takes the layer options it declares, none by inheritance
        cls.supported_options = {}
    cls.__name__ = cls.__qualname__ = f"{base_cls.__name__}_{p.path}"
    return cls
