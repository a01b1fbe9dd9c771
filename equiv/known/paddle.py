"""Paddle's documented findings: paddle.builtin (and its paths) and its whole BN-LeNet."""
from equiv.known._regions import _eps_float32, _f32_gap
from equiv.known.base import Divergence, NetFinding
from equiv.strategies import Case

FINDINGS = [
    # --- paddle (paddle.builtin and its paths) -----------------------------------------
    Divergence(
        id="paddle-eps-float32",
        implementations=("paddle.builtin",),
        properties=("train_forward", "infer_forward", "gradients", "affine_invariance", "output_moments"),
        reason=("Paddle's batch-norm kernels take epsilon as a C++ float (BatchNormKernel and "
                "BatchNormInferKernel: `float epsilon`, paddle/include/paddle/phi/kernels/batch_norm_kernel.h:32 "
                "and :51 in the 3.3.1 wheel; phi::BatchNormKernel forms (saved_variance + epsilon) and "
                "(var + epsilon) with it, paddle/phi/kernels/cpu/batch_norm_kernel.cc), so a float64 layer "
                "normalizes with var + float32(eps): eps 0.1 is 0.10000000149, and where eps is not "
                "negligible against the variance the float64 output and gradients are float32-accurate. "
                "Witness: float64, eps 0.1: inference output off by 1.78e-10, 9.0e4× the bound; training "
                "output off by 9.85e-10, 1.5e5×; dx off by 4.31e-9, 3.3e4×. float32 is exact here"),
        region=_eps_float32,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="infer_forward",
        advice="in a float64 Paddle layer use an eps that float32 holds exactly (a power of two), or expect "
               "float32-accurate outputs"),
    Divergence(
        id="paddle-momentum-float32",
        implementations=("paddle.builtin",),
        properties=("running_stats", "state_after_calls"),
        reason=("the kernels take momentum as a C++ float (`float momentum`, "
                "paddle/include/paddle/phi/kernels/batch_norm_kernel.h:31) and update "
                "running·momentum + batch·(1. − momentum) (paddle/phi/kernels/cpu/batch_norm_kernel.cc): "
                "momentum 0.9 is 0.89999998, so the new batch weighs 1 − float32(0.9) = 0.10000002384 "
                "(measured, tests/test_paddle_findings.py); float64 running statistics are float32-accurate, "
                "as mxnet.gluon's and ONNX's (witness: float64, weight 0.1, running mean off by 3.29e-8, "
                "9.4e6× the bound)"),
        region=lambda c, p: c.dtype == "float64" and _f32_gap(1.0 - c.new_batch_weight) > 0,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.1),
        witness_property="running_stats",
        advice="expect Paddle's running statistics accurate to float32 only, even in a float64 layer"),
    # --- whole BN-LeNet (equiv lockstep) --------------------------------------------------
    NetFinding(
        id="paddle-float32-eps-momentum", implementations=("paddle.builtin",),
        dtypes=("float64",), data="any", where=(1, "act", "bn1"),
        reason=("Paddle's kernels take eps and momentum as C++ floats (paddle-eps-float32, "
                "paddle-momentum-float32): a float64 net normalizes with float32(1e-5) (bn1's output off by "
                "5.2e-12 relative at step 1 against the tolerance 8.2e-13, seed 3) and weighs the new batch by "
                "0.10000002384 (bn1.running_mean off by 2.4e-7); against a reference given float32(eps) and "
                "1 − float32(0.9) the 5-step float64 lockstep agrees to 6.3e-14 (tests/test_lockstep_paddle.py).")),
]
