"""The edge runtimes' documented findings: torch.builtin's model lowered by ExecuTorch's XNNPACK
delegate, and converted by litert-torch (equiv.routes.edge; tests/test_routes_edge.py). Apache TVM's
route keeps BatchNorm and stays within the unfolded bound: no finding."""
import numpy as np

from equiv.dtypes import MAX_VALUE
from equiv.known._regions import fold_intermediates_overflow
from equiv.known.base import RouteDivergence
from equiv.routes.states import FoldState

_ET = ("torch.builtin+executorch_xnnpack",)
_LITERT = ("torch.builtin+litert_torch",)


def _decomposed_bn_overflows(state):
    """float16, and the depthwise weight s = gamma/sqrt(var + eps) or bias beta − mean·s of a BatchNorm
    alone beyond float16's range (less half an ulp of margin)."""
    if state.dtype != "float16":
        return False
    s = np.abs(state.gamma) / np.sqrt(state.running_var + state.eps)
    top = max(float(s.max()), float(np.abs(state.beta - state.running_mean * s).max()))
    return top >= MAX_VALUE["float16"] * (1 - 2.0 ** -12)


_ET_ADVICE = ("lower a float32 model (XNNPACK computes float16 only where the model is float16), or keep "
              "|gamma|/sqrt(var + eps) below 6e4 (drop or re-initialize the dead channel) before casting to float16")

FINDINGS = [
    RouteDivergence(
        id="executorch-fold-fp16-scale-overflow",
        implementations=_ET,
        layers=("conv", "linear"),
        reason=("ExecuTorch 1.5.1's XNNPACK partitioner takes a BatchNorm after a Conv2d or Linear only to fuse "
                "it (executorch/backends/xnnpack/partition/config/node_configs.py:26-40), and its "
                "FuseBatchNormPass folds with torch's own fuse_conv_bn_weights and fuse_linear_bn_weights "
                "(executorch/backends/xnnpack/_passes/fuse_batch_norm.py:25, :224 and :227) in the model's "
                "precision: in float16 the scale of a dead channel with a large gamma overflows, as in "
                "torch-fold-conv-fp16-scale-overflow. Witness: float16 Conv2d(3, 4, 3) → BatchNorm2d, channel 0 "
                "dead (running variance 0) with gamma 896 (s = 2.83e5): its outputs are −inf in the .pte's "
                "XNNPACK delegate, where the oracle gives −466 … 417 and eager torch stays within 0.020× its "
                "bound; the Linear(8, 4) witness of torch-fold-linear-fp16-scale-overflow (gamma −778, s = "
                "2.46e5) gives −inf on channel 1 (oracle −97.6 … 95.8; eager 0.015×). float32 is within bound "
                "(largest ratio 0.066)."),
        region=fold_intermediates_overflow,
        witness=FoldState(layer="conv", kind="dead_large_gamma", dtype="float16", seed=0, bias=True),
        advice=_ET_ADVICE),
    RouteDivergence(
        id="executorch-bn-fp16-scale-overflow",
        implementations=_ET,
        layers=("bn",),
        reason=("ExecuTorch 1.5.1's XNNPACK partitioner turns a BatchNorm alone into a 1×1 depthwise convolution "
                "(DecomposeBatchNorm, executorch/backends/xnnpack/_passes/decompose_batch_norm.py:28-31): it "
                "computes the weight gamma/sqrt(var + eps) and the bias beta − mean·gamma/sqrt(var + eps) in "
                "float64 and casts them to the model's dtype (:141-150; eps itself goes through "
                "torch.Tensor([eps]), float32, at :146). In float16 the weight of a dead channel with a large "
                "gamma is beyond 65504 and casts to inf. Witness: BatchNorm2d alone on a float16 Conv2d(3, 4, 3) "
                "output, channel 0 dead (running variance 0) with gamma 896 (s = 2.83e5): its outputs are −inf, "
                "where the oracle gives −467 … 417 and eager torch (float16 in, float32 inside) stays within "
                "0.073× its bound. float32 is within bound (largest ratio 0.26)."),
        region=_decomposed_bn_overflows,
        witness=FoldState(layer="conv", kind="dead_large_gamma", dtype="float16", seed=0, bias=True),
        advice=_ET_ADVICE),
    RouteDivergence(
        id="litert-torch-fold-bias-cancels",
        implementations=_LITERT,
        layers=("linear",),
        reason=("litert-torch 0.10.0 lowers the BatchNorm to stablehlo.batch_norm_inference "
                "(litert_torch/backend/lowerings/_batch_norm.py:36-57), and the LiteRT converter (litert-converter "
                "0.5.0) folds it into the FULLY_CONNECTED before it (measured: the flatbuffer holds "
                "FULLY_CONNECTED alone), adding the layer's bias b into beta − mean·s as TFLite does "
                "(tflite-fold-bias-cancels): b·s + (beta − mean·s), two large terms that cancel on a dead channel "
                "(b ≈ mean), not (b − mean)·s + beta. Outside the folded bound, inside the unfolded one. Witness: "
                "float32 Linear(8, 4) with bias → BatchNorm1d, channels 0 and 1 dead (running variance 0 and "
                "1e-8, eps 1e-5): outputs off by 2.09e-6, 2.13× the folded bound; 0.044× the unfolded bound, "
                "0.055× the sum of bounds against eager torch. A Conv2d with bias folds within bound (largest "
                "ratio 0.054 on dead channels), float32 being the only dtype the route converts."),
        region=lambda s: s.dtype == "float32" and s.bias and s.kind.startswith("dead"),
        witness=FoldState(layer="linear", kind="dead", dtype="float32", seed=1, bias=True),
        advice="none needed for inference accuracy at the unfolded layers' level; fold yourself as "
               "(b − mean)·s + beta before converting where a folded model is held to a tighter bound"),
]
