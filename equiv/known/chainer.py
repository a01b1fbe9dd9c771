"""Chainer's documented findings: chainer.links.BatchNormalization (7.8.1, NumPy on the CPU). Lines cited
are chainer/functions/normalization/batch_normalization.py (F)."""
from equiv.known._regions import (
    _FORWARD,
    _fp16_channel_sum_overflows,
    _fp16_eps_vanishes,
    _fp16_sum_of_squares_overflows,
)
from equiv.known.base import Divergence
from equiv.strategies import Case

FINDINGS = [
    Divergence(
        id="chainer-fp16-var-eps-underflow",
        implementations=("chainer.links",),
        properties=_FORWARD,
        reason=("float16: the layer computes in promote_types(x.dtype, gamma.dtype) = float16 (F:33) and forms "
                "1/sqrt(var + eps) there (F:39-41); an eps below 2.98e-8 rounds to 0 and a zero-variance "
                "channel (a batch of one, a constant channel) gives (x − mean)·inf = 0·inf = NaN (F:827-828) "
                "where the exact output is beta (witness: eps 1e-8, output NaN, oracle beta)"),
        region=_fp16_eps_vanishes,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.1),
        witness_property="train_forward",
        advice="in float16 use eps ≥ 6e-8 (the default 2e-5 is safe), or run BatchNorm in float32"),
    Divergence(
        id="chainer-fp16-sum-overflow",
        implementations=("chainer.links",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16: the batch mean is x.mean(axis, dtype=float16) (F:87), NumPy's sum in float16, which is "
                "inf once a channel's |Σ x| passes 65504 although the mean is representable; the output, the "
                "gradients and the running statistics become inf or NaN (witness: 12 values near 6400, Σ x ≈ "
                "7.7e4, batch mean inf where the oracle has 6414.7)"),
        region=_fp16_channel_sum_overflows,
        witness=Case(dtype="float16", shape=(1, 1, 3, 4), seed=0, log10_scale=0.0,
                     log10_offset=3.4771212547196626, constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="batch_stats",
        advice="run BatchNorm in float32 (or keep a channel's |Σ x| per batch below 65504)"),
    Divergence(
        id="chainer-fp16-square-overflow",
        implementations=("chainer.links",),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("float16: the batch variance is x.var(axis, dtype=float16) (F:88), whose Σ (x − mean)² is "
                "summed in float16 and is inf once it passes 65504; 1/sqrt(inf) = 0 collapses the output to beta, "
                "the gradient to 0 and the running variance to inf, or NaN (0·inf) with new-batch weight 0 "
                "(witness: 5 values of std 100, running variance NaN where the oracle has 1.63)"),
        region=_fp16_sum_of_squares_overflows,
        witness=Case(dtype="float16", shape=(5, 1), seed=0, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats",
        advice="run BatchNorm in float32 (or keep a float16 channel's Σ (x − mean)² per batch below 65504)"),
]
