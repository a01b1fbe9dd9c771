"""The documented findings of the JAX libraries: flax.linen, flax.nnx, the book's jax.scratch, jax.stax,
Haiku and Equinox, Flax under pmap, shard_map, vmap and jit (flax.linen.*, flax.nnx.*), the whole
BN-LeNet (jax.scratch, equinox.ema) and the book's JAX tab."""
from equiv.known._regions import (
    _FORWARD,
    _decay,
    _fast_variance_loses,
    _flax_fp16_dx_cotangent_overflows,
    _fp16_square_overflows,
    _low_precision_fast_variance,
    _offset_ratio,
    under,
)
from equiv.known.base import BookNote, Divergence, NetFinding, OptionDivergence, ParallelDivergence, ParallelFinding
from equiv.strategies import Case, ParallelCase

FINDINGS = [
    # --- jax / flax (flax.linen, flax.linen.two_pass, flax.nnx, jax.scratch) ----------
    Divergence(
        id="flax-fast-variance-offset",
        implementations=("flax.linen", "flax.nnx"),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("Flax's default use_fast_variance=True computes var = E[x²] − E[x]² (_compute_stats, "
                "flax/linen/normalization.py and flax/nnx/nn/normalization.py), which loses "
                "~4·u·(|mean|/std)² of the variance: float32 relative error 2.2e-3, 0.15, 7.4 at "
                "|mean|/std 1e2, 1e3, 1e4 (tests/test_jax_findings.py). Measured worst error/bound "
                "over 12 cases per offset (float32; float64 alike): training output 0.4, 0.9, 2.9, 19, "
                "102 at |mean|/std ≈ 10^0.5 … 10^3 (∝ ratio: fails above ~10); batch variance 1.8, 6.9, "
                "283 at 10^0.5 … 10^1.5 (∝ ratio²: fails above ~1.5). Region: float32/float64 with "
                "max |mean|/sqrt(var + eps) > 3 (output, gradients) or |mean|/std > 1 (running statistics); "
                "float16/bfloat16 are reduced in float32: the error is 8192× smaller than their bounds "
                "until E[x²] − E[x]² loses the whole variance (4·u32·ratio² ≈ 1) and var̂ is clipped "
                "to 0 (seen at |mean|/std ≈ 3700 in float16: output off by 300, 2.3× the bound), so "
                "|mean|/std > 300 there. flax.linen.two_pass passes everywhere (witness: float32, |mean|/std ≈ "
                "900: output off by 0.092, 102× the bound; batch var off by 1.38, 3.1e4×)"),
        region=_fast_variance_loses,
        witness=Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=1.0),
        witness_property="train_forward",
        advice="use flax.linen.BatchNorm(use_fast_variance=False) (nnx too) for data far from zero mean"),
    Divergence(
        id="flax-fp16-dx-cotangent-overflow",
        implementations=("flax.linen", "flax.linen.two_pass", "flax.nnx"),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16 input reaches float32 twice in Flax's BatchNorm: _compute_stats casts it for the "
                "statistics (flax/linen/normalization.py:114, x.astype(dtype) with dtype promoted to float32 at "
                ":112; flax/nnx/nn/normalization.py:97-98; flax 0.12.8) and _normalize's y = x − mean promotes it "
                "against the float32 mean (linen :205, nnx :170; then mul = lax.rsqrt(var + epsilon) · scale and "
                "y·mul in float32, :206-216). JAX transposes each promotion into its own float32 → float16 cast of "
                "the cotangent and adds the two in float16 (an f16 add_any in the vjp's jaxpr, "
                "tests/test_jax_findings.py): "
                "dy·gamma/sqrt(var + eps) through x − mean, and −gamma/sqrt(var + eps)·(mean(dy) + "
                "x̂·mean(dy·x̂)) through the statistics. Either one ≥ 65520 casts to ±inf; with one value per "
                "channel (var = 0, x − mean = 0) they are equal and opposite, exact dx is 0, and Flax returns "
                "inf − inf = NaN (dgamma 0 and dbeta dy are right). Witness: batch of one, dy 1.158, gamma 0.3464, "
                "eps 1e-11: rsqrt 316228, the two cotangents ±126884, dx NaN where the oracle has 0 (bound "
                "1.13e9); the same dy and gamma pass at an eps where the product is 65519.5 and fail at 65520.5; "
                "flax 0.10.2 (jax 0.4.38; linen :113, :200) alike. A batch of one is where it shows: its exact dx is 0 "
                "however large the cotangents, while with m ≥ 2 an exact dx of such a channel is as large as they "
                "are (a constant channel's is gamma/sqrt(eps)·(dy − mean(dy))) and beyond float16, and the "
                "property rejects the case. Measured over 3000 float16 draws per property "
                "(cases, min_count 1; two_pass, linen, nnx): 345, 345, 330 fail in the region, every one of one "
                "value per channel, and none passes there (the other 623, 623, 591 in it, all m ≥ 2, have an "
                "exact dx beyond float16); outside it fail only 2 and 3 draws of linen and nnx, all in "
                "flax-fast-variance-offset's region (|mean|/std ≥ 3000); a second run (two_pass, 1500 draws per "
                "property): 161 fail, all in it, none passes in it. The largest passing cotangent is 65200, the "
                "smallest failing 66621. bfloat16 (range 3.4e38; 1000 draws per property, all pass, cotangents "
                "up to 1.7e8) and float32 input are unaffected"),
        region=_flax_fp16_dx_cotangent_overflows,
        witness=Case(dtype="float16", shape=(1, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=1e-11, new_batch_weight=0.0),
        witness_property="gradients",
        advice="in float16 training where a batch can hold one value per channel keep eps ≥ "
               "(max|dy|·|gamma|/65504)², or give BatchNorm float32 input (linen: x.astype(float32); nnx: also "
               "dtype=float32, as nnx casts x to the layer's dtype, flax/nnx/nn/normalization.py:385): the two "
               "cotangents then add in float32 and dx is 0"),
    Divergence(
        id="jax-scratch-4d-reduces-n-w-c",
        implementations=("jax.scratch",),
        properties=("train_forward", "batch_stats", "running_stats", "state_after_calls", "gradients",
                    "affine_invariance", "output_moments", "dx_sums_zero"),
        reason=("the book's JAX layer is NHWC but reduces over axes (0, 2, 3), copied from the NCHW "
                "frameworks: over N, W and C, one mean and variance per row H, not per channel. The "
                "output is exactly gamma_c·(x − mean_h)/sqrt(var_h + eps) + beta_c (to 1e-15, "
                "tests/test_jax_findings.py) and the moving statistics become (1, H, 1, C) arrays; "
                "inference from per-channel statistics and batch permutation are unaffected. Identical "
                "to batch norm only for C = 1 and H = 1 (witness: (4, 2, 3, 2), output off by 0.312, "
                "9.6e13× the bound; running stats hold 6 values for 2 channels)"),
        region=lambda c, p: c.ndim == 4 and (c.channels > 1 or c.shape[2] > 1),
        witness=Case(dtype="float64", shape=(4, 2, 3, 2), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="in the book's JAX layer reduce over axes (0, 1, 2) for NHWC input"),
    # --- jax.stax, haiku, equinox ---------------------------------------------------------
    Divergence(
        id="stax-fast-variance-offset",
        implementations=("jax.stax",),
        properties=_FORWARD,
        reason=("stax.BatchNorm normalizes with jax.nn.standardize(x, axis, epsilon) "
                "(jax/example_libraries/stax.py:137), whose default algorithm=\"fast\" computes "
                "var = E[x²] − E[x]², clipped at 0 (jax/_src/nn/functions.py:697-707): the same loss of "
                "~4·u·(|mean|/std)² as Flax's fast variance, in the same region (float32/float64, "
                "max |mean|/sqrt(var + eps) > 3). witness: float32, |mean|/std ≈ 1e3: output off by 0.092, 102× "
                "the bound, as Flax's; float64 fails alike from ~10: 2.6× on golden vector train-f64-offset1e2"),
        region=lambda c, p: _offset_ratio(c, p, True) > 3.0,
        witness=Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=1.0),
        witness_property="train_forward",
        advice="center the data before stax.BatchNorm, or use a layer with a two-pass variance"),
    Divergence(
        id="haiku-fast-variance-unclipped",
        implementations=("haiku",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("hk.BatchNorm computes var = mean(x²) − mean(x)² (haiku/_src/batch_norm.py:170-181) and, "
                "unlike Flax and jax.nn.standardize, does not clip it at 0: besides the loss of "
                "~4·u·(|mean|/std)² (Flax's region: max |mean|/sqrt(var + eps) > 3 for the output, "
                "|mean|/std > 1 for the moving averages), a channel of (near) zero variance gets "
                "var̂ < 0 and rsqrt(var̂ + eps) (batch_norm.py:204) is NaN once −var̂ > eps, and the "
                "moving variance turns negative. witness: float32, a constant channel, eps 1e-7: after a·x + b "
                "the output is NaN where the oracle has 0.069; float64 golden vector train-f64-offset1e2: output "
                "2.6× the bound"),
        region=lambda c, p: (_offset_ratio(c, p, True) > 3.0 if p in _FORWARD else _offset_ratio(c, p, False) > 1.0),
        witness=Case(dtype="float32", shape=(3, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-7, new_batch_weight=0.0),
        witness_property="affine_invariance",
        advice="center the data before hk.BatchNorm; a constant channel with a small eps gives NaN"),
    Divergence(
        id="haiku-zero-debias-decay-near-one",
        implementations=("haiku",),
        properties=("running_stats", "state_after_calls"),
        reason=("Haiku's moving averages are zero-debiased: average = hidden/(1 − decay^counter) "
                "(haiku/_src/moving_averages.py:123-127), decay converted to the input's dtype "
                "(moving_averages.py:117), counter int32. With decay_rate 1 (new-batch weight 0, or a "
                "weight that rounds 1 − w to 1 in the dtype: w < 3e-8 in float32) the divisor is 0 and "
                "the moving averages are NaN after the first update, whatever they held (witness: "
                "float64, w 0: running mean NaN where the oracle has -3.58); decay 1 is outside Haiku's "
                "documented [0, 1) (moving_averages.py:57). For 0 < w ≲ 40/counter the divisor is not 1 "
                "even for a long-trained layer (counter ≤ 2^31 − 1), so the update weighs the batch by "
                "(1 − d)/(1 − d^(t+1)), not 1 − d. Region: fl(1 − w) = 1 in the dtype, or "
                "fl(1 − w)^(2^30) > 1e-20"),
        region=lambda c, p: _decay(c) == 1.0 or _decay(c) ** (2 ** 30) > 1e-20,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats",
        advice="use decay_rate < 1: a frozen moving average (decay 1) is NaN in Haiku"),
    Divergence(
        id="equinox-batch-momentum-one-nan",
        implementations=("equinox.batch",),
        properties=("infer_forward", "running_stats", "state_after_calls"),
        reason=("eqx.nn.BatchNorm(mode=\"batch\") keeps hidden averages from (0, 1) and reads "
                "hidden/(1 − momentum^counter) in inference (equinox/nn/_batch_norm.py:249-251): with "
                "momentum 1 (new-batch weight 0, or any w < 1.1e-16, for which 1 − w rounds to 1) the "
                "divisor is 0 once counter > 0, and inference reads 0/0 = NaN for the mean and 1/0 = inf "
                "for the variance of a fresh layer, NaN for a loaded one (witness: float64, w 0: running "
                "mean NaN after one step). Equinox documents momentum in (0, 1) (_batch_norm.py:117-118). "
                "The docstring says inference uses the \"unbiased variance\" (_batch_norm.py:47-48); the "
                "variance kept is the biased one (_batch_norm.py:213, probes: biased)"),
        region=lambda c, p: 1.0 - c.new_batch_weight == 1.0,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats",
        advice="use momentum < 1 with mode='batch'"),
    Divergence(
        id="equinox-ema-normalizes-with-moving-averages",
        implementations=("equinox.ema",),
        properties=("train_forward", "gradients", "affine_invariance", "output_moments", "dx_sums_zero"),
        reason=("eqx.nn.BatchNorm(mode=\"ema\"), what a layer built without mode is (with a warning, "
                "_batch_norm.py:130-137), normalizes a training batch with the updated moving averages "
                "(1 − momentum)·batch + momentum·running, not with the batch statistics "
                "(equinox/nn/_batch_norm.py:235-240, 264); only the first training call of a fresh layer "
                "uses the batch statistics (ema_first_time_index, :238-239). After a checkpoint is "
                "loaded, the training output, its gradients (through the moving averages) and the "
                "invariances of batch norm hold only for new-batch weight 1. witness: float64, w 0.1, running "
                "statistics set: output off by 4.17, 1.7e15× the bound"),
        region=lambda c, p: c.new_batch_weight != 1.0,
        witness=Case(dtype="float64", shape=(8, 2), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="use mode='batch' (Equinox recommends it); mode='ema' is not batch norm in training"),
    # --- data-parallel (flax.linen.*, flax.nnx.*) -----------------------------------------
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
    # --- whole BN-LeNet (equiv lockstep) --------------------------------------------------
    NetFinding(
        id="jax-scratch-4d-reduces-n-w-c", implementations=("jax.scratch",),
        dtypes=("float64", "float32"), data="any", where=(1, "act", "bn1"),
        reason=("the book's JAX layer normalizes NHWC conv outputs per row H over (N, W, C) instead of "
                "per channel (equiv.known); bn1's output differs at step 1 and its moving statistics "
                "become (1, 24, 1, 6) arrays, which cannot be compared with 6 per-channel values.")),
    NetFinding(
        id="equinox-ema-normalizes-with-moving-averages", implementations=("equinox.ema",),
        dtypes=("float64", "float32"), data="any", where=(1, "act", "bn1"),
        reason=("eqx.nn.BatchNorm(mode=\"ema\"), what a layer built without mode is, normalizes a training "
                "batch with 0.01·batch + 0.99·running statistics, not the batch's (equinox/nn/_batch_norm.py:"
                "235-240, 264; equiv.known): from the shared initialization (running statistics (0, 1)) bn1's "
                "output is off by 0.876 relative at step 1 (seed 3, batch 16, both dtypes; conv1 within "
                "tolerance), and the loss by 0.38, the parameters by 2.4 over 5 steps. mode=\"batch\" "
                "(equinox.batch) agrees with the reference to 1.5e-14 (float64) / 4.6e-6 (float32).")),
    # --- the book's BN-LeNet code, beyond its BN layers -----------------------------------
    BookNote(
        id="book-jax-conv-pads-same", implementations=("flax.linen", "jax.scratch"),
        reason=("the book's JAX tab writes nn.Conv(6, kernel_size=(5, 5)) without padding, and flax.linen.Conv pads "
                "'SAME' by default: its BN-LeNet has a 28×28 conv1 output and fc1 fan-in 16·7·7 = 784, not 256 as "
                "in the other tabs (tests/test_lockstep_jax.py builds the chapter's nn.Sequential and measures the "
                "(784, 120) kernel). equiv's JAX net uses padding='VALID', the network of the other tabs.")),
]

# --- layer options (equiv.options) on flax.linen ----------------------------------------------
_NO_F32 = {"force_float32_reductions": False}
OPTIONS = [
    OptionDivergence(
        id="flax-no-float32-reductions-fast-variance",
        implementations=("flax.linen",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("with force_float32_reductions=False _compute_stats skips the float32 promotion "
                "(flax/linen/normalization.py:111-114; flax 0.12.8) and the default fast variance E[x²] − E[x]² "
                "(:139-142) runs in float16/bfloat16, losing ~u·(|mean|/std)² of the variance with their u "
                "(2^-11, 2^-8), as float32 loses its own (flax-fast-variance-offset); with the default (True) "
                "they are reduced in float32 and pass up to |mean|/std ≈ 300. Measured (16 × 2, 3 seeds): "
                "training output beyond the bound from |mean|/std ≈ 11 (bfloat16) and ≈ 100 (float16), dx "
                "alike; region: the float32 rule (> 3 for the output and gradients, > 1 for the statistics). "
                "Witness (bfloat16, |mean|/std ≈ 90): the variance vanishes and the output is off by 656, 111× "
                "the bound (force_float32_reductions=True: 0.0018 of it; float16 on the same data: 580×, dx NaN); "
                "flax.linen.two_pass passes there (0.0018)"),
        region=under(_NO_F32, _low_precision_fast_variance),
        witness=Case(dtype="bfloat16", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=2.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=1.0, options=_NO_F32),
        witness_property="train_forward",
        advice="leave force_float32_reductions=True (the default) with float16/bfloat16 input, or set "
               "use_fast_variance=False"),
    OptionDivergence(
        id="flax-no-float32-reductions-fp16-square-overflow",
        implementations=("flax.linen", "flax.linen.two_pass"),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("with force_float32_reductions=False the squares of the variance are taken in float16 "
                "(flax/linen/normalization.py:111-114, _abs_sq at :139 or :145-146): x² (fast variance) or "
                "(x − mean)² (use_fast_variance=False) ≥ 65520 for |x| or |x − mean| ≥ 256 is inf, the "
                "variance inf, rsqrt 0 and the output beta (or NaN where E[x]² overflows too); float32 "
                "reductions (the default) pass. Witness (float16, std ≈ 100, max |x| 656): the training output "
                "is 0, off by 0.755, 59× the bound, for both (force_float32_reductions=True: 0.09 of it); dx "
                "27× the bound"),
        region=under(_NO_F32, _fp16_square_overflows),
        witness=Case(dtype="float16", shape=(16, 2), seed=0, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=1.0, options=_NO_F32),
        witness_property="train_forward",
        advice="leave force_float32_reductions=True (the default) with float16 input whose values or deviations "
               "reach 256"),
]

FINDINGS += OPTIONS
