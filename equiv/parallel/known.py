"""What data-parallel implementations do that the oracle or one device does not, in two lists:

- ``KNOWN``: divergences from the oracle, written as ``equiv.known``'s: the region of inputs where
  each shows (``tests/test_parallel.py`` leaves it out and says so), a witness case that shows it (run
  as a strict xfail: when a release fixes it the test turns red) and the measured error. Regions and
  witnesses are ``ParallelCase``s: a global batch and its split over replicas.
- ``FINDINGS``: behaviours of the engine beyond the numbers of one run (whose replica a checkpoint
  holds, how gradients are scaled, what an empty shard does, what refuses to run), each measured on a
  witness run that the named test pins (a strict xfail where the layer departs from what a user would
  expect, a plain assertion of the measured value otherwise).

``equiv findings`` lists both under "Data-parallel"."""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from equiv.known import _offset_ratio
from equiv.strategies import Case, ParallelCase


@dataclass(frozen=True)
class ParallelDivergence:
    id: str
    implementations: tuple     # names in equiv.parallel.REGISTRY
    reason: str                # what differs and why, with the measured error on the witness
    region: Callable           # ParallelCase -> bool
    witness: ParallelCase
    advice: str = ""


def _red(case):
    return (0,) + tuple(range(2, case.ndim))


def global_offset_ratio(pc):
    """max over channels and steps of |mean|/std of the global batch (inf for a constant channel
    off zero): E[x²] − E[x]² loses ~u·ratio² of the variance."""
    c = pc.case
    with np.errstate(divide="ignore", invalid="ignore"):
        return max(float(np.nan_to_num(np.abs(x.mean(axis=_red(c))) / x.std(axis=_red(c)), nan=0.0).max())
                   for x in map(c.batch, range(c.steps)))


KNOWN = [
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
    ParallelDivergence(
        id="mxnet-sync-fast-variance-offset",
        implementations=("mxnet.sync",),
        reason=("gluon.contrib.nn.SyncBatchNorm averages every replica's E[x] and E[x²] in float32 "
                "(src/operator/contrib/sync_batch_norm-inl.h: SyncBatchNorm::Forward, 'E(x) and E(x^2)', "
                "then SharedND::MeanReady, mean_ = data_[0] * 1.0f / num_devices_) and takes "
                "var = var - F<square>(mean), E[x²] − E[x]², without a clip at 0, so it loses "
                "~u·(|mean|/std)² of the variance. Measured on 2 replicas × 8 values, 2 channels, worst over 5 "
                "seeds per offset: relative error of the batch variance 8.8e-6, 1.2e-3, 0.27, 10.9 at "
                "|mean|/std ~ 10, 1e2, 1e3, 1e4; error/bound of the training output 0.27, 5.0, 149, NaN, of "
                "the running variance 2.8, 375, 4.2e4, 3.7e4 (tests/test_parallel_mxnet.py). At ~1e4 the "
                "variance comes out negative: seed 4 gives a running variance of −32 (the data's is 6.9) "
                "and NaN outputs where var + eps < 0, a checkpoint that then infers NaN. Witness: "
                "|mean|/std ≈ 1e3, output off by 0.134, 149× the bound. Region: |mean|/std > 1 of the global batch in "
                "some step (float32 is the only dtype: the operator's real_t)"),
        region=lambda pc: global_offset_ratio(pc) > 1.0,
        witness=ParallelCase(Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                                  constant_channel=False, eps=1e-5, new_batch_weight=1.0), (8, 8)),
        advice="centre data far from zero mean before SyncBatchNorm, or use two-pass statistics"),
    ParallelDivergence(
        id="flax-dp-fast-variance-offset",
        implementations=("flax.linen.pmap", "flax.linen.pmap.mask", "flax.linen.shard_map", "flax.linen.vmap",
                         "flax.linen.jit", "flax.linen.jit.mask", "flax.nnx.pmap", "flax.nnx.shard_map",
                         "flax.nnx.vmap", "flax.nnx.jit"),
        reason=("with axis_name, Flax's default use_fast_variance=True lax.pmeans every replica's E[x] and "
                "E[x²] and takes var = E[x²] − E[x]² (_compute_stats, flax/linen/normalization.py:137-142, "
                "maybe_distributed_mean 119-135; flax/nnx/nn/normalization.py:101-122); under jit with "
                "NamedSharding the same formula runs on the global batch. It loses ~u·(|mean|/std)² of the "
                "variance as on one device (flax-fast-variance-offset). Measured on the witness (4 replicas × "
                "4 rows, float32, |mean|/std ≈ 1e3, new-batch weight 1): training output off by 0.0225 = 25× "
                "the bound and running var off by 0.383 = 8.6e3× under pmap, shard_map and jit (linen and "
                "nnx alike, bit-identical), 0.0919 = 102× and 1.38 = 3.1e4× under vmap (the single device's "
                "numbers: vmap's pmean reduces as one device does); float64 at 1e3: 90× and 6.7e4× (vmap 44×, "
                "2.3e4×), at 1e6: 1.7e4× and 9.3e9×; at 1e2 in float32 the output is inside (0.75×) and the "
                "running var 41× off. flax.linen.pmap.two_pass (pmean of E[x], then of E[(x − mean)²]) stays "
                "≤ 0.05× at every offset. Region: max |mean|/sqrt(var + eps) > 3 or |mean|/std > 1 in a "
                "global batch"),
        region=lambda pc: _offset_ratio(pc.case, "train_forward", True) > 3.0
        or _offset_ratio(pc.case, "running_stats", False) > 1.0,
        witness=ParallelCase(Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                                  constant_channel=False, eps=1e-5, new_batch_weight=1.0), (4, 4, 4, 4)),
        advice="use BatchNorm(axis_name=..., use_fast_variance=False) for data far from zero mean"),
]


