"""Known divergences of the conversion routes (equiv.routes): documented findings in the shape of
equiv.known's (a region of states where each shows, a witness state in it, the measured error, the
source line responsible). The route properties leave each region out; every witness runs as a
strict xfail (tests/test_routes_torch.py), so a release that fixes the behaviour turns it red.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from equiv.dtypes import MAX_VALUE
from equiv.routes.states import FoldState


@dataclass(frozen=True)
class RouteDivergence:
    id: str
    routes: tuple             # route names it applies to
    layers: tuple             # "conv", "linear"
    reason: str               # what differs and why, with the measured error on the witness
    region: Callable          # (FoldState) -> bool: the states where it shows
    witness: FoldState        # one state in the region
    witness_check: str = "folded"   # what fails on the witness: the folded output against the oracle
    advice: str = ""


def _fold_intermediates_overflow(state):
    """float16, and one of the values the fold computes in float16 beyond its range (less half an
    ulp of margin): rsqrt(var + eps), s = gamma·rsqrt, W·s, (b − mean)·rsqrt, (b − mean)·s."""
    if state.dtype != "float16":
        return False
    r = 1 / np.sqrt(state.running_var + state.eps)
    s = np.abs(state.gamma) * r
    b = np.zeros_like(r) if state.b is None else state.b
    dm = np.abs(b - state.running_mean)
    w_max = np.abs(state.w).reshape(len(r), -1).max(axis=1)
    top = max(float(v.max()) for v in (r, s, w_max * s, dm * r, dm * s))
    return top >= MAX_VALUE["float16"] * (1 - 2.0 ** -12)


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

KNOWN = [
    RouteDivergence(
        id="torch-fold-linear-fp16-scale-overflow",
        routes=("torch.builtin+fuse_linear_bn_eval",) + _FOLDERS,
        layers=("linear",),
        reason=(_WHY + "torch/nn/utils/fusion.py:189, bn_scale = bn_w * torch.rsqrt(bn_rv + bn_eps), then "
                "linear_w * bn_scale at :191. Witness: float16 Linear(8, 4) → BatchNorm1d, channel 1 dead "
                "(running variance 1e-8, 0 in float16) with gamma −778 (s = −2.46e5): the folded weights of "
                "channel 1 are ±inf, its bias inf, its outputs NaN, where the oracle gives −97.6 … 95.8 and eager "
                "torch stays within 0.015× its bound (largest error 12.9 of the whole output, amplified by s)"),
        region=_fold_intermediates_overflow,
        witness=FoldState(layer="linear", kind="dead_large_gamma", dtype="float16", seed=1, bias=True),
        advice=_ADVICE),
    RouteDivergence(
        id="torch-fold-conv-fp16-scale-overflow",
        routes=("torch.builtin+fuse_conv_bn_eval",) + _FOLDERS,
        layers=("conv",),
        reason=(_WHY + "torch/nn/utils/fusion.py:91, bn_var_rsqrt = torch.rsqrt(bn_rv + bn_eps), and :98, "
                "conv_w * (bn_w * bn_var_rsqrt). Witness: float16 Conv2d(3, 4, 3) → BatchNorm2d, channel 0 dead "
                "(running variance 0) with gamma 896 (s = 2.8e5): the folded weights of channel 0 are ±inf and "
                "its outputs NaN, where the oracle gives −466 … 417 and eager torch stays within 0.020× its bound"),
        region=_fold_intermediates_overflow,
        witness=FoldState(layer="conv", kind="dead_large_gamma", dtype="float16", seed=0, bias=True),
        advice=_ADVICE),
]


def excluded(route_name, state):
    """The id of the documented finding whose region holds ``state`` on this route, or None."""
    for d in KNOWN:
        if route_name in d.routes and state.layer in d.layers and d.region(state):
            return d.id
    return None
