"""Known divergences: documented findings, each with the region of inputs where it shows
and a witness case that shows it.

The property tests leave each region out (and say so), and every witness runs as a
strict ``xfail``: when a framework release fixes the behaviour the witness passes,
the strict xfail turns red, and this list must be updated. Array-api-tests keeps its
known failures the same way.
"""
from dataclasses import dataclass
from typing import Callable



import numpy as np

from equiv.strategies import Case


@dataclass(frozen=True)
class Divergence:
    id: str
    adapters: tuple           # adapter names it applies to
    properties: tuple         # property names whose region it removes
    reason: str               # what differs and why, with the measured error on the witness
    region: Callable          # (Case, property name) -> bool: the inputs where it shows
    witness: Case             # one case in the region
    witness_property: str     # the property that fails on the witness


def _min_var_plus_eps(case):
    red = (0,) + tuple(range(2, case.ndim))
    return min(float(case.batch(i).var(axis=red).min()) for i in range(case.steps)) + case.eps


def _scratch_square_overflows(case, prop):
    """(x − mean)² beyond float16's range in some batch (affine_invariance scales x by up to 10)."""
    if case.dtype != "float16":
        return False
    red = (0,) + tuple(range(2, case.ndim))
    reach = max(float(np.abs(x - x.mean(axis=red, keepdims=True)).max()) for x in map(case.batch, range(case.steps)))
    return reach * (10 if prop == "affine_invariance" else 1) > 255.0


def _scratch_dvar_overflows(case, prop):
    """|∂L/∂var| = |Σ dy·(x − mean)| / (2 (var + eps)^{3/2}) beyond float16's range, in some channel."""
    if case.dtype != "float16":
        return False
    red = (0,) + tuple(range(2, case.ndim))
    x = case.x
    centred = x - x.mean(axis=red, keepdims=True)
    dvar = np.abs((case.dy * centred).sum(axis=red)) / (2 * (x.var(axis=red) + case.eps) ** 1.5)
    return bool(dvar.max() > 65504 / 4)


_FORWARD = ("train_forward", "gradients", "affine_invariance", "output_moments", "dx_sums_zero",
            "batch_permutation")

KNOWN = [
    # --- torch -----------------------------------------------------------------------
    Divergence(
        id="torch-fp16-invstd-overflow",
        adapters=("torch.builtin",),
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
        adapters=("torch.scratch",),
        properties=_FORWARD,
        reason=("the book's code computes var + eps in the input dtype: in float16 an eps below "
                "2.98e-8 (half the smallest subnormal) rounds away, and a zero-variance channel "
                "gives 0/sqrt(0) = NaN where the exact output is beta (witness: eps 1e-8, output NaN)"),
        region=lambda c, p: c.dtype == "float16" and _min_var_plus_eps(c) < 6e-8,
        witness=Case(dtype="float16", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=None,
                     constant_channel=True, eps=1e-8, new_batch_weight=0.1),
        witness_property="train_forward"),
    Divergence(
        id="scratch-fp16-dvar-overflow",
        adapters=("torch.scratch",),
        properties=("gradients", "dx_sums_zero"),
        reason=("float16: the book's code differentiates through the variance with autograd, and the "
                "intermediate ∂L/∂var = −Σ dy·(x − mean) / (2 (var + eps)^{3/2}) overflows float16 "
                "(> 65504) when var + eps is small, although dx itself is representable; inf − inf then "
                "gives NaN in dx (witness: var + eps ≈ 1.4e-5, |dy| ≈ 7, dx all NaN; torch.builtin's "
                "fused kernel accumulates in float32 and is finite)"),
        region=_scratch_dvar_overflows,
        witness=Case(dtype="float16", shape=(2, 2), seed=323153949, log10_scale=-2.0, log10_offset=None,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.0),
        witness_property="gradients"),
    Divergence(
        id="scratch-fp16-square-overflow",
        adapters=("torch.scratch",),
        properties=_FORWARD + ("running_stats", "batch_stats"),
        reason=("float16: the book's code squares x − mean in float16, which overflows for "
                "|x − mean| > 255.9; the variance becomes inf, the output collapses to beta and the "
                "running variance to inf, or NaN (0·inf) with new-batch weight 0 (witness: std 100, "
                "running var NaN where the oracle has 1.0); torch.builtin accumulates in float32"),
        region=_scratch_square_overflows,
        witness=Case(dtype="float16", shape=(2, 1), seed=2, log10_scale=2.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="running_stats"),
    # --- tensorflow (tf.keras, tf.scratch) -------------------------------------------
    # --- jax / flax (flax.linen, flax.linen.two_pass, flax.nnx, jax.scratch) ----------
    # --- mxnet (mxnet.gluon, mxnet.scratch) -------------------------------------------
]


def divergences(adapter_name, property_name=None):
    return [d for d in KNOWN if adapter_name in d.adapters
            and (property_name is None or property_name in d.properties)]


def excluded(adapter_name, property_name, case):
    """The known divergence whose region holds this case, or None."""
    for d in divergences(adapter_name, property_name):
        if d.region(case, property_name):
            return d
    return None



