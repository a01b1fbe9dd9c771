"""ONNX's documented findings: the BatchNormalization node (onnx.node and its paths) and torch.builtin's
ONNX exports, what they compute and what the exporters write; the ONNX folding routes (equiv.routes:
onnxruntime's optimization levels, onnxslim, onnxsim) and converter routes (tf2onnx)."""
from equiv.known._regions import _eps_float32, _f32_gap, everywhere, fold_intermediates_overflow
from equiv.known.base import Divergence, ExportFinding, RouteDivergence
from equiv.routes.states import FoldState
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
        id="onnx-torchscript-export-default-eval",
        implementations=("torch.builtin+onnx_openvino", "torch.builtin+onnx_openvino_f32", "torch.builtin+onnx2tf",
                         "torch.builtin+onnx2torch"),
        reason=("torch.onnx.export(dynamo=False) without a training argument (torch 2.13.0) takes "
                "training=TrainingMode.EVAL (torch/onnx/__init__.py:96, passed on at :346), although its docstring "
                "calls the argument deprecated and says to \"set the training mode of the model before exporting\" "
                "(:260, :271); the TorchScript exporter then calls model.train(False) for the trace "
                "(torch/onnx/_internal/torchscript_exporter/utils.py:133), with no warning: a module given in "
                "training mode is written as an inference BatchNormalization (training_mode=0, the running "
                "statistics), and the routes that start from such a file (OpenVINO, onnx2tf, onnx2torch) normalize "
                "with the "
                "running statistics. Measured by equiv.routes.probes on the probe state, relative to the largest "
                "output: 7.7e-8 (OpenVINO, BatchNorm2d alone) and 1.5e-7 … 2.9e-7 (onnx2tf's tf_keras, SavedModel "
                "and TFLite, Conv2d → BatchNorm2d) from the inference output, 1.01 from the training one (the path "
                "torch.builtin+onnx declares the same default_mode, inference)."),
        advice="export with training=TrainingMode.TRAINING where the training forward is wanted (the file then "
               "holds a training node: onnx-torchscript-training-export), or call model.eval() yourself so the "
               "export says what it holds"),
    ExportFinding(
        id="tf2onnx-removed-warning-names-the-next-op",
        implementations=("tf.keras+tf2onnx", "tf.keras+tf2onnx+ort_all"),
        reason=("tf2onnx 1.17.0 drops a training-mode Keras BatchNormalization's moving-statistics updates "
                "(tf_loader.py fix_freezing_errors, :285-296) and says so in one warning per update, which names "
                "the wrong op: it pops node i and then logs graph_def.node[i].op (:289-290), the op of the node "
                "that moved into its place, beside the removed node's name. Measured on the training trace of a "
                "BatchNormalization alone: \"Removed Mul functional_1/batch_normalization_1/AssignVariableOp_1\" "
                "and \"Removed Mul .../AssignVariableOp\", where AssignVariableOp was removed; the one message "
                "that tells a user the momentum and the running statistics are gone reads as a Mul removed. "
                "Where the removed update is the graph's last node the same line would index past the end."),
        advice="read the converted graph's outputs (one: y) rather than the log to see that the running statistics "
               "were dropped; convert the inference call"),
    ExportFinding(
        id="onnx2torch-returns-training-mode",
        implementations=("onnx.node+onnx2torch", "torch.builtin+onnx2torch"),
        reason=("onnx2torch 1.5.15 returns the torch.fx.GraphModule it builds (onnx2torch/converter.py:173) in "
                "training mode, the default of a new torch module, although an ONNX inference BatchNormalization "
                "(training_mode 0) normalizes with its running statistics: the converter makes it a trainable "
                "torch BatchNorm (node_converters/batch_norm.py:77), so a plain call of the converted model "
                "normalizes with the batch's statistics and moves the running ones. Measured on the probe state: "
                "the plain call 1.0 … 1.02 (relative) from the inference output and 8.5e-8 … 1.6e-7 from the "
                "training one; the running mean moved by 0.20 and 0.28 in one call. No warning. After .eval() "
                "every layer is within the unfolded bound of the oracle, eps kept (the node's float32 epsilon)."),
        advice="call .eval() on what onnx2torch.convert returns before using it for inference"),
    ExportFinding(
        id="onnx2torch-unbiased-running-variance", implementations=("onnx.node+onnx2torch",),
        reason=("The torch BatchNorm onnx2torch makes of an ONNX BatchNormalization (node_converters/batch_norm.py:"
                "77) trains as torch does: new-batch weight 1 − the node's momentum (:58, 0.1 for the default 0.9: "
                "ONNX's, translated), and the unbiased batch variance in the running variance, where the ONNX "
                "operator's training mode (the same node with training_mode=1, run by onnxruntime) updates it with "
                "the biased one. Measured one training step on the probe state (m = 32 values per channel: 32/31 "
                "apart); a training node itself does not convert (NotImplementedError, :94)."),
        advice="fine-tuning a converted model continues with torch's estimator; where the ONNX model's own training "
               "semantics matter, rescale the running variance by (m − 1)/m per step or train in the source"),
    ExportFinding(
        id="onnx-lenet-folding", implementations=("torch.builtin+onnx", "torch.builtin+onnx_dynamo"),
        reason=("BN-LeNet in inference mode: the TorchScript exporter folds bn1 and bn2 into the convolutions itself "
                "(constant folding; without it onnxruntime's basic optimizations do), bn3 and bn4 stay nodes after "
                "Gemm; the dynamo exporter folds all four. Logits within 6.1e-7 … 7.8e-7 (normwise relative) "
                "of torch's "
                "inference forward, folded or not (lockstep tolerance 6.9e-5). A float64 export cannot run: "
                "onnxruntime's CPU provider has no double Conv.")),
]

