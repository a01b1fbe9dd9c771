"""MLX's documented findings: mlx.builtin."""
from equiv.known._regions import (
    _FORWARD,
    _fp16_channel_sum_overflows,
    _fp16_sum_of_squares_overflows,
    _min_var_plus_eps,
)
from equiv.known.base import Divergence
from equiv.strategies import Case

FINDINGS = [
    # --- mlx -------------------------------------------------------------------------
    Divergence(
        id="mlx-fp16-rsqrt-vjp-overflow",
        implementations=("mlx.builtin",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16 (MLX 0.32.4, CPU): mlx.nn.BatchNorm normalizes with mx.rsqrt(var + eps) "
                "(mlx/nn/layers/normalization.py:414), whose vjp is −0.5·dy·(rsqrt(v)/v) with rsqrt(v)/v "
                "formed in the input dtype (mlx/primitives.cpp, Sqrt::vjp, one_over_x_root_x): v^{-3/2} "
                "overflows float16 (> 65504) for var + eps < 6.2e-4, although the gradient is representable; "
                "inf·0 then gives NaN in every dx of the channel (witness: var + eps ≈ 5.0e-4, dx NaN where "
                "the oracle has 18.9 against a bound of 15.7; float32, float64 and bfloat16 are finite)"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c) < 7e-4,
        witness=Case(dtype="float16", shape=(2, 1), seed=0, log10_scale=-1.0, log10_offset=None,
                     constant_channel=False, eps=1e-4, new_batch_weight=0.0),
        witness_property="gradients",
        advice="train MLX models with BatchNorm in float32 or bfloat16, or keep var + eps above 6.2e-4 in float16"),
    Divergence(
        id="mlx-fp16-eps-underflow",
        implementations=("mlx.builtin",),
        properties=_FORWARD,
        reason=("float16 (MLX 0.32.4, CPU): mx.rsqrt(var + self.eps) (mlx/nn/layers/normalization.py:414) adds "
                "the Python float eps as a weak scalar, in the input dtype (python/src/utils.cpp:82, :42 at "
                "v0.32.1): an eps below 2.98e-8 (half the "
                "smallest float16 subnormal) rounds away, and a zero-variance channel gives 0·rsqrt(0) = 0·inf "
                "= NaN where the exact output is beta (witness: eps 1e-8, output NaN, oracle 0.069). "
                "affine_invariance meets it on a·x + b: rounded to float16 a channel can become constant "
                "(eps 1e-10, a = 6.846, b = 2490.25: −1971·a + b = −11003.8 and −1970·a + b = −10996.9 both round "
                "to −11000, float16's spacing there being 8), and eps·a² = 4.7e-9 rounds to 0: var 0, rsqrt inf, "
                "the channel's 4 outputs NaN where y(x) has −0.061 (3) and 15.7)"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c, p) < 6e-8,
        witness=Case(dtype="float16", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.0),
        witness_property="train_forward",
        advice="in float16 MLX models keep eps ≥ 6e-8 (the default 1e-5 is fine)"),
    Divergence(
        id="mlx-fp16-var-square-overflow",
        implementations=("mlx.builtin",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16 (MLX 0.32.4, CPU): the batch variance is mx.var (mlx/nn/layers/normalization.py:374), "
                "sum(square(x − mean)) · (1/n) in the input dtype (mlx/ops.cpp, var()): the sum overflows float16 "
                "when Σ (x − mean)² > 65504 (one |x − mean| > 255.9 suffices) although the variance and the "
                "output are representable; the variance becomes inf, the "
                "output collapses to beta, the gradient of gamma to 0 and the running variance to inf "
                "(witness: std ~ 100, dgamma 0 where the oracle has −1.02, 17.9× the bound; torch.builtin "
                "accumulates float16 in float32)"),
        region=_fp16_sum_of_squares_overflows,
        witness=Case(dtype="float16", shape=(2, 1), seed=2, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="gradients",
        advice="keep Σ (x − mean)² per channel below 65504 in float16 MLX models (normalize inputs), "
               "or run BatchNorm in float32"),
    Divergence(
        id="mlx-fp16-mean-sum-overflow",
        implementations=("mlx.builtin",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16 (MLX 0.32.4, CPU): the batch mean is mx.mean (mlx/nn/layers/normalization.py:373), "
                "sum(x) · (1/n) with the sum in the input dtype (mlx/ops.cpp, mean(); line 2337 at v0.32.1): the sum "
                "overflows float16 when |Σ x| of a channel > 65504, although the mean is representable "
                "(11 values of 6411 sum to 70,521); the mean becomes inf, x − mean −inf, the variance inf, "
                "and the output, the gradients and the running statistics NaN (witness: mean 6411, batch "
                "mean inf, running mean NaN where the oracle has −3.58; mx.mean of the same values in "
                "float32 is 6412; torch.builtin accumulates float16 in float32)"),
        region=_fp16_channel_sum_overflows,
        witness=Case(dtype="float16", shape=(11, 1), seed=0, log10_scale=0.0, log10_offset=3.477,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="batch_stats",
        advice="keep |Σ x| per channel below 65504 in float16 MLX models (normalize inputs, or smaller "
               "batches), or run BatchNorm in float32"),
]