def divergences(name):
    return [d for d in KNOWN if name in d.implementations]


def excluded(name, pc):
    """The documented divergence of ``name`` whose region holds ``pc``, or None."""
    return next((d for d in divergences(name) if d.region(pc)), None)


@dataclass(frozen=True)
class ParallelFinding:
    id: str
    implementations: tuple   # names in equiv.parallel.REGISTRY
    reason: str              # what differs and why, the source line, the measured numbers
    test: str                # the test that runs the witness: tests/<file>::<name>
    advice: str = ""


_WITNESS = ("witness: float64, 2 channels, shards of 8 rows with means 0, 5, −3, 2 (std 1), 3 steps, "
            "momentum 0.1")

FINDINGS = [
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
    ParallelFinding(
        id="mxnet-sync-temp-space-deadlock",
        implementations=("mxnet.sync",),
        reason=("A whole net of gluon.contrib.nn.SyncBatchNorm layers over CPU contexts deadlocks in its first "
                "backward with MXNet's defaults (1.9.1): the operator's Backward takes the engine's temporary "
                "workspace (BackwardResource kTempSpace, src/operator/contrib/sync_batch_norm-inl.h:553-556, "
                "used at :392-393) and then waits in Barrier::Wait (:415) for every replica of the layer; all CPU "
                "contexts share one pool of MXNET_CPU_TEMP_COPY = 4 copies (src/resource.cc:90, 101-102, 132), "
                "handed out round-robin (ResourceTempSpace::GetNext, :283-292), each an engine variable its op "
                "holds as mutable (:264). When two replicas' ops draw the same copy, the second waits for the "
                "first, which waits in the barrier for the second: no error, no timeout. Single layers and "
                "conv + SyncBatchNorm pass by luck of the count; conv, BN, sigmoid, conv, BN on 2 contexts hangs, "
                "with MXNET_CPU_TEMP_COPY=1 one conv + SyncBatchNorm on 4 does. BN-LeNet on 4 contexts "
                "(equiv.lenet.mxnet_sync_net) hangs with 4 to 96 copies and runs with 128 and more (a step "
                "pushes some 100-128 temp-space requests); MXNET_CPU_WORKER_NTHREADS=32 (each CPU context has "
                "its own pool, src/engine/threaded_engine_perdevice.cc:110-120) and MXNET_EXEC_BULK_EXEC_TRAIN=0 "
                "hang alike. With MXNET_CPU_TEMP_COPY=256 the 30-step float32 lockstep on Fashion-MNIST agrees "
                "with the global batch's reference (mxnet.sync)."),
        test="tests/test_parallel_mxnet.py::test_default_temp_space_copies_deadlock_the_net",
        advice="set MXNET_CPU_TEMP_COPY above the temp-space requests of one step (256 for BN-LeNet on 4 "
               "CPU contexts) before MXNet starts"),
    ParallelFinding(
        id="gluon-trainer-first-step-broadcast",
        implementations=("mxnet.contexts",),
        reason=("gluon.Trainer (MXNet 1.9.1) initializes its kvstore at the first step() and then broadcasts "
                "context 0's value of every Parameter it was given to all contexts (mxnet/gluon/trainer.py:341-344 "
                "→ _init_params, :160 kvstore.broadcast(idx, param_arrays[0], param_arrays)), the BN running "
                "statistics included (net.collect_params() holds them; grad_req 'null' is not filtered, :172). That "
                "step's backward has already moved each context's statistics by its own shard, so after step 1 "
                "every context holds context 0's exactly (BN-LeNet, plain gluon.nn.BatchNorm on 4 CPU contexts, "
                "float32: bit-equal; the contexts' own shards' are 3.8e-2 … 5.2e-2 apart), and from step 2 on "
                "context r runs context 0's step-1 chain updated by its own shards (step 2: within 1.3e-6 of that, "
                "1.8e-2 … 2.4e-2 off its own chain). Later steps broadcast nothing. Context 0's statistics, the "
                "ones a checkpoint of the first context holds, are its own shards' alone."),
        test="tests/test_parallel_mxnet.py::test_trainer_first_step_broadcasts_context0_running_stats",
        advice="read running statistics from context 0 only, or exclude them from the Trainer "
               "(net.collect_params('.*weight|.*bias|.*gamma|.*beta'))"),
    ParallelFinding(
        id="flax-dp-mask-equal-weighting",
        implementations=("flax.linen.pmap.mask",),
        reason=("with a mask, each replica's mean is x.mean(axes, where=mask) over its own valid values, "
                "and lax.pmean averages the replicas' means (flax/linen/normalization.py:119-135): each "
                "replica counts once whatever its valid count, not the global batch. Declared "
                "weighting='equal' and matched by the equal-weighted oracle (tests/test_parallel.py); against "
                "the global batch the witness (valid counts 2 and 6, shard means 3 apart, float64) is off by "
                "0.158 in the output (7.9e13× the bound) and 1.49 in the running var (3.5e13×). The same "
                "masked batch under jit without axis_name (flax.linen.jit.mask) is the global batch "
                "(count-weighted, 0.11×). A replica with no valid value makes its mean 0/0 = NaN and so "
                "every replica's output and statistics NaN (empty_shard='nan'; under jit it weighs nothing)"),
        test="tests/test_parallel_jax.py::test_mask_is_not_the_global_batch",
        advice="with unequal valid counts per replica, weight each replica's statistics by its count "
               "(psum of sums and counts) or use jit with NamedSharding, which reduces the global batch"),
]


def by_id(finding_id):
    return next(f for f in FINDINGS if f.id == finding_id)
