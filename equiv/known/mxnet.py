"""MXNet's documented findings: mxnet.gluon and the book's mxnet.scratch, SyncBatchNorm and plain
BatchNorm on several contexts (mxnet.sync, mxnet.contexts), and the whole BN-LeNet."""
import numpy as np

from equiv.known._regions import _FORWARD, _fp16_eps_vanishes, _red, _scratch_square_overflows, global_offset_ratio
from equiv.known.base import Divergence, NetFinding, ParallelDivergence, ParallelFinding
from equiv.strategies import Case, ParallelCase

FINDINGS = [
    # --- mxnet (mxnet.gluon, mxnet.scratch) -------------------------------------------
    Divergence(
        id="mxnet-scratch-fp16-sum-overflow",
        implementations=("mxnet.scratch",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16: mxnet.np's mean stores the sum in the input dtype before dividing, so "
                "X.mean() and ((X − mean)**2).mean() are inf when a channel's sum of |x|, or of "
                "squares, passes 65504, although the mean is representable (np.array([4e4, 4e4], "
                "'float16').mean() is inf); output and gradients become NaN and the moving "
                "statistics inf or NaN (witness: 12 values near 6400, Σx ≈ 7.7e4, output NaN)"),
        region=lambda c, p: c.dtype == "float16" and any(
            max(float(np.abs(x).sum(axis=r).max()) * (14 if p == "affine_invariance" else 1),
                float(((x - x.mean(axis=r, keepdims=True)) ** 2).sum(axis=r).max())
                * (100 if p == "affine_invariance" else 1)) > 6e4
            for x, r in ((c.batch(i), _red(c)) for i in range(c.steps))),
        witness=Case(dtype="float16", shape=(1, 1, 3, 4), seed=0, log10_scale=0.0,
                     log10_offset=3.4771212547196626, constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="train_forward",
        advice="run the book's layer in float32: the float16 mean stores its sum in float16"),
    Divergence(
        id="gluon-fp16-var-eps-underflow",
        implementations=("mxnet.gluon",),
        properties=_FORWARD,
        reason=("float16 on the CPU: the kernel forms var + DType(eps) in float16 (VARIANCE_TO_INVSTD in "
                "src/operator/nn/batch_norm-inl.h; float + half_t is half_t), although it accumulates "
                "in float32; an eps below 2.98e-8 rounds to 0 and a zero-variance channel gives "
                "0·inf = NaN where the exact output is beta (witness: eps 1e-8, output NaN, oracle beta)"),
        region=_fp16_eps_vanishes,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="in float16 use eps ≥ 6e-8 (the default 1e-5 is safe), or run BatchNorm in float32"),
    Divergence(
        id="gluon-fp16-var-eps-overflow",
        implementations=("mxnet.gluon",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16 on the CPU: var + eps is formed in float16 (as above) and overflows when "
                "var + eps > 65504 (|x − mean| ≈ 256 and more), although the sum of squares is float32; "
                "1/sqrt(inf) = 0, the output collapses to beta and the running variance 1/0² − eps "
                "becomes inf, or NaN (0·inf) with new-batch weight 0 (witness: var 1.35e5, running var "
                "NaN where the oracle has 0.2375; output error 0.395 = 86× the bound)"),
        region=lambda c, p: c.dtype == "float16" and max(
            float(c.batch(i).var(axis=_red(c)).max()) for i in range(c.steps)
        ) * (100 if p == "affine_invariance" else 1) + c.eps > 6.5e4,
        witness=Case(dtype="float16", shape=(2, 1), seed=2, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats",
        advice="keep the per-channel std of float16 inputs below 256, or run BatchNorm in float32"),
    Divergence(
        id="gluon-momentum-float32",
        implementations=("mxnet.gluon",),
        properties=("running_stats", "state_after_calls",),
        reason=("the operator keeps momentum as a C++ float (BatchNormParam: `float momentum`, "
                "src/operator/nn/batch_norm-inl.h): momentum 0.9 is 0.89999998, so the new batch "
                "weighs 1 − fl32(momentum) = 0.10000002 instead of 0.1, whatever the dtype; float64 "
                "running statistics are only float32-accurate (witness: float64, weight 0.1, running "
                "mean off by 3.29e-8 = 9.4e6× the bound)"),
        region=lambda c, p: float(np.float32(1.0 - c.new_batch_weight)) != 1.0 - c.new_batch_weight,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.1),
        witness_property="running_stats",
        advice="expect running statistics accurate to float32 only, even in float64"),
    Divergence(
        id="mxnet-scratch-fp16-eps-underflow",
        implementations=("mxnet.scratch",),
        properties=_FORWARD,
        reason=("the book's code computes var + eps in the input dtype: in float16 an eps below "
                "2.98e-8 rounds away, and a zero-variance channel gives 0/sqrt(0) = NaN where the "
                "exact output is beta (witness: eps 1e-8, output NaN)"),
        region=_fp16_eps_vanishes,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="run the book's layer in float32 (its eps 1e-12 vanishes in float16)"),
    Divergence(
        id="mxnet-scratch-fp16-square-overflow",
        implementations=("mxnet.scratch",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16: the book's code squares x − mean in float16, which overflows for "
                "|x − mean| > 255.9; the variance becomes inf, the output collapses to beta and the "
                "moving variance to inf, or NaN (0·inf) with new-batch weight 0 (witness: std 100, "
                "running var NaN where the oracle has 0.2375)"),
        region=_scratch_square_overflows,
        witness=Case(dtype="float16", shape=(2, 1), seed=2, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats",
        advice="run the book's layer in float32"),
    Divergence(
        id="mxnet-scratch-fp16-grad-overflow",
        implementations=("mxnet.scratch",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16: the book's code is differentiated by autograd term by term, and the "
                "intermediates ∂L/∂var = −Σ gamma·dy·(x − mean) / (2 (var + eps)^{3/2}) and "
                "∂L/∂mean = −Σ gamma·dy/sqrt(var + eps) overflow float16 (> 65504) when var + eps is "
                "small, although dx itself is representable; x − mean is at least the float16 rounding "
                "of the mean, so a zero-variance channel with a small eps overflows too (witness: "
                "var + eps ≈ 1.4e-5, dx NaN; gluon's fused kernel accumulates in float32 and is finite)"),
        region=lambda c, p: c.dtype == "float16" and any(
            (g * np.abs(c.dy).sum(axis=r) * (1 / np.sqrt(s2) + (np.abs(x - x.mean(axis=r, keepdims=True)).max(axis=r)
             + 1e-3 * np.abs(x).max(axis=r)) / (2 * s2 ** 1.5))).max() > 65504 / 4
            for x, r, g in [(c.x, _red(c), np.abs(c.gamma))]
            for s2 in [x.var(axis=r) + c.eps]),
        witness=Case(dtype="float16", shape=(2, 2), seed=323153949, log10_scale=-2.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.0),
        witness_property="gradients",
        advice="run the book's layer in float32"),
    # --- data-parallel (mxnet.sync, mxnet.contexts) ---------------------------------------
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
    # --- whole BN-LeNet (equiv lockstep) --------------------------------------------------
    NetFinding(
        id="gluon-momentum-float32", implementations=("mxnet.gluon",),
        dtypes=("float64",), data="any", where=(1, "state", "bn1.running_mean"),
        reason=("gluon keeps momentum 0.9 as a C++ float: the new-batch weight is 1 − fl32(0.9) = "
                "0.10000002384, so float64 running statistics are float32-accurate (bn1.running_mean "
                "off by 2.4e-7 relative at step 1); everything else agrees to float64 rounding.")),
    NetFinding(
        id="gluon-float32-sequential-sum", implementations=("mxnet.gluon",),
        dtypes=("float32",), data="fashion-mnist", where=(1, "param", "bn3.beta"),
        reason=("gluon's CPU kernel sums a channel's gradient values one by one in a float32 "
                "accumulator (BatchNormBackwardImpl), an error growing like m·u32 instead of "
                "sqrt(m)·u32: on Fashion-MNIST (batch 128) bn3.beta is off by 9.7e-5 against the "
                "tolerance 6.9e-5 at step 1.")),
    NetFinding(
        id="gluon-float32-sequential-sum", implementations=("mxnet.contexts",),
        dtypes=("float32",), data="fashion-mnist", where=(1, "param", "bn1.beta"),
        reason=("gluon's CPU BatchNorm on each of 4 contexts sums its own 32 images in float32 one value after "
                "another (gluon-float32-sequential-sum): on Fashion-MNIST bn1.beta is off by 8.1e-5 at step 1 "
                "against the tolerance 6.9e-5 (its gradient sums 18,432 values a channel a context, then the "
                "Trainer sums the contexts'), and context 0's bn1.running_mean by 4.3e-5 (a sequential float32 "
                "mean of its bn1 input in NumPy: 4.33e-5); over 30 steps bn1's output reaches 2.1 times the step's "
                "tolerance (step 28). mxnet.sync (SyncBatchNorm's own kernel, the same Trainer) agrees "
                "within 0.16 of the tolerance over 30 steps.")),
]
