"""The folded layer's bound (equiv.tolerance_fold) tells correct folds from wrong ones: folds written
differently, computed in float32 with NumPy, pass it on every state kind; planted mistakes fail it."""
import numpy as np
import pytest

from equiv import tolerance_fold as tb
from equiv.routes.states import KINDS, FoldState
from equiv.tolerance import excess

F = np.float32


def _layer32(state, x, w):
    """The conv or linear in float32 (float32 products and sums)."""
    x, w = x.astype(F), w.astype(F)
    if state.layer == "linear":
        return x @ w.T
    p = state.padding
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::state.stride, ::state.stride]
    return np.einsum("ncijpq,ocpq->noij", win, w, dtype=F)


def _ch(v, ndim):
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def _torch_order(state, var_of=lambda s: s.running_var.astype(F), eps_in=True):
    """rsqrt(var + eps), s = gamma·rsqrt, W' = W·s, b' = (b − mean)·rsqrt·gamma + beta, all float32."""
    var = var_of(state)
    r = F(1) / np.sqrt(var + F(state.eps) if eps_in else var)
    s = state.gamma.astype(F) * r
    w = state.w.astype(F) * s.reshape((-1,) + (1,) * (state.w.ndim - 1))
    b = np.zeros_like(r) if state.b is None else state.b.astype(F)
    bias = (b - state.running_mean.astype(F)) * r * state.gamma.astype(F) + state.beta.astype(F)
    y = _layer32(state, state.x, w)
    return y + _ch(bias, y.ndim)


def _float64_then_rounded(state):
    from reference import conv_bn as cb
    w, b = cb.fold(state.w, state.b, state.gamma, state.beta, state.running_mean, state.running_var, eps=state.eps)
    y = _layer32(state, state.x, w.astype(F))
    return y + _ch(b.astype(F), y.ndim)


def _scale_after(state):
    """s·(W·x) + b': the layer with the original weights, then the scale."""
    r = F(1) / np.sqrt(state.running_var.astype(F) + F(state.eps))
    s = state.gamma.astype(F) * r
    b = np.zeros_like(r) if state.b is None else state.b.astype(F)
    bias = (b - state.running_mean.astype(F)) * s + state.beta.astype(F)
    z = _layer32(state, state.x, state.w)
    return z * _ch(s, z.ndim) + _ch(bias, z.ndim)


def _unbiased(state):
    """The running variance read as biased and made unbiased (× m/(m − 1), m = 32): a convention slip."""
    return _torch_order(state, var_of=lambda s: (s.running_var * (32 / 31)).astype(F))


CORRECT = {"torch order": _torch_order, "float64 then rounded": _float64_then_rounded, "s·(W·x)": _scale_after}
WRONG = {"eps dropped": lambda s: _torch_order(s, eps_in=False), "unbiased swap": _unbiased,
         # 1/(sqrt(var) + eps): the var that gives it under the root, (sqrt(var) + eps)² − eps
         "eps outside the root": lambda s: _torch_order(
             s, var_of=lambda t: ((np.sqrt(t.running_var) + t.eps) ** 2 - t.eps).astype(F))}
STATES = [FoldState(layer=layer, kind=kind, dtype="float32", seed=seed, bias=seed % 2 == 0,
                    stride=1 + seed % 2 if layer == "conv" else 1, padding=seed // 2 % 2 if layer == "conv" else 0,
                    eps=1e-5 if kind.startswith("dead") or seed % 3 else 1e-3)
          for layer in ("conv", "linear") for kind in KINDS for seed in range(4)]


def _ratio(fold, state):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = fold(state).astype(np.float64)
    return excess(y, state.oracle(), tb.folded(state.x, state.w, state.b, **state.bn, **state.bound_args()))


@pytest.mark.parametrize("name", CORRECT)
def test_correct_folds_pass(name):
    worst = max(_ratio(CORRECT[name], s) for s in STATES)
    assert worst <= 1.0, f"{name}: {worst:.3g}× the bound"
    assert worst > 1e-3, "the bound is far looser than the error it bounds"


@pytest.mark.parametrize("name", WRONG)
def test_planted_folds_fail(name):
    failed = [s for s in STATES if _ratio(WRONG[name], s) > 1.0]
    assert failed, f"{name} passed every state"


def test_unfolded_bound_holds_the_scale_after_layer_too():
    """The unfolded bound (layer, then BatchNorm in float32) holds a float32 eager computation."""
    for s in STATES:
        z = _layer32(s, s.x, s.w) + (0 if s.b is None else _ch(s.b.astype(F), s.x.ndim))
        r = F(1) / np.sqrt(s.running_var.astype(F) + F(s.eps))
        y = (z - _ch(s.running_mean.astype(F), z.ndim)) * _ch(r, z.ndim) * _ch(s.gamma.astype(F), z.ndim) \
            + _ch(s.beta.astype(F), z.ndim)
        bound = tb.unfolded(s.x, s.w, s.b, **s.bn, **s.bound_args())
        assert excess(y.astype(np.float64), s.oracle(), bound) <= 1.0, s
