"""PyTorch's documented findings: torch.builtin and the book's torch.scratch (and their paths),
DistributedDataParallel and SyncBatchNorm (torch.ddp, torch.syncbn), and torch's folding routes
(equiv.routes: fuse_conv_bn_eval, fuse_linear_bn_eval, ao fuse_modules, fx fuse)."""
from equiv.known._regions import (
    _FORWARD,
    _min_var_plus_eps,
    _scratch_grad_overflows,
    _scratch_square_overflows,
    fold_intermediates_overflow,
    under,
)
from equiv.known.base import Divergence, ExportFinding, OptionDivergence, ParallelFinding, RouteDivergence
from equiv.routes.states import FoldState
from equiv.strategies import Case

_WITNESS = ("witness: float64, 2 channels, shards of 8 rows with means 0, 5, −3, 2 (std 1), 3 steps, "
            "momentum 0.1")

FINDINGS = [
    # --- torch -----------------------------------------------------------------------
    Divergence(
        id="torch-fp16-invstd-overflow",
        implementations=("torch.builtin",),
        properties=_FORWARD,
        reason=("float16 on the CPU: 1/sqrt(var + eps) is stored in float16 and overflows to inf "
                "when var + eps < 2.33e-10 (= 1/65504²); a zero-variance channel then gives "
                "0·inf = NaN where the exact output is beta (witness: eps 1e-10, output NaN, oracle 0.0)"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c) < 2.4e-10,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-10, new_batch_weight=0.1),
        witness_property="train_forward"),
    Divergence(
        id="scratch-fp16-eps-underflow",
        implementations=("torch.scratch",),
        properties=_FORWARD,
        reason=("the book's code computes var + eps in the input dtype: in float16 an eps below "
                "2.98e-8 (half the smallest subnormal) rounds away, and a zero-variance channel "
                "gives 0/sqrt(0) = NaN where the exact output is beta (witness: eps 1e-8, output NaN)"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c) < 6e-8,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.1),
        witness_property="train_forward"),
    Divergence(
        id="scratch-fp16-grad-overflow",
        implementations=("torch.scratch",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16: the book's code is differentiated by autograd term by term, and the "
                "intermediates ∂L/∂var = −Σ gamma·dy·(x − mean) / (2 (var + eps)^{3/2}) and "
                "gamma·dy/sqrt(var + eps) overflow float16 (> 65504) when var + eps is small, although "
                "dx itself is representable; inf − inf then gives NaN in dx (witness: var + eps ≈ "
                "1.4e-5, |dy| ≈ 7, dx all NaN; torch.builtin's fused kernel accumulates in float32 "
                "and is finite)"),
        region=_scratch_grad_overflows,
        witness=Case(dtype="float16", shape=(2, 2), seed=323153949, log10_scale=-2.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.0),
        witness_property="gradients"),
    Divergence(
        id="scratch-fp16-square-overflow",
        implementations=("torch.scratch",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16: the book's code squares x − mean in float16, which overflows for "
                "|x − mean| > 255.9; the variance becomes inf, the output collapses to beta and the "
                "running variance to inf, or NaN (0·inf) with new-batch weight 0 (witness: std 100, "
                "running var NaN where the oracle has 1.0); torch.builtin accumulates in float32"),
        region=_scratch_square_overflows,
        witness=Case(dtype="float16", shape=(2, 1), seed=2, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats"),
    # --- data-parallel (torch.ddp, torch.syncbn): behaviours ------------------------------
    ParallelFinding(
        id="torch-ddp-rank0-broadcast",
        implementations=("torch.ddp",),
        reason=("DistributedDataParallel (torch 2.13.0, forward_sync_buffers / broadcast_buffers default True) "
                "broadcasts rank 0's buffers to every replica before each forward "
                "(torch/nn/parallel/distributed.py:1782, _pre_forward → _sync_buffers; :2417 'The process with "
                "rank 0 is considered the authoritative copy'), "
                "then each replica updates them from its own shard: replica r's running statistics after k steps are "
                "rank 0's chain through step k − 1 plus one update from r's k-th shard, not its own chain ("
                + _WITNESS + ", R = 2: replica 1's running mean 0.449 where its own chain is 1.332)."),
        test="tests/test_parallel_torch.py::test_ddp_replica_stats_are_not_their_own_chain",
        advice="read running statistics from rank 0 only (the others are one step off rank 0's); "
               "forward_sync_buffers=False keeps each replica's own"),
    ParallelFinding(
        id="torch-ddp-checkpoint-rank0-shard",
        implementations=("torch.ddp", "torch.ddp.local_buffers"),
        reason=("Plain BatchNorm under DDP normalizes each replica by its own shard, and rank 0's "
                "checkpoint (model.module.state_dict()) holds running statistics from rank 0's shards only, "
                "never the global batch's: with forward_sync_buffers=True they are exactly rank 0's own chain "
                "(the broadcast only overwrites the others). " + _WITNESS + ": running mean (−0.049, 0.003) "
                "and running var (0.834, 0.905) where the global batch's are (0.641, 0.646) and (2.817, 2.551) "
                "with R = 2; (−0.068, −0.027), (0.841, 0.887) against (0.212, 0.281), (3.225, 3.285) with R = 4: "
                "off by the spread of the shard means, whatever the dtype."),
        test="tests/test_parallel_torch.py::test_ddp_checkpoint_is_rank0_shard_not_global_batch",
        advice="convert to SyncBatchNorm (on GPUs) or shuffle so that every shard has the global "
               "batch's statistics; re-estimate running statistics on the global data before exporting"),
    ParallelFinding(
        id="torch-ddp-grad-mean",
        implementations=("torch.ddp", "torch.ddp.local_buffers"),
        reason=("DDP all-reduces the parameter gradients and divides by the world size "
                "(torch/distributed/algorithms/ddp_comm_hooks/default_hooks.py:26, "
                "tensor.div_(group_to_use.size()); the built-in reducer, no hook registered, divides alike: "
                "measured): every replica's dgamma, dbeta is Σ over replicas / R, 1/R of the global batch's "
                "gradient of Σ y·dy (measured "
                "ratio 0.5 with R = 2, 0.25 with R = 4, to 1e-15), whatever the shard sizes: with unequal "
                "shards a replica's values weigh 1/(R·n_r) of a mean loss, not 1/N. An empty shard still "
                "counts in R (its zero gradients are averaged in)."),
        test="tests/test_parallel_torch.py::test_ddp_averages_gradients",
        advice="scale the learning rate, or the loss, by R when porting from a summed gradient; "
               "with unequal shards weight each replica's loss by n_r·R/N"),
    ParallelFinding(
        id="torch-ddp-empty-shard",
        implementations=("torch.ddp", "torch.ddp.local_buffers"),
        reason=("A replica given an empty batch (0, C[, H, W]) runs: BatchNorm returns an empty output, zero "
                "gradients and leaves its running statistics untouched. Under forward_sync_buffers=True an empty "
                "shard on rank 0 freezes every replica's running statistics: each forward starts from rank 0's "
                "unchanged buffers, and rank 0's checkpoint after k steps equals the initial state exactly."),
        test="tests/test_parallel_torch.py::test_ddp_empty_shard_on_rank0_freezes_the_checkpoint",
        advice="drop_last=True in the sampler (DistributedSampler pads instead of emptying a shard)"),
    ParallelFinding(
        id="torch-syncbn-cpu-refused",
        implementations=("torch.syncbn",),
        reason=("SyncBatchNorm does not run on the CPU (torch 2.13.0): DistributedDataParallel refuses it at "
                "construction, ValueError 'SyncBatchNorm layers only work with GPU modules' "
                "(torch/nn/parallel/distributed.py:2459); alone in a gloo group its forward raises ValueError "
                "'SyncBatchNorm expected input tensor to be on GPU or XPU or privateuseone' "
                "(torch/nn/modules/batchnorm.py:851). Its math is not reachable another way: the autograd Function "
                "(torch/nn/modules/_functions.py SyncBatchNorm, gloo's all_gather path included) calls "
                "torch.batch_norm_stats, batch_norm_gather_stats_with_counts, batch_norm_elemt, "
                "batch_norm_backward_reduce and batch_norm_backward_elemt, none of which has a CPU kernel "
                "(NotImplementedError: Could not run 'aten::batch_norm_stats' with arguments from the 'CPU' backend). "
                "On CUDA it is held to the oracle by the generic property (torch.syncbn)."),
        test="tests/test_parallel_torch.py::test_syncbn_refuses_the_cpu",
        advice="on CPU clusters there is no synchronized BatchNorm in torch: use GroupNorm/LayerNorm, or "
               "all-reduce the batch moments by hand"),
]

# --- folding routes (equiv.routes) -----------------------------------------------------
_FOLDERS = ("torch.builtin+ao_fuse_modules", "torch.builtin+fx_fuse")
_WHY = ("the fold computes its per-channel scale in the model's precision: in float16, gamma·rsqrt(var + eps) "
        "of a dead channel (running variance 0, eps 1e-5: rsqrt = 316) overflows at |gamma| ≥ 207, and W·s at "
        "|W|·|s| ≥ 65504, although eager BatchNorm, whose output (z − mean)·s + beta is small, stays finite "
        "(torch 2.13.0, reached from torch/ao/quantization/fuser_method_mappings.py:68 and :169 and "
        "torch/fx/experimental/optimization.py:109 and :111). Inductor's freezing folds the same convolutions "
        "in float32 and casts afterwards (torch/_inductor/fx_passes/binary_folding.py:44-60): finite, 0.010× "
        "its bound on the conv witness. bfloat16's range holds s; float32 is within bound. ")
_ADVICE = ("fold a float16 model in float32 and cast the folded weights to float16 afterwards, or keep "
           "BatchNorm unfolded on channels whose |gamma|/sqrt(var + eps) exceeds 6e4")

ROUTES = [
    RouteDivergence(
        id="torch-fold-linear-fp16-scale-overflow",
        implementations=("torch.builtin+fuse_linear_bn_eval",) + _FOLDERS,
        layers=("linear",),
        reason=(_WHY + "torch/nn/utils/fusion.py:189, bn_scale = bn_w * torch.rsqrt(bn_rv + bn_eps), then "
                "linear_w * bn_scale at :191. Witness: float16 Linear(8, 4) → BatchNorm1d, channel 1 dead "
                "(running variance 1e-8, 0 in float16) with gamma −778 (s = −2.46e5): the folded weights of "
                "channel 1 are ±inf, its bias inf, its outputs NaN, where the oracle gives −97.6 … 95.8 and eager "
                "torch stays within 0.015× its bound (largest error 12.9 of the whole output, amplified by s)"),
        region=fold_intermediates_overflow,
        witness=FoldState(layer="linear", kind="dead_large_gamma", dtype="float16", seed=1, bias=True),
        advice=_ADVICE),
    RouteDivergence(
        id="torch-fold-conv-fp16-scale-overflow",
        implementations=("torch.builtin+fuse_conv_bn_eval",) + _FOLDERS,
        layers=("conv",),
        reason=(_WHY + "torch/nn/utils/fusion.py:91, bn_var_rsqrt = torch.rsqrt(bn_rv + bn_eps), and :98, "
                "conv_w * (bn_w * bn_var_rsqrt). Witness: float16 Conv2d(3, 4, 3) → BatchNorm2d, channel 0 dead "
                "(running variance 0) with gamma 896 (s = 2.8e5): the folded weights of channel 0 are ±inf and "
                "its outputs NaN, where the oracle gives −466 … 417 and eager torch stays within 0.020× its bound"),
        region=fold_intermediates_overflow,
        witness=FoldState(layer="conv", kind="dead_large_gamma", dtype="float16", seed=0, bias=True),
        advice=_ADVICE),
]

# --- layer options (equiv.options) --------------------------------------------------------
OPTIONS = [
    OptionDivergence(
        id="torch-momentum-none-after-float-momentum",
        implementations=("torch.builtin",),
        properties=("running_stats",),
        reason=("momentum=None set on a layer that trained with a float momentum is not the documented "
                "\"cumulative moving average (i.e. simple average)\" (torch/nn/modules/batchnorm.py:351, torch "
                "2.13.0) of anything: num_batches_tracked counts every training step, the float-momentum ones "
                "too (batchnorm.py:187-190), and the next update weighs the new batch 1/num_batches_tracked "
                "(batchnorm.py:192), so after j float-momentum steps the first cumulative step weighs it "
                "1/(j + 1), not 1, and the earlier exponential average stays in as if it were the plain "
                "average of j batches (witness: one step at momentum 0.1, then momentum=None: running mean "
                "after step 2 off by 0.819, 1.6e14× the bound, from the plain average of the batches since "
                "the switch; torch.optim.swa_utils.update_bn calls reset_running_stats first, which zeroes "
                "the count, batchnorm.py:91-97)"),
        region=under({"momentum": "cumulative_after_ema"}, lambda c, p: c.steps >= 2),
        witness=Case(dtype="float64", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=0.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1, steps=3,
                     options={"momentum": "cumulative_after_ema"}),
        witness_property="running_stats",
        advice=("to average from a switch on, call layer.reset_running_stats() (or zero "
                "layer.num_batches_tracked) when setting momentum=None, as update_bn does")),
    OptionDivergence(
        id="torch-track-running-stats-set-false-uses-buffers",
        implementations=("torch.builtin",),
        properties=("infer_forward",),
        reason=("track_running_stats=False set on a built layer: in eval() the layer still normalizes with "
                "its stored running statistics, where the class docstring says \"If track_running_stats is set "
                "to False, this layer then does not keep running estimates, and batch statistics are instead "
                "used during evaluation time as well\" (torch/nn/modules/batchnorm.py:331-333, torch 2.13.0): "
                "forward uses the batch in eval only when the buffers are None (batchnorm.py:200-203; the "
                "constructor sets them None, batchnorm.py:85-87, the attribute does not); training calls do stop "
                "updating them (batchnorm.py:187, 213-218), as documented (witness: inference output off by "
                "11.6, 2.5e14× the bound, from the batch-statistics output; it equals the output from the "
                "stored statistics)"),
        region=under({"track_running_stats": "set_false"}),
        witness=Case(dtype="float64", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=0.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1,
                     options={"track_running_stats": "set_false"}),
        witness_property="infer_forward",
        advice=("give track_running_stats=False to the constructor, or also set layer.running_mean = "
                "layer.running_var = None, for batch statistics in evaluation")),
]

# --- nobuco: torch → Keras 2 (equiv.routes.tf_targets; tests/test_routes_torchvision.py) ------------------------
_NOBUCO = ("torch.builtin+nobuco",)
NOBUCO = [
    ExportFinding(
        id="nobuco-dense-batchnorm-biased-running-variance", implementations=_NOBUCO,
        reason=("nobuco 0.17.0 makes a BatchNorm1d or BatchNorm2d keras.layers.BatchNormalization(momentum=1 − "
                "momentum, epsilon=eps) (nobuco/node_converters/normalization.py:25; its comment at :15: \"tensorflow "
                "and pytorch implementations of batchnorm behave differently in train mode\"). Keras 2.15 fuses a "
                "4-D BatchNormalization only (keras/src/layers/normalization/batch_normalization.py:356-366), and its "
                "fused kernel updates the moving variance with the unbiased batch variance, the non-fused one with "
                "the biased (tf.nn.moments). Measured by training the converted model (training=True) one step on "
                "the probe state: after Conv2d, new-batch weight 0.1 and unbiased, as torch; after Linear "
                "(BatchNorm1d on (N, C)), 0.1 and biased, where torch's is unbiased (m/(m − 1) = 4/3 apart "
                "for a batch of 4). Inference is unchanged."),
        advice="fine-tune the converted model's Dense → BatchNormalization layers knowing their moving variance "
               "is biased, or keep training in torch and convert the trained model"),
    ExportFinding(
        id="nobuco-training-module-traced", implementations=_NOBUCO,
        reason=("nobuco.pytorch_to_keras traces the module by running its forward (nobuco/trace/trace.py) in the "
                "mode it is given, and reads the BatchNorm's running statistics after that (normalization.py:20-23): "
                "a module in training mode has moved them one step, 0.1·(batch − running), on the example input "
                "(0.20 and 0.28 on the probe state's Conv2d and Linear), and the Keras layer starts from the moved "
                "statistics. The converted model's inference call is then neither torch's inference output (0.050 "
                "… 0.059 relative) nor its training one (0.96 … 1.04), and a first Keras training step reads as a "
                "new-batch weight of 0.19 (two steps of 0.1). nobuco's own check prints the difference it sees "
                "between torch and Keras (\"(!) Max diff 4.80182 (538.299%)\" for the Conv2d) beside its "
                "conversion tree, and converts anyway; the caller's module is left with the moved statistics."),
        advice="call model.eval() before nobuco.pytorch_to_keras"),
    ExportFinding(
        id="nobuco-import-patches-torch", implementations=_NOBUCO,
        reason=("import nobuco runs Tracer.decorate_all() (nobuco/convert.py:41): it replaces torch.nn.Module.__new__ "
                "so that every module built afterwards carries an instance forward wrapping its class's forward as "
                "it was then (nobuco/trace/trace.py:377-398), and calls torch.jit._state.disable() (:404). For the "
                "rest of the process a torch.fx GraphModule (torch.fx.symbolic_trace; onnx2torch's converted "
                "model) is built before its class gets its forward, so calling it raises NotImplementedError "
                "(\"missing the required 'forward' function\"), and TorchScript is off. Measured in a fresh "
                "process (tests/test_routes_torchvision.py); the routes' tests run nobuco in a pytest process of "
                "its own."),
        advice="run nobuco in a process of its own, apart from torch.fx, onnx2torch, TorchScript and torch.onnx "
               "exports"),
]

FINDINGS += ROUTES + OPTIONS + NOBUCO
