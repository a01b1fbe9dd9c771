"""Chainer's documented findings: chainer.links.BatchNormalization (7.8.1, NumPy on the CPU). Lines cited
are chainer/functions/normalization/batch_normalization.py (F)."""
from equiv.known._regions import _FORWARD, _fp16_eps_vanishes
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
]
