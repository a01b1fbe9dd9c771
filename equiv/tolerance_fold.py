"""Bounds for a convolution or linear layer with BatchNorm folded into it, and for the same two
layers run one after the other, derived from the operations each performs in the working precision
(unit roundoff u, underflow eta: equiv.dtypes), in the form of equiv.tolerance.

Notation per output channel o: s = gamma/sqrt(var + eps) exactly, a = |s|; per output element,
A = Σ_k |W_k|·|x_k| over the K = C_in·kh·kw terms of that element's dot product (a conv of |x| with
|W|; for linear K = C_in), g = growth(K) = 2 + sqrt(K) (equiv.tolerance: blocked or pairwise
accumulation; it also holds the output's own rounding).

The fold (torch.nn.utils.fusion.fuse_conv_bn_weights and every folder read so far) computes, each
operation rounded:

    r  = rsqrt(var + eps)   var + eps rounds (u relative, or an absolute eta below the normal range:
                            relative eta/(var + eps), which matters for eps 1e-5 in float16), the
                            root halves it, the (possibly vectorized) rsqrt adds ≤ 2u
    ŝ  = gamma · r          + u                   so |ŝ − s| ≤ e_s·a,  e_s = 4u + eta/(var + eps)
    W' = W · ŝ              + u                   |Ŵ' − W·s| ≤ (e_s + u)·a·|W|   (per weight)
    b' = (b − mean)·r·gamma + beta                four roundings: |b̂' − b'| ≤ (e_s + 4u)·a·|b − mean|
                                                  + u·|beta|
    y  = Σ_k Ŵ'_k x_k + b̂'   accumulation         ≤ g·u·(a·A + a·|b − mean| + |beta|) (first order)

so, with the safety factor K of equiv.tolerance (the only free constant):

    folded = K·[ (g·u + e_s + u)·a·A + (g·u + e_s + 4u)·a·|b − mean| + (g + 1)·u·|beta| + (K + 1)·eta ]

The unfolded layers (conv or linear, then BatchNorm in inference): z = W·x + b is off by
g·u·(A + |b|), which BatchNorm multiplies by a; BatchNorm on the exact z adds
equiv.tolerance.infer_forward(z, …), whose scale a·(|z| + |mean|) holds the same |mean|·a term:

    unfolded = K·g·u·a·(A + |b|) + infer_forward(z, gamma, beta, mean, var, eps)

Both hold the large terms a·A and a·|mean| at first order: a fold is neither allowed to be much
worse than eager nor required to be better; comparing the two implementations uses their sum.
The set of correct folds written differently (float64 then rounded, s·(W·x) order) and of wrong
ones (eps dropped, the unbiased variance) that this bound tells apart: tests/test_fold_tolerance.py.
"""
import numpy as np

from equiv.dtypes import UNDERFLOW, UNIT_ROUNDOFF
from equiv.tolerance import K, growth, infer_forward
from reference import conv_bn as cb


def _apply(layer, x, w, stride, padding):
    return cb.conv2d(x, w, stride=stride, padding=padding) if layer == "conv" else cb.linear(x, w)


def _channel(v, ndim):
    return np.asarray(v, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def _terms(w):
    w = np.asarray(w)
    return int(np.prod(w.shape[1:]))


def folded(x, w, b, gamma, beta, running_mean, running_var, *, eps, dtype, layer="conv", stride=1, padding=0):
    """Elementwise bound on |y_folded − y_oracle| for the layer with BatchNorm folded into it."""
    u, eta = UNIT_ROUNDOFF[dtype], UNDERFLOW[dtype]
    w = np.asarray(w, dtype=np.float64)
    b = np.zeros(w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
    big_a = _apply(layer, np.abs(np.asarray(x, dtype=np.float64)), np.abs(w), stride, padding)
    ch = lambda v: _channel(v, big_a.ndim)  # noqa: E731
    v = np.asarray(running_var, dtype=np.float64) + eps
    a = ch(np.abs(gamma) / np.sqrt(v))
    e_s = ch(4 * u + eta / v)
    g = growth(_terms(w))
    return K * ((g * u + e_s + u) * a * big_a + (g * u + e_s + 4 * u) * a * ch(np.abs(b - running_mean))
                + (g + 1) * u * ch(np.abs(beta)) + (_terms(w) + 1) * eta)


def unfolded(x, w, b, gamma, beta, running_mean, running_var, *, eps, dtype, layer="conv", stride=1, padding=0):
    """Elementwise bound on |y − y_oracle| for the layer and then BatchNorm in inference, unfolded."""
    u = UNIT_ROUNDOFF[dtype]
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    b = np.zeros(w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
    big_a = _apply(layer, np.abs(x), np.abs(w), stride, padding)
    z = _apply(layer, x, w, stride, padding) + _channel(b, big_a.ndim)
    a = _channel(np.abs(gamma) / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps), big_a.ndim)
    conv = K * growth(_terms(w)) * u * a * (big_a + _channel(np.abs(b), big_a.ndim))
    return conv + infer_forward(z, gamma, beta, running_mean, running_var, eps, dtype, axis=1)
