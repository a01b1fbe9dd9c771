"""Routes into OpenVINO (openvino 2026.4.1): a model converted by ``openvino.convert_model`` and compiled on
OpenVINO's CPU plugin, at its default inference precision or at ``INFERENCE_PRECISION_HINT: f32``, run
with ``compiled(inputs)``. Three sources, each on Conv → BatchNorm, Linear/Gemm → BatchNorm and the
BatchNorm alone (on the state's layer output z, rounded to the state's dtype):

- ``onnx.node``: the ONNX graph of equiv.routes.onnx_fold (opset 17), handed over as bytes;
- ``torch.builtin``: the eval-mode torch model of equiv.routes.torch_fold,
  ``convert_model(module, example_input=x)`` (the TorchScript decoder: torch.jit.trace);
- ``torch.builtin`` exported to ONNX first (``torch.onnx.export``, TorchScript exporter, eval mode, as
  the torch.builtin+onnx path), which folds a Conv's BatchNorm itself and leaves a Gemm's a node.

Where the fold happens (measured): in ``convert_model``. Its MOC transformations
(src/common/transformations/.../common_optimizations/moc_transformations.cpp) run BatchNormDecomposition,
which rewrites BatchNormInference as (x + (−mean))·(gamma / sqrt(var + eps)) + beta with eps a
constant of the input's element type (op_conversions/batch_norm_decomposition.cpp:66-73, read at
openvinotoolkit/openvino@094c82e), then LinOpSequenceFusion, ConvolutionMultiplyFusion and
MatMulMultiplyFusion and constant folding, all in the model's element type: the converted model of a
Conv → BatchNorm is Convolution and Add, of a Linear → BatchNorm MatMul and Add, of a BatchNorm alone
Multiply and Add; no BatchNormInference is left. Whatever the source, a MatMul keeps its Multiply
(MatMul → Multiply → Add, the bias, −mean and beta merged into one Add): the CPU plugin folds it into
the FullyConnected's weights when it compiles (runtime model: Input, two Const, FullyConnected,
Output). The plugin fuses the Convolution's Add into the convolution; a BatchNorm alone runs as one
Subgraph (a snippets kernel) in f32, also at a bf16 default.

The default inference precision depends on the CPU: the CPU plugin's Config::readProperties
(src/plugins/intel_cpu/src/config.cpp) sets f32 in the default PERFORMANCE execution mode, f16 on
ARM CPUs with native float16, and bf16 where ``mayiuse(avx512_core_bf16)`` (AVX512-BF16 or AMX
CPUs; the docs' "CPU Device" page: half precision "is automatically used instead of f32" where the
platform supports it natively). So a route's bound is taken at the coarser of the state's dtype and the
precision the compiled model reports (``Made.precision``), never at this machine's. Measured on an AMD
EPYC with avx512_bf16: the default is bf16 (Convolution brgconv_avx512_bf16, FullyConnected
brgemm_avx512_bf16; finding openvino-default-precision-half), a float16 model runs in bf16 too.

The vector ISA restricted (2026.4.1 on that CPU): OpenVINO's own knob ``OV_CPU_MAX_ISA`` (it asks for
``ONEDNN_MAX_CPU_ISA`` at the same value) at AVX2 or AVX512_CORE drops BF16 from the plugin's
OPTIMIZATION_CAPABILITIES and the default precision becomes f32, with the f32 routes' outputs
(scripts/isa_restricted.py reruns tests/test_routes_openvino.py so). ``ONEDNN_MAX_CPU_ISA`` alone leaves
the default at bf16: at AVX512_CORE the outputs are bit-identical (60 of 60: three layers, five kinds,
float32 and float16, both precisions); at AVX2, AVX or SSE41 compiling a Convolution or a MatMul at the
default precision fails ("object is not initialized", src/inference/src/dev/plugin.cpp:54). At f32 the
outputs under AVX2 are bit-identical, under SSE41 the Convolution and the BatchNorm kernels differ in
the last bits (within bound: 0.05× the folded bound, 0.17× the BatchNorm's), the FullyConnected (MLAS)
not at all.
"""
import io
from dataclasses import dataclass

import numpy as np

from equiv.dtypes import UNIT_ROUNDOFF
from equiv.routes.states import model_input

PRECISION = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}   # ov element type -> dtype
BATCH_NORM_OPS = ("BatchNormInference", "Sqrt", "Divide", "Subtract")    # BatchNorm not folded to constants


