"""A convolution or linear layer followed by batch normalization in inference, and the layer that
folding the normalization into it gives, written as the math.

Per output channel o, with the running statistics (mean_o, var_o) and the affine (gamma_o, beta_o):

    z        = W · x + b                            (conv2d or linear; b = 0 without a bias)
    y        = gamma · (z − mean) / sqrt(var + eps) + beta
    s        = gamma / sqrt(var + eps)              (the fold's per-channel scale)
    W'       = W · s                                (each output channel's weights scaled by s_o)
    b'       = (b − mean) · s + beta
    y        = W' · x + b'                          (the folded layer: the same y, exactly)

Conv2d: NCHW input, weights (C_out, C_in, kh, kw), groups = 1, zero padding, a stride per axis
(cross-correlation, as every framework's "convolution"). Linear: input (N, C_in), weights
(C_out, C_in). Everything in float64.
"""
import numpy as np

from reference.batch_norm import batch_norm_infer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    Float64Array = NDArray[np.float64]


def _f64(a: "ArrayLike") -> "Float64Array":
    return np.asarray(a, dtype=np.float64)


def _pair(v: "int | tuple[int, int]") -> "tuple[int, int]":
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv2d(x: "ArrayLike", w: "ArrayLike", b: "ArrayLike | None" = None, *, stride: "int | tuple[int, int]" = 1,
           padding: "int | tuple[int, int]" = 0) -> "Float64Array":
    """y[n, o, i, j] = Σ_{c, p, q} w[o, c, p, q] · x_pad[n, c, i·sh + p, j·sw + q] + b[o]."""
    x, w = _f64(x), _f64(w)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = w.shape[2:]
    patches = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    y = np.einsum("ncijpq,ocpq->noij", patches, w)          # patches: (N, C_in, H_out, W_out, kh, kw)
    return y if b is None else y + _f64(b).reshape(1, -1, 1, 1)


def linear(x: "ArrayLike", w: "ArrayLike", b: "ArrayLike | None" = None) -> "Float64Array":
    """y[n, o] = Σ_c w[o, c] · x[n, c] + b[o]."""
    y = _f64(x) @ _f64(w).T
    return y if b is None else y + _f64(b)


def fold_scale(gamma: "ArrayLike", running_var: "ArrayLike", *, eps: float) -> "Float64Array":
    """s = gamma / sqrt(var + eps), one per output channel."""
    return _f64(gamma) / np.sqrt(_f64(running_var) + eps)


def fold(w: "ArrayLike", b: "ArrayLike | None", gamma: "ArrayLike", beta: "ArrayLike", running_mean: "ArrayLike",
         running_var: "ArrayLike", *, eps: float) -> "tuple[Float64Array, Float64Array]":
    """The folded weights and bias (W', b'): W'[o] = W[o]·s[o], b' = (b − mean)·s + beta."""
    w = _f64(w)
    s = fold_scale(gamma, running_var, eps=eps)
    b = np.zeros(w.shape[0]) if b is None else _f64(b)
    return w * s.reshape((-1,) + (1,) * (w.ndim - 1)), (b - _f64(running_mean)) * s + _f64(beta)


def conv_bn_infer(x: "ArrayLike", w: "ArrayLike", b: "ArrayLike | None", gamma: "ArrayLike", beta: "ArrayLike",
                  running_mean: "ArrayLike", running_var: "ArrayLike", *, eps: float, stride: "int | tuple" = 1,
                  padding: "int | tuple" = 0) -> "Float64Array":
    """Conv2d, then BatchNorm2d in inference (unfolded)."""
    z = conv2d(x, w, b, stride=stride, padding=padding)
    return batch_norm_infer(z, gamma, beta, running_mean, running_var, eps=eps, axis=1)


def linear_bn_infer(x: "ArrayLike", w: "ArrayLike", b: "ArrayLike | None", gamma: "ArrayLike", beta: "ArrayLike",
                    running_mean: "ArrayLike", running_var: "ArrayLike", *, eps: float) -> "Float64Array":
    """Linear, then BatchNorm1d in inference (unfolded)."""
    return batch_norm_infer(linear(x, w, b), gamma, beta, running_mean, running_var, eps=eps, axis=1)