# --- folding routes (equiv.routes.onnx_fold) ---------------------------------------------
_ORT_LEVELS = ("onnx.node+ort_basic", "onnx.node+ort_extended", "onnx.node+ort_all")
_FP16_WITNESS = FoldState(layer="conv", kind="dead_large_gamma", dtype="float16", seed=0, bias=True)
_WHY = ("the fold computes its per-channel scale in the model's precision: in a float16 graph, "
        "gamma / sqrt(var + eps) of a dead channel (running variance 0, eps 1e-5: 1/sqrt = 316) overflows at "
        "|gamma| ≥ 207, and W·s at |W|·|s| ≥ 65504, although the unfolded graph, whose output "
        "(z − mean)·s + beta is small, stays finite (as torch's folders: torch-fold-conv-fp16-scale-overflow). "
        "onnxoptimizer 0.4.2's fuse_bn_into_conv does not overflow here: it leaves the fold to the runtime as a "
        "constant subgraph, which onnxruntime's CPU provider computes in float32 behind the Casts it inserts "
        "(0.0070× the folded bound on the witness). float32 is within bound. Witness: float16 Conv(3 → 4, 3×3) → "
        "BatchNormalization, channel 0 dead (running variance 0) with gamma 896 (s = 2.83e5): ")
_ADVICE = ("fold a float16 model in float32 and cast the folded initializers to float16 afterwards (or run "
           "onnxoptimizer's fuse_bn_into_conv, which leaves the arithmetic to the runtime), or keep BatchNormalization "
           "unfolded on channels whose |gamma|/sqrt(var + eps) exceeds 6e4")

