"""TensorFlow's documented findings: tf.keras and the book's tf.scratch (and their paths),
MirroredStrategy (tf.mirrored.sync), the whole BN-LeNet (tf.keras, tf.scratch, tf.mirrored,
tf.mirrored.sync), the book's TensorFlow tab, the TFLite converter route (equiv.routes: tf.keras+tflite),
the onnx2tf routes (onnx.node+onnx2tf, torch.builtin+onnx2tf) and the docs of the fused batch-norm ops
(tf.fused_batch_norm, tf.raw.FusedBatchNormV3)."""
import numpy as np

from equiv.dtypes import round_to
from equiv.known._regions import _FORWARD, _min_var_plus_eps, _red, global_offset_ratio
from equiv.known.base import (
    BookNote,
    Divergence,
    DocFinding,
    ExportFinding,
    NetFinding,
    ParallelDivergence,
    RouteDivergence,
)
from equiv.routes.states import FoldState
from equiv.strategies import Case, ParallelCase, affine_draw

FINDINGS = [
    # --- tensorflow (tf.keras, tf.scratch) -------------------------------------------
    # tf.scratch ignores the case's eps: the book's layer uses 1e-5, so the regions do too.
    # k: affine_invariance adds a per-channel shift of up to ~5·max|x| to x.
    Divergence(
        id="tf-scratch-fp16-sum-overflow",
        implementations=("tf.scratch",),
        properties=_FORWARD + ("running_stats", "state_after_calls",),
        reason=("float16: the book's code takes the mean and variance with tf.reduce_mean in float16, "
                "and TensorFlow's CPU kernel accumulates the float16 sum in float16: it overflows when "
                "Σx or Σ(x − mean)² exceeds 65504 although every square and the mean are representable; "
                "the variance becomes inf, the output collapses to beta and the moving variance to inf "
                "(witness: 16 rows, max |x − mean| 123, Σ(x − mean)² 71078: max |error| 0.896, "
                "58.9× the bound, moving variance inf); tf.keras computes in float32 and is exact here"),
        region=lambda c, p: c.dtype == "float16" and any(
            (k * np.abs(x).sum(axis=red)).max() > 6e4
            or (c.count * (x.var(axis=red)
                           + ((2 + c.count ** 0.5) * 2.0 ** -11 * k * np.abs(x).max(axis=red)) ** 2)).max() > 6e4
            for red in [_red(c)] for k in [6 if p == "affine_invariance" else 1]
            for x in map(c.batch, range(c.steps))),
        witness=Case(dtype="float16", shape=(16, 1), seed=6, log10_scale=1.8, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1),
        witness_property="train_forward"),
    Divergence(
        id="tf-scratch-fp16-affine-overflow",
        implementations=("tf.scratch",),
        properties=("train_forward", "affine_invariance", "output_moments", "batch_permutation"),
        reason=("float16: the book's batch_norm computes y = x·inv + (beta − mean·inv) with "
                "inv = gamma/sqrt(var + 1e-5), not (x − mean)·inv: x·inv overflows when "
                "|x|·|gamma|/sqrt(var + eps) > 65504, and inf − inf gives NaN where the exact output is "
                "small (witness: x = 2136 twice, var 0, x·inv ≈ 2.3e5: output NaN, oracle beta = 0.069)"),
        region=lambda c, p: c.dtype == "float16" and any(
            (k * np.abs(x).max(axis=red) * np.abs(c.gamma) / np.sqrt(x.var(axis=red) + 1e-5)).max() > 6e4
            for red in [_red(c)] for k in [6 if p == "affine_invariance" else 1]
            for x in [c.x]),
        witness=Case(dtype="float16", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=3.0,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="train_forward"),
    Divergence(
        id="tf-scratch-fp16-grad-overflow",
        implementations=("tf.scratch",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16: TensorFlow's rsqrt gradient is −0.5·(g·r)·(r·r) with r = 1/sqrt(var + eps), "
                "and r·r overflows float16 when var + eps < 1.53e-5, i.e. for every channel of variance "
                "below 5.3e-6 at the book's eps 1e-5 (a zero-variance channel included): ∂L/∂var = inf "
                "for any nonzero g, and the book's x·inv − mean·inv leaves g nonzero rounding noise even "
                "where it is exactly 0; dx = inf·(x − mean) = NaN (witness: zero-variance channel, dx NaN "
                "where the oracle has ±670.6). Also ∂L/∂inv = Σ dy·x and Σ dy·inv overflow for large data"),
        region=lambda c, p: c.dtype == "float16" and any(
            v.min() < 1.6e-5 or max((g * sdx).max(), (g * np.abs(c.dy).sum(axis=red) / np.sqrt(v)).max(),
                                    (4 * g * (np.abs((c.dy * (c.x - c.x.mean(axis=red, keepdims=True))).sum(axis=red))
                                              + (2 + c.count ** 0.5) * 2.0 ** -11 * sdx) / v ** 1.5).max()) > 6e4
            for red in [_red(c)] for g in [np.abs(c.gamma)]
            for v in [c.x.var(axis=red) + 1e-5] for sdx in [np.abs(c.dy * c.x).sum(axis=red)]),
        witness=Case(dtype="float16", shape=(2, 1), seed=0, log10_scale=1.0, log10_offset=None,
                     constant_channel=True, eps=0.1, new_batch_weight=0.0),
        witness_property="gradients"),
    Divergence(
        id="tf-scratch-xla-fp16-rsqrt-grad-cube",
        implementations=("tf.scratch+xla",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16 under XLA: tf2xla lowers RsqrtGrad as r³·(g / −2), `xla::Mul((lhs * lhs) * lhs, "
                "xla::Div(rhs, IntegerLiteral(-2)))` (tensorflow/compiler/tf2xla/kernels/binary_ops.cc, "
                "XLA_MAKE_BINARY(RsqrtGrad, ...)), and XLA on the CPU evaluates it in float16: r³ overflows "
                "once r = 1/sqrt(var + 1e-5) > 65504^(1/3) = 40.3, i.e. for every channel with var + eps < "
                "6.2e-4 (std below 0.025), and ∂L/∂var = inf·g, so dx is ±inf or NaN. Eager TensorFlow's "
                "kernel computes −0.5·(g·r)·(r·r) and returns 0 for g = 0 (scalar_rsqrt_gradient_op, "
                "tensorflow/core/kernels/cwise_ops_gradients.h): finite until r·r overflows, at var + eps < "
                "1.53e-5 (tf-scratch-fp16-grad-overflow), 40× further down. Witness: float16, "
                "(2, 1), std 0.005 (var + eps 2.3e-5, r = 209, r³ = 9.1e6): dx = (inf, −inf) where eager "
                "gives (−8.875, 8.94) and the oracle (−8.89, 8.89); dgamma and dbeta are eager's, bit for "
                "bit. tf.keras+xla is unaffected (Keras computes float16 in float32)"),
        region=lambda c, p: c.dtype == "float16" and min(
            float(c.batch(i).var(axis=_red(c)).min()) for i in range(c.steps)) + 1e-5 < 7e-4,
        witness=Case(dtype="float16", shape=(2, 1), seed=1, log10_scale=-2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="gradients",
        advice="under XLA, train the book's float16 layer only on channels of std above 0.03, or in float32"),
    # --- data-parallel (tf.mirrored.sync) -------------------------------------------------
    ParallelDivergence(
        id="tf-sync-fast-variance-offset",
        implementations=("tf.mirrored.sync",),
        reason=("keras.layers.BatchNormalization(synchronized=True) all-reduces Σx, Σx² and the count and "
                "takes var = max(E[x²] − E[x]², 0) (keras/src/backend/tensorflow/nn.py:1515-1544, "
                "_compute_moments_sync; the comment '# var = E(x^2) - E(x)^2' at 1538), which loses "
                "~u·(|mean|/std)² of the variance; synchronized=False (tf.nn.moments, two-pass) does not. "
                "Measured on 2 replicas × 8 values, 2 channels, worst over 5 seeds per offset: relative "
                "error of the batch variance 8.8e-6, 1.2e-3, 0.27, 10.9 in float32 and 2.6e-14, 1.6e-12, "
                "8.3e-10, 3.3e-8 in float64 at |mean|/std ~ 10, 1e2, 1e3, 1e4 (tests/test_parallel_tf.py); "
                "error/bound of the training output 0.29, 4.9, 149, 7.1e4 (float32) and 0.49, 3.4, 122, 569 "
                "(float64), of the running variance 2.8, 375, 4.2e4, 2.9e4 and 4.5, 273, 7.2e4, 4.6e6; "
                "unsynchronized ≤ 0.19 everywhere. Witness: float32, |mean|/std ≈ 1e3, output off by 0.134, "
                "149× the bound. Region: |mean|/std > 1 of the global batch in some step (a constant channel "
                "off zero included: its variance comes out as a rounding error, or 0 by the clip)"),
        region=lambda pc: global_offset_ratio(pc) > 1.0,
        witness=ParallelCase(Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                                  constant_channel=False, eps=1e-5, new_batch_weight=1.0), (8, 8)),
        advice="centre data far from zero mean before a synchronized Keras BatchNorm, or expect its "
               "variance to carry ~u·(|mean|/std)²"),
    # --- whole BN-LeNet (equiv lockstep) --------------------------------------------------
    *(NetFinding(
        id="tf-float32-sequential-sum", implementations=(label,),
        dtypes=("float32",), data="fashion-mnist", where=(1, "param", "bn3.beta"),
        reason=("on the CPU, TensorFlow reduces over the leading axes keeping the channels (tf.nn.moments, "
                "reduce_mean, the gradient sums) by adding rows one after another in float32 (Eigen's "
                "InnerMostDimPreserver: one accumulator per channel below 8 channels, four above): on "
                "Fashion-MNIST bn1's batch mean over 73,728 values per channel is off by 7.5e-5 at step 1 "
                "(a sequential float32 sum in NumPy: 7.506e-5; pairwise: 1.2e-8), carried into bn3.beta "
                "(9.3e-5 builtin, 9.7e-5 scratch, against the tolerance 6.9e-5). With Keras' moments "
                "computed in float64 the 30-step float32 lockstep passes. Both Keras' layer and the book's "
                "use these reductions.")) for label in ("tf.keras", "tf.scratch")),
    NetFinding(
        id="tf-float32-sequential-sum", implementations=("tf.mirrored",),
        dtypes=("float32",), data="fashion-mnist", where=(1, "param", "bn1.beta"),
        reason=("under MirroredStrategy each replica's Keras BN sums its own 32 images with the float32 reductions "
                "of tf-float32-sequential-sum: on Fashion-MNIST bn1.beta is off by 7.6e-5 to 7.9e-5 at step 1 against "
                "the tolerance 6.9e-5 (1.11 to 1.15 times with oneDNN's AVX, AVX2 and AVX-512 kernels; its gradient "
                "sums 18,432 values a channel a replica, then the optimizer sums "
                "the replicas'); the float64 net agrees to 5% of its tolerance over 30 steps, the float32 net on "
                "synthetic batches stays within it.")),
    NetFinding(
        id="tf-mirrored-sync-fast-variance", implementations=("tf.mirrored.sync",),
        dtypes=("float32",), data="fashion-mnist", where=(1, "param", "bn1.beta"),
        reason=("Keras' synchronized BN under MirroredStrategy (tf-sync-fast-variance-offset in a whole net): "
                "at step 1 "
                "bn1.beta is off by 9.4e-5 to 1.05e-4 against 6.9e-5 (1.36 to 1.53 times, with oneDNN's AVX2, "
                "AVX-512 and AVX kernels), the float32 sums as tf.mirrored's (7.6e-5 to 7.9e-5); bn3.beta sits at "
                "the tolerance (0.978, 0.993, 1.001 times with AVX2, AVX, AVX-512), so on an AVX-512 CPU lockstep "
                "names it first; then the variance E[x²] − E[x]² of "
                "_compute_moments_sync (keras/src/backend/tensorflow/nn.py:1539) multiplies the float32 sums' "
                "errors of Σx² by E[x²]/var = 1 + (mean/std)², up to 5.4 for bn1's inputs (|mean|/std up to 2.1): "
                "bn1's output is off by 4.8e-5 at step 1 (per shard: 2.2e-5) and by 1.2e-3 at step 13, 5.4 times "
                "the step's tolerance, while tf.mirrored's bn1 stays within 5.9e-5 over 30 steps. With the moments "
                "computed as Σ(x − mean)² over the all-reduced mean (the same float32 sums), bn1 stays within "
                "8.2e-5 over 16 steps (0.37 of the tolerance at step 13) and only step 1's bn1.beta (8.0e-5) is "
                "left. The float64 net agrees to 26% of its tolerance over 30 steps."),
        edge=("param:bn3.beta",)),
    # --- the book's BN-LeNet code, beyond its BN layers -----------------------------------
    BookNote(
        id="book-tf-lr-0.5", implementations=("tf.keras", "tf.scratch"),
        reason=("the book trains its TensorFlow tab with lr 0.5, the others with 0.1; `equiv train --lr 0.5` "
                "(or 0.1) takes either, the band compares lr 0.1 runs and lists the lr 0.5 runs apart.")),
]


def _tflite_fp16_scale_clamped(state):
    """float16 weights, and a BatchNorm scale |gamma|/sqrt(var + eps) beyond float16's range."""
    return state.dtype == "float16" and float((abs(state.gamma) / np.sqrt(state.running_var + state.eps)).max()) > 65504


_LITE = ("tf.keras+tflite",)
ROUTES = [
    RouteDivergence(
        id="tflite-fold-bias-cancels",
        implementations=_LITE,
        layers=("conv", "linear"),
        reason=("TFLiteConverter (tensorflow 2.21.0) folds Keras' BatchNormalization as it is traced: "
                "tf.nn.batch_normalization computes inv = gamma·rsqrt(var + eps) and x·inv + (beta − mean·inv) "
                "(tensorflow/python/ops/nn_impl.py:1491-1497, from keras/src/backend/tensorflow/nn.py:1564), and the "
                "converter fuses the Mul into the layer's weights and the layer's bias b into the Add: "
                "b' = b·inv + (beta − mean·inv), two large terms that cancel where b ≈ mean (a dead channel: its "
                "output is its bias), not (b − mean)·inv + beta. float32 error u·s·(|b| + |mean|), outside the "
                "folded bound, inside the unfolded one (eager Keras makes the same cancellation at run time). "
                "Witness: float32 Dense(8, 4) → BatchNormalization, channel 0 dead (running variance 0, eps "
                "1e-5, s = 343, b = −0.128018, mean = −0.128095): its folded bias is −0.0495567 for −0.0495538, "
                "the outputs of channel 0 off by 2.95e-6, 3.82× the folded bound; 0.025× the sum of bounds "
                "against eager Keras. float16 weights (computed in float32): within bound."),
        region=lambda s: s.dtype == "float32" and s.bias and s.kind.startswith("dead"),
        witness=FoldState(layer="linear", kind="dead", dtype="float32", seed=3586103837, bias=True),
        advice="none needed for inference accuracy at the unfolded layers' level; fold yourself as "
               "(b − mean)·s + beta where a folded model is held to a tighter bound"),
    RouteDivergence(
        id="tflite-fp16-bn-scale-clamped",
        implementations=_LITE,
        layers=("bn",),
        reason=("float16 quantization stores a BatchNormalization left alone (MUL by s = gamma·rsqrt(var + eps), "
                "ADD of beta − mean·s) with float16 constants, and the converter clamps each float32 constant "
                "to ±65504 before the cast (tensorflow/compiler/mlir/lite/transforms/"
                "prepare_quantize_dynamic_range.cc, PrepareDynamicRangeQuantizableOp::convertToFloat16Constant, "
                "kMaxFloat16Value): a dead channel with a large gamma (s = 1.73e5) is multiplied by 65504, "
                "finite and wrong, where torch's float16 folds give inf. Witness: BatchNormalization on a "
                "Conv2D(3, 4, 3, padding 1) output, channel 0 dead (running variance 0) with gamma 548: "
                "outputs off by up to 208 (oracle −320 … 231), 101× the bound; eager Keras in float16 (it "
                "computes in float32) 0.074×. A Conv2D or Dense before it takes the scale into its weights "
                "(W·s, small for a dead channel) and stays within bound."),
        region=_tflite_fp16_scale_clamped,
        witness=FoldState(layer="conv", kind="dead_large_gamma", dtype="float16", seed=274643162, bias=False,
                          padding=1),
        advice="convert with float32 weights, or clip |gamma|/sqrt(var + eps) below 65504 (or drop the dead "
               "channel) before float16 quantization"),
]

# --- onnx2tf (equiv.routes.tf_targets): ONNX → tf_keras, SavedModel, TFLite ---------------------------
_ONNX2TF = ("onnx.node+onnx2tf", "torch.builtin+onnx2tf")
ONNX2TF = [
    RouteDivergence(
        id="onnx2tf-tflite-fold-bias-cancels",
        implementations=("onnx.node+onnx2tf",),
        layers=("conv", "linear"),
        reason=("onnx2tf 1.28.8 writes an ONNX BatchNormalization as tf.nn.batch_normalization with the node's "
                "statistics as constants (onnx2tf/ops/BatchNormalization.py:155-169), and TFLiteConverter (tensorflow "
                "2.21.0) folds it as in tflite-fold-bias-cancels: b' = b·inv + (beta − mean·inv), two large terms "
                "that cancel where b ≈ mean (a dead channel), not (b − mean)·inv + beta. The float32 flatbuffer is "
                "outside the folded bound there, within the unfolded one; the tf_keras model and the SavedModel "
                "(unfolded) are within bound. Witness: float32 Conv(3, 4, 3, stride 2, padding 1) → "
                "BatchNormalization, channels 0 and 1 dead with large gamma: off by 5.10e-5, 10.4× the folded "
                "bound (0.053× the unfolded one; 0.029× the sum of bounds against onnxruntime). float16 weights "
                "(model_float16.tflite, computed in float32): within bound."),
        region=lambda s: s.dtype == "float32" and s.bias and s.kind.startswith("dead"),
        witness=FoldState(layer="conv", kind="dead_large_gamma", dtype="float32", seed=852565, bias=True, stride=2,
                          padding=1),
        advice="none needed for inference accuracy at the unfolded layers' level; fold yourself as "
               "(b − mean)·s + beta before converting where a folded model is held to a tighter bound"),
    RouteDivergence(
        id="onnx2tf-torch-linear-fold-bias-cancels",
        implementations=("torch.builtin+onnx2tf",),
        layers=("linear",),
        reason=("torch.onnx.export (torch 2.13.0, dynamo=False) leaves Linear → BatchNorm1d as Gemm → "
                "BatchNormalization, which onnx2tf and TFLiteConverter fold as in onnx2tf-tflite-fold-bias-cancels "
                "(b' = b·inv + (beta − mean·inv), cancelling where b ≈ mean). Conv2d → BatchNorm2d is folded by the "
                "exporter's own constant folding, in torch, and the flatbuffer is within the folded bound (0.03× on "
                "that finding's witness). Witness: float32 Linear(8, 4) → BatchNorm1d, channels 0 and 1 dead with "
                "large gamma: 3.03× the folded bound (0.029× the sum of bounds against eager torch)."),
        region=lambda s: s.dtype == "float32" and s.bias and s.kind.startswith("dead"),
        witness=FoldState(layer="linear", kind="dead_large_gamma", dtype="float32", seed=5, bias=True),
        advice="none needed at the unfolded layers' level; fold Linear → BatchNorm1d in torch first "
               "(torch.nn.utils.fusion.fuse_linear_bn_eval) where a folded model is held to a tighter bound"),
    RouteDivergence(
        id="onnx2tf-fp16-bn-scale-clamped",
        implementations=("onnx.node+onnx2tf",),
        layers=("bn",),
        reason=("onnx2tf's model_float16.tflite stores a BatchNormalization left alone as MUL and ADD with float16 "
                "constants, clamped to ±65504 by TFLiteConverter as in tflite-fp16-bn-scale-clamped "
                "(prepare_quantize_dynamic_range.cc, convertToFloat16Constant): a dead channel with a large gamma "
                "(scale |gamma|/sqrt(var + eps) beyond 65504) is multiplied by 65504, finite and wrong. Witness: "
                "BatchNormalization alone on a Conv(3, 4, 3) output, channel 1 dead with gamma −286.5 (scale "
                "9.06e4): outputs off by up to 50.0 (oracle −140 … 174), 45.3× the bound; onnxruntime on the "
                "float32 graph 0.14×."),
        region=_tflite_fp16_scale_clamped,
        witness=FoldState(layer="conv", kind="dead_large_gamma", dtype="float16", seed=0, bias=False),
        advice="use model_float32.tflite, or clip |gamma|/sqrt(var + eps) below 65504 (or drop the dead channel) "
               "before onnx2tf"),
    RouteDivergence(
        id="onnx2tf-training-node-inference",
        implementations=("onnx.node+onnx2tf",),
        layers=("bn_train",),
        reason=("onnx2tf 1.28.8 reads a BatchNormalization's training_mode and does not use it "
                "(onnx2tf/ops/BatchNormalization.py:91, \"# disuse\"): a training node (training_mode=1, three "
                "outputs) becomes tf.nn.batch_normalization with the running statistics, its one output Y (:54); "
                "the running mean and variance outputs are dropped, so the momentum and the running-variance "
                "estimator go too. Every target (tf_keras, SavedModel, TFLite) normalizes a batch with the running "
                "statistics: within the inference bound of the inference oracle, and off the training oracle. "
                "Witness (layer \"bn_train\": BatchNormalization alone, training_mode=1, on a Conv(3, 4, 3) "
                "output): off by 0.524, 2.3e5× the training bound, the same on all three targets. No warning."),
        region=lambda s: True,
        witness=FoldState(layer="conv", kind="ordinary", dtype="float32", seed=0, bias=True),
        advice="convert the inference graph only; train in the source framework"),
]

# --- what a route makes of a training-mode source (equiv.routes.probes; tests/test_routes_probes.py) ----------
TRAINING_FORMS = [
    ExportFinding(
        id="tflite-training-call-uninitialized-variables", implementations=_LITE,
        reason=("TFLiteConverter.from_concrete_functions([tf.function(lambda x: model(x, training=True))"
                ".get_concrete_function(spec)], model) (tensorflow 2.21.0, keras 3.15.1) converts without an error "
                "or a warning, but the BatchNormalization's gamma, beta and moving statistics stay resource "
                "variables, as the training call assigns the moving ones (experimental_enable_resource_variables "
                "is on by default, tensorflow/lite/python/lite.py:628; the flatbuffer holds VAR_HANDLE, "
                "READ_VARIABLE and ASSIGN_VARIABLE ops), and nothing in it gives them their values: the "
                "interpreter reads uninitialized memory. Measured on the probe state (equiv.routes.probes, "
                "BatchNormalization alone, 4 channels): outputs of 2.7e-8 in one process and of 3.5e29 … 1.2e38 "
                "in three others, against a training forward of magnitude 3.5; neither the batch statistics' nor "
                "the running statistics' output."),
        advice="convert the inference model (from_keras_model, which traces training=False); a training step "
               "on device needs TFLite's on-device training signatures, with the variables' initial values"),
]

FINDINGS += ROUTES + ONNX2TF + TRAINING_FORMS


def _max_var(c, p):
    """The largest batch variance of a channel, and for affine_invariance of a·x + b as the property feeds it."""
    red = _red(c)
    v = max(float(c.batch(i).var(axis=red).max()) for i in range(c.steps))
    if p == "affine_invariance":
        a, b = affine_draw(c)
        with np.errstate(over="ignore", invalid="ignore"):
            v = max(v, float(np.nan_to_num(round_to(a * c.x + b, c.dtype).var(axis=red), nan=np.inf).max()))
    return v


FINDINGS += [
    # --- TensorFlow's ops as a user assembles them (equiv/adapters/tf_ops.py) ----------------------------
    Divergence(
        id="tf-nn-fp16-eps-underflow",
        implementations=("tf.nn.moments", "tf.nn.weighted_moments"),
        properties=_FORWARD,
        reason=("float16 (TensorFlow 2.21.0, CPU): tf.nn.moments and tf.nn.weighted_moments compute in float32 "
                "but return float16 (nn_impl.py:1284, :1398), and tf.nn.batch_normalization adds the Python "
                "float variance_epsilon to that float16 variance (rsqrt(variance + variance_epsilon), "
                "nn_impl.py:1491): an eps below 2.98e-8 (half the smallest float16 subnormal) rounds away, and "
                "a zero-variance channel gives x·rsqrt(0) − mean·rsqrt(0) = inf − inf = NaN where the exact "
                "output is beta (witness: eps 1e-8, output NaN, oracle 0.069; the fused ops add eps in float32 "
                "and give beta). affine_invariance meets it where a·x + b rounds to a constant channel in float16 "
                "while eps·a² < 6e-8"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c, p) < 6e-8,
        witness=Case(dtype="float16", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.0),
        witness_property="train_forward",
        advice="in float16 keep variance_epsilon ≥ 6e-8 (1e-5 and 1e-3 are fine), or use the fused op"),
    Divergence(
        id="tf-nn-fp16-variance-overflow",
        implementations=("tf.nn.moments", "tf.nn.weighted_moments"),
        properties=_FORWARD + ("batch_stats", "running_stats", "state_after_calls"),
        reason=("float16 (TensorFlow 2.21.0, CPU): tf.nn.moments and tf.nn.weighted_moments compute in float32 "
                "and cast the variance back to float16 (nn_impl.py:1284-1285, :1397-1399): a channel whose "
                "variance exceeds 65504 (std > 256) gets variance inf although its values and its output are "
                "representable; rsqrt(inf) = 0, the output collapses to beta, the running variance to inf "
                "(witness: variance 1.1e5, output 0.241 = beta where the oracle has −1.57 … 1.03, 76× the bound; "
                "running variance inf, NaN with weight 0 (0·inf); "
                "affine_invariance meets it on a·x + b, e.g. a = 6.09: variance 4.2e5). The fused ops and "
                "tf.keras keep the statistics in float32"),
        region=lambda c, p: c.dtype == "float16" and _max_var(c, p) > 6e4,
        witness=Case(dtype="float16", shape=(4, 1), seed=4, log10_scale=2.5, log10_offset=None,
                     constant_channel=False, eps=1e-3, new_batch_weight=0.0),
        witness_property="train_forward",
        advice="in float16 scale inputs to std < 256 before tf.nn.moments, or take the moments of a float32 copy "
               "(or use the fused op)"),
    Divergence(
        id="tf-nn-fp16-rsqrt-grad-overflow",
        implementations=("tf.nn.moments", "tf.nn.weighted_moments"),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16 (TensorFlow 2.21.0, CPU): tf.nn.batch_normalization takes rsqrt(variance + eps) of the "
                "float16 variance (nn_impl.py:1491), and its gradient RsqrtGrad, −0.5·dy·y³ with y = rsqrt(var + "
                "eps), is formed in float16: y³ overflows (> 65504) for var + eps < 6.1e-4 although dx is "
                "representable; inf reaches dx and inf − inf its channel sum (witness: var + eps = 1.2e-4, dx inf "
                "where the oracle has −876 against a bound of 34.5, Σdx NaN). The fused ops' gradient "
                "(FusedBatchNormGradV3) works in float32"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c) < 7e-4,
        witness=Case(dtype="float16", shape=(6, 1), seed=1, log10_scale=-2.0, log10_offset=None,
                     constant_channel=False, eps=1e-4, new_batch_weight=0.0),
        witness_property="gradients",
        advice="train in float32 (or mixed precision with float32 statistics), or keep var + eps above 6.1e-4 in "
               "float16"),
]

_OPS_TEST = "tests/test_tf_ops_findings.py::"
FINDINGS += [
    DocFinding(
        id="tf-fused-running-var-unbiased-undocumented",
        implementations=("tf.fused_batch_norm", "tf.raw.FusedBatchNormV3"),
        test=_OPS_TEST + "test_fused_defaults_and_the_unbiased_running_variance",
        reason=("tf.compat.v1.nn.fused_batch_norm documents its running_var output as (1 − f)·variance + "
                "f·batch_variance, \"where batch_variance is the variance of the current batch in x\" "
                "(nn_impl.py:1564-1567, TensorFlow 2.21.0); the kernel multiplies the batch variance by "
                "m/(m − 1) (Bessel's correction: fused_batch_norm_op.cc:179-183, 204-216; oneDNN's kernel, the "
                "CPU default: adjust_factor in mkl_fused_batch_norm_op.cc), while y is normalized with the "
                "biased variance (÷ m). Measured: 4×2×3 values a channel, running variance 24/23 = 1.043× the "
                "biased batch variance with the default f = 1; reserve_space_2 holds the biased one"),
        advice=("a running variance from the fused op is unbiased (torch.builtin's estimator): port it as such; "
                "a hand-written moving average over tf.nn.moments is biased")),
    DocFinding(
        id="tf-fused-v3-mean-not-inference-only",
        implementations=("tf.raw.FusedBatchNormV3",),
        test=_OPS_TEST + "test_raw_op_agrees_with_fused_batch_norm_and_its_reserve_spaces",
        reason=("tf.raw_ops.FusedBatchNormV3 documents mean and variance as \"Used for inference only; must be "
                "empty for training\" (gen_nn_ops.py:5146-5150, TensorFlow 2.21.0); with is_training=True and "
                "exponential_avg_factor f != 1 the kernel reads them as the running statistics and returns "
                "(1 − f)·mean + f·batch_mean as batch_mean, likewise batch_variance (with Bessel's correction) "
                "(fused_batch_norm_op.cc:209-216); with f = 1 it ignores them. Measured: mean 0.5, f = 0.3: "
                "batch_mean = 0.35 + 0.3·(the batch mean), equal bit for bit to fused_batch_norm's running_mean"),
        advice=("pass the running statistics and exponential_avg_factor = the new batch's weight (PyTorch's "
                "momentum) to get the update in the op; batch_mean and batch_variance are then running values")),
    DocFinding(
        id="tf-ema-decay-float32",
        implementations=("tf.nn.moments", "tf.nn.weighted_moments"),
        test=_OPS_TEST + "test_exponential_moving_average_rounds_decay_to_float32_for_float64_variables",
        reason=("tf.train.ExponentialMovingAverage documents its update as shadow −= (1 − decay)·(shadow − "
                "variable) (moving_averages.py:317) but converts decay to float32 whatever the variable's dtype "
                "(:580-581): a float64 moving average with decay 0.9 weighs the new value by 1 − fl32(0.9) = "
                "0.10000002384 (relative 2.4e-7, about 2·10⁹ float64 ulps). The tf.nn.* adapters write the "
                "documented update themselves in the state's dtype (0.1 exactly) and so do not show it"),
        advice=("for float64 running statistics write the update yourself, as the adapters do; in float32 the "
                "class rounds decay as any float32 update does")),
]