@dataclass
class Made:
    model: object        # the ov.Model convert_model returns
    compiled: object     # the CompiledModel on the CPU plugin

    @property
    def precision(self):
        """The inference precision the compiled model reports, as a dtype name ("float32", "bfloat16")."""
        return PRECISION[self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()]

    def ops(self):
        """The op types of the converted model."""
        return tuple(op.get_type_name() for op in self.model.get_ordered_ops())

    def runtime_layers(self):
        """The CPU plugin's layers (layerType, runtimePrecision) after its own fusions."""
        info = [op.get_rt_info() for op in self.compiled.get_runtime_model().get_ordered_ops()]
        return tuple((i["layerType"].astype(str), i["runtimePrecision"].astype(str)) for i in info)

    def decomposed(self):
        """No BatchNorm op left in the converted model: its statistics are folded into constants."""
        return not any(op in BATCH_NORM_OPS for op in self.ops())

    def folded(self):
        """Decomposed, and its scale went into the layer's weights: by convert_model (no Multiply left:
        Convolution → Add), or by the CPU plugin (no Eltwise or Subgraph layer in the runtime model: a
        FullyConnected with new weights; read on float32 models, whose runtime model converts nothing)."""
        runtime = {layer for layer, _ in self.runtime_layers()}
        return self.decomposed() and ("Multiply" not in self.ops() or not runtime & {"Eltwise", "Subgraph"})

    def __call__(self, x):
        return np.asarray(self.compiled(x)[0], dtype=np.float64)

    def outputs(self, x):
        """Every output of the compiled model, float64 (a training node's: y, running mean, running variance)."""
        res = self.compiled(x)
        return [np.asarray(res[o], dtype=np.float64) for o in self.compiled.outputs]


def compile_model(model, hint=None):
    """Compile an ov.Model on the CPU plugin (``hint``: an INFERENCE_PRECISION_HINT, default none)."""
    import openvino as ov
    config = {} if hint is None else {"INFERENCE_PRECISION_HINT": hint}
    return Made(model, ov.Core().compile_model(model, "CPU", config))


def bound_dtype(state_dtype, precision):
    """The dtype whose rounding bounds a run: the coarser of the model's and the inference precision."""
    return max((state_dtype, precision), key=UNIT_ROUNDOFF.__getitem__)


# --- sources: the layer's model of a FoldState, "bn" for the BatchNorm alone -------------------------


def onnx_model(state, layer, training=False):
    """The ONNX graph of equiv.routes.onnx_fold; for "bn" its BatchNormalization node alone, on z;
    ``training``: the node with training_mode=1."""
    from onnx import helper

    from equiv.routes import onnx_fold as of
    model = of.build(state, training)
    if layer == "bn":
        g = model.graph
        g.node.remove(g.node[0])
        g.node[0].input[0] = "x"
        for init in [i for i in g.initializer if i.name in ("W", "B")]:
            g.initializer.remove(init)
        g.input[0].CopyFrom(helper.make_tensor_value_info("x", of.ELEM[state.dtype], list(state.oracle().shape)))
    return model


def torch_model(state, layer):
    """The eval-mode torch model of equiv.routes.torch_fold; for "bn" its BatchNorm module alone."""
    from equiv.routes import torch_fold as tf
    model = tf.build(state)
    return model[1] if layer == "bn" else model


def run_onnx(model, state, layer):
    """The source graph in onnxruntime (no graph optimization): the unconverted reference."""
    from equiv.routes import onnx_fold as of
    sess = of.load(model).runner
    return np.asarray(sess.run(None, {"x": model_input(state, layer)})[0], dtype=np.float64)


# --- the routes ----------------------------------------------------------------------------------------


def _from_onnx(model, hint=None):
    import openvino as ov
    return compile_model(ov.convert_model(io.BytesIO(model.SerializeToString())), hint)


def _from_torch(model, x, hint=None):
    import openvino as ov
    import torch
    return compile_model(ov.convert_model(model, example_input=torch.from_numpy(x)), hint)


def _from_torch_onnx(model, x, hint=None, as_given=False):
    """``as_given``: the model exported in the mode it is in, the exporter's default training argument."""
    import torch

    from equiv.paths.onnx_paths import export
    return _from_onnx(export(model, torch.from_numpy(x), "default" if as_given else "infer", dynamo=False), hint)


def onnx_default(model):
    return _from_onnx(model)


def onnx_f32(model):
    return _from_onnx(model, "f32")


def torch_default(model, x):
    return _from_torch(model, x)


def torch_f32(model, x):
    return _from_torch(model, x, "f32")


def torch_onnx_default(model, x):
    return _from_torch_onnx(model, x)


def torch_onnx_f32(model, x):
    return _from_torch_onnx(model, x, "f32")


def output(route, state, layer, training=False):
    """The route on the state's source (equiv.routes.probes): ({"": y}, folded); ``training``: the ONNX node
    with training_mode=1, the torch module in training mode (exported as it is, for the ONNX export)."""
    x = model_input(state, layer)
    hint = "f32" if route.function.endswith("f32") else None
    if route.function.startswith("onnx_"):
        made = _from_onnx(onnx_model(state, layer, training), hint)
    elif route.function.startswith("torch_onnx"):
        made = _from_torch_onnx(torch_model(state, layer).train(training), x, hint, as_given=training)
    else:
        made = _from_torch(torch_model(state, layer).train(training), x, hint)
    out = made.outputs(x)
    return {"": tuple(out) if len(out) == 3 else out[0]}, made.folded()
