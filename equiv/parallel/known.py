"""Known divergences of data-parallel implementations, written as ``equiv.known``'s: the region of
inputs where each shows (``tests/test_parallel.py`` leaves it out and says so), a witness case that
shows it (run as a strict xfail: when a release fixes it the test turns red) and the measured
error. Regions and witnesses are ``ParallelCase``s: a global batch and its split over replicas."""
from dataclasses import dataclass
from typing import Callable

import numpy as np

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
]


def divergences(name):
    return [d for d in KNOWN if name in d.implementations]


def excluded(name, pc):
    """The documented divergence of ``name`` whose region holds ``pc``, or None."""
    return next((d for d in divergences(name) if d.region(pc)), None)
