"""OpenVINO's documented findings: the routes of equiv.routes.openvino_route (openvino.convert_model from an ONNX
graph, a torch model or torch.builtin's ONNX export, compiled on the CPU plugin at its default inference
precision and at f32)."""
import numpy as np

from equiv.dtypes import MAX_VALUE
from equiv.known._regions import fold_intermediates_overflow
from equiv.known.base import ExportFinding, RouteDivergence
from equiv.routes.states import FoldState

_ROUTES_FP16 = ("onnx.node+openvino", "onnx.node+openvino_f32", "torch.builtin+openvino", "torch.builtin+openvino_f32")
_DEFAULT = ("onnx.node+openvino", "torch.builtin+openvino", "torch.builtin+onnx_openvino")
_SOURCES = ("openvino 2026.4.1: the decomposition is src/common/transformations/src/transformations/op_conversions/"
            "batch_norm_decomposition.cpp:66-73 (read at openvinotoolkit/openvino@094c82e, a 2025 revision: no "
            "stored copy is of the 2026.4 tag), run with LinOpSequenceFusion, ConvolutionMultiplyFusion and "
            "MatMulMultiplyFusion and ConstantFolding by MOCTransformations "
            "(common_optimizations/moc_transformations.cpp, read at @00e7d9a)")


def _fp16_constants_overflow(state):
    """float16, and a constant the fold computes beyond float16's range: those of a folded layer
    (fold_intermediates_overflow), or mean·s of a BatchNorm alone (converted to z·s + (beta − mean·s))."""
    if state.dtype != "float16":
        return False
    s = np.abs(state.gamma) / np.sqrt(state.running_var + state.eps)
    top = float((np.abs(state.running_mean) * s).max())
    return fold_intermediates_overflow(state) or top >= MAX_VALUE["float16"] * (1 - 2.0 ** -12)


FINDINGS = [
    RouteDivergence(
        id="openvino-fold-fp16-scale-overflow",
        implementations=_ROUTES_FP16,
        layers=("conv", "linear", "bn"),
        reason=("openvino.convert_model folds BatchNorm in the model's own element type, before the model is "
                "compiled: BatchNormDecomposition rewrites BatchNormInference as "
                "(x + (−mean))·(gamma / sqrt(var + eps)) + beta with eps a constant of the input's type, and the "
                "fusions after it fold the scale into the "
                "Convolution's or MatMul's weights, all constant-folded in float16 for a float16 model (" + _SOURCES +
                "). A dead channel (running variance 0, eps 1e-5: 1/sqrt = 316) with |gamma| ≥ 207 has s ≥ 65504: "
                "the converted model's float16 weight constant of channel 0 is ±inf (27 of 27) and its bias −inf, "
                "so channel 0 of the output is NaN (32 of 32 values) where the oracle gives −466 … 417, at f32 and at "
                "the default precision alike (the CPU plugin only widens the constants it is given), from the ONNX "
                "graph and from the torch model alike; the same graph in onnxruntime stays within 0.010× its bound "
                "and eager torch within 0.020×; the other channels within 0.014× the folded bound (f32). A float16 "
                "BatchNorm alone overflows too (its Multiply constant s): channel 0 NaN where the oracle gives "
                "−467 … 417. float32 folds within bound. Witness: float16 Conv(3 → 4, 3×3) → BatchNormalization, "
                "channel 0 dead with gamma 896 (s = 2.83e5)"),
        region=_fp16_constants_overflow,
        witness=FoldState(layer="conv", kind="dead_large_gamma", dtype="float16", seed=0, bias=True),
        advice=("convert a float16 model from float32 and compress afterwards (ov.save_model compresses the "
                "folded weights to float16), or keep BatchNorm on channels whose |gamma|/sqrt(var + eps) exceeds "
                "6e4 in float32")),
    RouteDivergence(
        id="openvino-default-precision-half",
        implementations=_DEFAULT,
        layers=("conv", "linear"),
        reason=("compiled without an INFERENCE_PRECISION_HINT, the CPU plugin computes a float32 model in a half "
                "precision where the CPU has one: Config::readProperties (src/plugins/intel_cpu/src/config.cpp, read "
                "at openvinotoolkit/openvino@0037423e) starts from f32 in the default PERFORMANCE execution mode, "
                "takes f16 on ARM CPUs with native float16 and bf16 where mayiuse(avx512_core_bf16) (AVX512-BF16 or "
                "AMX; the docs' CPU Device page says half precision \"is automatically used instead of f32\"). "
                "Measured on an AMD EPYC with avx512_bf16 (openvino 2026.4.1, INFERENCE_PRECISION_HINT reports "
                "bfloat16): the Convolution runs brgconv_avx512_bf16, the FullyConnected brgemm_avx512_bf16, and "
                "the float32 Conv → BatchNorm is off by 0.0119, 771× the float32 folded bound (0.012× the bfloat16 "
                "one), the Linear → BatchNorm by 0.0050, 554× (0.0085×); over four states of every kind, up to "
                "1.5e3× (Conv, dead_large_gamma) and 1.3e3× (Linear), at most 0.023× the bfloat16 bound, where the "
                "source in onnxruntime or eager torch stays within 0.07× the unfolded bound; a BatchNorm alone "
                "stays float32-accurate (0.19× its "
                "bound: it runs as a Subgraph kernel in f32). A float16 model runs in bfloat16 too, within the "
                "float16 bound (up to 0.34×, against 0.031× at f32). With INFERENCE_PRECISION_HINT f32 every layer is "
                "within the float32 bound. On a CPU whose default is f32 this does not show (the witness skips). "
                "Witness: float32 Conv(3 → 4, 3×3) → BatchNorm, ordinary"),
        region=lambda state: state.dtype == "float32",
        witness=FoldState(layer="conv", kind="ordinary", dtype="float32", seed=0, bias=True),
        advice=("compile with {'INFERENCE_PRECISION_HINT': 'f32'} (or EXECUTION_MODE_HINT ACCURACY) where float32 "
                "accuracy matters, and read the compiled model's INFERENCE_PRECISION_HINT: the default depends on "
                "the CPU the model is compiled on")),
    ExportFinding(
        id="openvino-convert-model-sets-eval", implementations=("torch.builtin+openvino", "torch.builtin+openvino_f32"),
        reason=("openvino.convert_model(module, example_input=x) (openvino 2026.4.1) calls pt_module.eval() on the "
                "module it is given (openvino/frontend/pytorch/ts_decoder.py:129, TorchScriptPythonDecoder."
                "_get_scripted_model) before tracing it: a training-mode BatchNorm converts to inference (the output "
                "is normalized with the running statistics, within the BatchNorm bound of the inference oracle and "
                "off by ~1 from the batch-statistics output), no running-statistics update is converted, and the "
                "caller's module is left in eval mode, without a warning (tests/test_routes_openvino.py). The eps "
                "survives (a dead channel with eps 1e-5 within the folded bound); momentum has no meaning in the "
                "converted model.")),
]
