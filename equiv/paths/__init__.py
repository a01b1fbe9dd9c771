"""Execution paths: a registered adapter run along another path a user runs BatchNorm through
(compiled, exported, another memory layout or precision, another backend).

A path is data (``ExecutionPath``: which adapter, what is different, what it needs) plus a small
wrapper in a module of this package: a function that takes the base adapter class and returns a
subclass that builds or calls the layer the other way. It never copies the adapter. Its name says
adapter and path, ``torch.builtin+channels_last``; ``equiv.registry.load`` accepts it like any
registered name (and wraps the base class), and every property, probe and golden vector runs on it.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutionPath:
    base: str            # the registered adapter it wraps: "torch.builtin"
    path: str            # "channels_last"
    module: str          # where the wrapper lives: "equiv.paths.torch_paths"
    wrapper: str         # function (base adapter class) -> adapter class
    what: str            # one line: what is different along this path
    requires: tuple = ()  # importable modules beyond the base's framework
    extra: str = ""      # the extra of pyproject.toml that installs them ("onnx")
    framework: str = ""  # import name of the framework the path runs on instead of the base's (then
    #                      only this, ``requires`` and ``extra`` are needed: no TensorFlow for Keras on jax)
    backend: str = ""    # the Keras backend (KERAS_BACKEND, fixed per process) the path needs
    inherits: bool = True  # the base's documented regions hold on the path (False: the path builds the layer
    #                        with another kernel, whose findings it lists itself: tf_keras+fused, +unfused)

    @property
    def name(self):
        return f"{self.base}+{self.path}"


_TORCH = "equiv.paths.torch_paths"
_ONNX = "equiv.paths.onnx_paths"
_TF = "equiv.paths.tf_paths"
_KERAS = "equiv.paths.keras_paths"
_PADDLE = "equiv.paths.paddle_paths"
_TFK = "equiv.paths.tf_keras_paths"
_ORT = ("onnx", "onnxruntime")

PATHS = {p.name: p for p in [
    ExecutionPath("torch.builtin", "channels_last", _TORCH, "channels_last",
                  "BatchNorm2d module and input in torch.channels_last memory format (4-D only; other ranks as eager)"),
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
    ExecutionPath("torch.builtin", "functional", _TORCH, "functional",
                  "torch.nn.functional.batch_norm(x, running_mean, running_var, weight, bias, training, "
                  "momentum, eps) on the layer's own tensors, updated in place"),
    ExecutionPath("torch.builtin", "lazy", _TORCH, "lazy",
                  "LazyBatchNorm1d/2d/3d: num_features inferred on the first call, then the built-in layer"),
    ExecutionPath("tf.keras", "xla", _TF, "xla",
                  "the layer's call and its training step (GradientTape inside) under "
                  "tf.function(jit_compile=True), XLA on the CPU"),
    ExecutionPath("tf.scratch", "xla", _TF, "xla",
                  "the book's layer's call and its training step (GradientTape inside) under "
                  "tf.function(jit_compile=True), XLA on the CPU"),
    ExecutionPath("tf_keras", "fused", _TFK, "fused",
                  "Keras 2's layer with fused=True: FusedBatchNormV3 (float32, float16, bfloat16: float64 is "
                  "refused); 2-D input as (N, 1, 1, C), rank 2 being refused", inherits=False),
    ExecutionPath("tf_keras", "unfused", _TFK, "unfused",
                  "Keras 2's layer with fused=False: tf.nn.moments at every rank and dtype", inherits=False),
    ExecutionPath("torch.builtin", "onnx", _ONNX, "onnx_export",
                  "torch.onnx.export (TorchScript exporter, dynamo=False) per call, run by onnxruntime on the CPU",
                  _ORT, "onnx"),
    ExecutionPath("torch.builtin", "onnx_dynamo", _ONNX, "onnx_dynamo",
                  "torch.onnx.export(dynamo=True), run by onnxruntime on the CPU",
                  _ORT + ("onnxscript",), "onnx"),
    ExecutionPath("onnx.node", "opset9", _ONNX, "opset9",
                  "the BatchNormalization node in opset 9: no training_mode, training is five outputs"),
    ExecutionPath("onnx.node", "opset14", _ONNX, "opset14", "the BatchNormalization node in opset 14"),
    ExecutionPath("onnx.node", "optimized", _ONNX, "optimized",
                  "onnxruntime with every graph optimization (ORT_ENABLE_ALL) instead of none"),
    ExecutionPath("tf.keras", "jax", _KERAS, "jax",
                  "the Keras 3 layer with KERAS_BACKEND=jax (jax_enable_x64 on); gradients by "
                  "layer.stateless_call and jax.vjp; no TensorFlow",
                  ("jax",), "keras-jax", framework="keras", backend="jax"),
    ExecutionPath("tf.keras", "torch", _KERAS, "torch",
                  "the Keras 3 layer with KERAS_BACKEND=torch (CPU); gradients by torch autograd; no TensorFlow",
                  ("torch",), "keras-torch", framework="keras", backend="torch"),
    ExecutionPath("tf.keras", "numpy", _KERAS, "numpy",
                  "the Keras 3 layer with KERAS_BACKEND=numpy: inference and training forward, no gradients "
                  "(the backend has no autodiff); no TensorFlow",
                  ("scipy", "jax"), "keras-numpy", framework="keras", backend="numpy"),
    ExecutionPath("paddle.builtin", "nhwc", _PADDLE, "nhwc",
                  "BatchNorm2D(data_format='NHWC') on channels-last input (4-D only; 2-D as eager)"),
]}


