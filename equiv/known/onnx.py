"""ONNX's documented findings: the BatchNormalization node (onnx.node and its paths) and torch.builtin's
ONNX exports, what they compute and what the exporters write."""
from equiv.known._regions import _eps_float32, _f32_gap, everywhere
from equiv.known.base import Divergence, ExportFinding
from equiv.strategies import Case

FINDINGS = [
    # --- onnx (onnx.node and its paths, torch.builtin's ONNX exports) --------------------
    Divergence(
        id="onnx-eps-float32",
        implementations=("onnx.node", "torch.builtin+onnx", "torch.builtin+onnx_dynamo"),
        properties=("train_forward", "infer_forward", "affine_invariance", "output_moments"),
        reason=("ONNX's BatchNormalization takes epsilon as a FLOAT attribute (onnx/defs/nn/defs.cc:1687, "
                "opset 15; old.cc:3410 and 3551, opsets 9 and 14) and onnxruntime keeps it as "
                "`float epsilon_` (onnxruntime/core/providers/cpu/nn/batch_norm.h:41, used at 167 and 171), "
                "so a float64 graph normalizes with var + float32(eps): eps 0.1 is 0.10000000149, and "
                "where eps is not negligible against the variance the float64 output is float32-accurate "
                "(the exporters write `epsilon_f`, symbolic_opset14.py:113, and onnxscript's torchlib "
                "likewise). Witness: float64, eps 0.1: inference output off by 1.78e-10, 9.0e4× the "
                "bound; training output off by 9.85e-10, 1.5e5×. float32 is exact here (the rounding is "
                "below its own)"),
        region=_eps_float32,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="infer_forward",
        advice="in float64 use an eps that float32 holds exactly (a power of two), or expect float32-accurate outputs"),
    Divergence(
        id="onnx-momentum-float32",
        implementations=("onnx.node", "torch.builtin+onnx"),
        properties=("running_stats", "state_after_calls"),
        reason=("ONNX's momentum is a FLOAT attribute (onnx/defs/nn/defs.cc:1692, default 0.9f) and "
                "onnxruntime keeps it as `float momentum_` (batch_norm.h:55), updating "
                "input·momentum + batch·(1. − momentum) (batch_norm.h:154-155): the new batch weighs "
                "1 − float32(1 − w), 0.10000000149 for w = 0.1 (the TorchScript exporter writes "
                "momentum_f = 1 − momentum, symbolic_opset14.py:114); float64 running statistics are "
                "float32-accurate, as mxnet.gluon's (witness: float64, w 0.1, running mean off by "
                "3.29e-8, 9.4e6× the bound)"),
        region=lambda c, p: c.dtype == "float64" and _f32_gap(1.0 - c.new_batch_weight) > 0,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.1),
        witness_property="running_stats",
        advice="expect ONNX running statistics accurate to float32 only, even in a float64 graph"),
    Divergence(
        id="onnx-dynamo-training-exports-inference",
        implementations=("torch.builtin+onnx_dynamo",),
        properties=("train_forward", "batch_stats", "running_stats", "affine_invariance", "output_moments"),
        reason=("torch.onnx.export(dynamo=True) (torch 2.13.0, onnxscript 0.7.2) ignores training= (the "
                "dynamo branch of torch/onnx/__init__.py does not pass it on) and translates a "
                "training-mode BatchNorm (aten._native_batch_norm_legit_functional, training=True) into "
                "an inference node: onnxscript's torchlib sets `training = False` (onnxscript/"
                "function_libs/torch_lib/ops/core.py:7337, a \"temporary fix\" because onnxruntime "
                "supported training mode only below opset 14) and drops the running-statistics "
                "updates. The exported graph is one BatchNormalization without training_mode "
                "(epsilon 1e-5, momentum 0.9): the output is normalized with the running statistics, "
                "which never change (witness: output off by 14.2, 1.2e7× the bound). No warning but "
                "torch's generic \"Exporting a model while it is in training mode\""),
        region=everywhere,
        witness=Case(dtype="float32", shape=(4, 2), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="export BatchNorm for training with the TorchScript exporter (dynamo=False), or train in torch"),
    # --- exporters: what they write beyond the numbers ------------------------------------
    ExportFinding(
        id="onnx-torchscript-training-export", implementations=("torch.builtin+onnx",),
        reason=("torch.onnx.export(dynamo=False, training=TrainingMode.TRAINING) (torch 2.13.0, opset 20) writes one "
                "BatchNormalization(epsilon=float32(eps), momentum=float32(1 − momentum), training_mode=1) with three "
                "outputs, of which only Y is a graph output: the running mean and variance are computed and dropped "
                "(symbolic_opset14.batch_norm returns only Y). Wired out, they are ONNX's: a biased running variance "
                "where torch's is unbiased (torch.builtin+onnx declares and measures `biased`). Tracing runs the "
                "module's forward in training mode: the module's running statistics and num_batches_tracked move one "
                "step on the example input, and the file's running-statistics initializers are those moved values "
                "(0.1·mean and 0.9 + 0.1·unbiased var from 0 and 1), not the state before the export.")),
    ExportFinding(
        id="onnx-dynamo-training-export", implementations=("torch.builtin+onnx_dynamo",),
        reason=("torch.onnx.export(dynamo=True) (torch 2.13.0, onnxscript 0.7.2) ignores training= and writes a "
                "training-mode module as one BatchNormalization(epsilon, momentum) without training_mode, one output: "
                "an inference node (documented divergence onnx-dynamo-training-exports-inference).")),
    ExportFinding(
        id="onnx-lenet-folding", implementations=("torch.builtin+onnx", "torch.builtin+onnx_dynamo"),
        reason=("BN-LeNet in inference mode: the TorchScript exporter folds bn1 and bn2 into the convolutions itself "
                "(constant folding; without it onnxruntime's basic optimizations do), bn3 and bn4 stay nodes after "
                "Gemm; the dynamo exporter folds all four. Logits within 6.1e-7 … 7.8e-7 (normwise relative) "
                "of torch's "
                "inference forward, folded or not (lockstep tolerance 6.9e-5). A float64 export cannot run: "
                "onnxruntime's CPU provider has no double Conv.")),
]