ROUTES = [
    RouteDivergence(
        id="onnxruntime-fold-conv-fp16-scale-overflow",
        implementations=_ORT_LEVELS,
        layers=("conv",),
        reason=("onnxruntime 1.32.0's ConvBNFusion, which ORT_ENABLE_BASIC, ORT_ENABLE_EXTENDED and ORT_ENABLE_ALL "
                "run while the InferenceSession is built: " + _WHY + "the fused Conv's weights of channel 0 are ±inf "
                "and its bias −inf (the float16 initializers ConvBnFusion_W_W and ConvBnFusion_BN_B_beta of the model "
                "saved to "
                "optimized_model_filepath; ORT_ENABLE_ALL reorders them to NCHWc float32, still ±inf), so channel 0 "
                "of the output is NaN, where the oracle gives −466 … 417 and the same graph under ORT_DISABLE_ALL "
                "stays within 0.010× its bound (the fused graph's other channels: 0.014× the folded bound). The "
                "fold is Initializer arithmetic in "
                "the initializers' own type: onnxruntime/core/optimizer/conv_bn_fusion.cc:86-89, bn_var.add(epsilon), "
                "sqrt, bn_scale.div(bn_var), conv_W.scale_by_axis(bn_scale, 1), and the bias at :92-94, on any "
                "floating-point initializers (:44-48; read at microsoft/onnxruntime@562bf69, whose initializer names "
                "are those 1.32.0 writes). A Gemm → BatchNormalization is not fused at any level "
                "(SatisfyCondition matches Conv only)"),
        region=fold_intermediates_overflow,
        witness=_FP16_WITNESS,
        advice=_ADVICE + "; or build the InferenceSession of a float16 model with ORT_DISABLE_ALL"),
    RouteDivergence(
        id="onnxslim-fold-conv-fp16-scale-overflow",
        implementations=("onnx.node+onnxslim",),
        layers=("conv",),
        reason=("onnxslim 0.1.98's Conv-BatchNormalization fusion (onnxslim.slim): " + _WHY + "the folded weights "
                "y_weight of channel 0 are ±inf and y_bias −inf, channel 0 of the output NaN where the oracle gives "
                "−466 … 417 and the unfolded graph stays within 0.010× its bound. The fold is NumPy on the float16 "
                "initializers: onnxslim/core/pattern/fusion/convbn.py:53, bn_var_rsqrt = bn_scale / "
                "np.sqrt(bn_running_var + bn_eps), conv_w at :64, conv_b = (bias − mean)·bn_var_rsqrt + bn_bias at "
                ":65"),
        region=fold_intermediates_overflow,
        witness=_FP16_WITNESS,
        advice=_ADVICE),
    RouteDivergence(
        id="onnxsim-fold-conv-fp16-scale-overflow",
        implementations=("onnx.node+onnxsim",),
        layers=("conv",),
        reason=("onnxsim 0.8.1 (onnxsim.simplify): " + _WHY + "onnxsim has its own copy of "
                "fuse_bn_into_conv (onnxsim/passes/fuse_bn_into_conv.h, from onnx-optimizer 0.4.2), which folds "
                "float and double numerically (ModifyConvNumeric, :113) but for float16 falls back (:259) to "
                "onnxoptimizer's constant subgraph (Cast(eps) :302, Add :307, Sqrt :312, Div :316, Mul by W :339), "
                "and then folds that subgraph's constants into float16 initializers: the "
                "Conv's weights of channel 0 are ±inf, channel 0 of the output NaN where the oracle gives −466 … 417 "
                "and the unfolded graph stays within 0.010× its bound; simplify's own check still returns True"),
        region=fold_intermediates_overflow,
        witness=_FP16_WITNESS,
        advice=_ADVICE),
    RouteDivergence(
        id="tf2onnx-ort-fold-bias-cancels",
        implementations=("tf.keras+tf2onnx+ort_all",),
        layers=("conv",),
        reason=("tf2onnx 1.17.0 converts Keras' BatchNormalization after a Conv2D with a bias to Mul by "
                "s = gamma·rsqrt(var + eps) and Add of beta − mean·s (grappler's constfold of "
                "tf.nn.batch_normalization, tensorflow/python/ops/nn_impl.py:1491-1497; its transpose optimizer folds "
                "the Mul only into a Conv without a bias, tf2onnx/optimizer/transpose_optimizer.py:581), and "
                "onnxruntime 1.32.0's default ORT_ENABLE_ALL folds both into the Conv: ConvMulFusion W·s and b·s "
                "(onnxruntime/core/optimizer/conv_mul_fusion.cc:64, :68), ConvAddFusion b·s + (beta − mean·s) "
                "(conv_add_fusion.cc:57; read at microsoft/onnxruntime@047055a): two large terms that cancel "
                "where b ≈ mean (a dead channel: its output is its bias), not (b − mean)·s + beta. float32 error "
                "u·s·(|b| + |mean|), outside the folded bound, inside the unfolded one (eager Keras and the graph "
                "under ORT_DISABLE_ALL make the same cancellation at run time, 0.062× the unfolded bound). Witness: "
                "float32 Conv2D(3, 4, 3, padding 1, bias) → BatchNormalization, channel 1 dead (running variance "
                "1e-8, eps 1e-5, s = 295, b = −0.170281, mean = −0.170470): outputs of channel 1 off by 3.43e-6, "
                "1.74× the folded bound (0.045× the unfolded one); 0.025× the sum of bounds against eager Keras. "
                "float16 (a float16 Keras model: the Conv runs in float32 between Casts once folded): within bound; "
                "the same cancellation as TFLite's (tflite-fold-bias-cancels, equiv/known/tf.py)"),
        region=lambda s: s.dtype == "float32" and s.bias and s.kind.startswith("dead"),
        witness=FoldState(layer="conv", kind="dead", dtype="float32", seed=32767, bias=True, padding=1),
        advice="none needed for inference accuracy at the unfolded layers' level; where a folded model is held "
               "to a tighter bound, build the Conv2D without a bias before BatchNormalization (tf2onnx then folds "
               "it as (W·s, beta − mean·s)), or fold yourself as (b − mean)·s + beta"),
]

FINDINGS += ROUTES
