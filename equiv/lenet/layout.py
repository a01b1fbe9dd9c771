"""The reference's layouts (PyTorch's) and those of the channels-last nets (Keras, Flax). NumPy only.

Conv weights (out, in, kh, kw) are kernels (kh, kw, in, out); dense weights (out, in) with
y = x W^T + b are kernels (in, out) with y = x K + b. fc1 needs more: a channels-last net
flattens pool2's output (N, 4, 4, 16) in (h, w, c) order, the reference its (N, 16, 4, 4) in
(c, h, w) order, so fc1's kernel rows are permuted (``FC1_ROWS``) and both nets compute the
same function. Activations go back the same way: 4-D NHWC to NCHW, "flat" to (c, h, w) order.
"""
import numpy as np

# FC1_ROWS[i]: the reference's (c, h, w) index of the i-th feature of the (h, w, c) flatten, so
# that a channels-last fc1 kernel is W.T[FC1_ROWS].
FC1_ROWS = np.arange(256).reshape(16, 4, 4).transpose(1, 2, 0).reshape(-1)


def param_to_channels_last(key, value):
    """A reference parameter (name of ``reference.lenet.PARAM_NAMES``) in the channels-last layout."""
    w = np.asarray(value, dtype=np.float64)
    if not key.endswith(".weight"):
        return w
    if w.ndim == 4:
        return w.transpose(2, 3, 1, 0)
    return w.T[FC1_ROWS] if key == "fc1.weight" else w.T


def param_from_channels_last(key, value):
    """The inverse of ``param_to_channels_last``: the reference's layout (biases, gamma, beta flat)."""
    k = np.asarray(value, dtype=np.float64)
    if not key.endswith(".weight"):
        return k.reshape(-1)
    if k.ndim == 4:
        return k.transpose(3, 2, 0, 1)
    if key == "fc1.weight":
        wt = np.empty_like(k)
        wt[FC1_ROWS] = k
        return wt.T
    return k.T


def activation_to_reference(name, value):
    """A channels-last activation of layer ``name`` in the reference's layout (a float64 copy)."""
    a = np.array(value, dtype=np.float64)
    if a.ndim == 4:
        return a.transpose(0, 3, 1, 2).copy()
    if name == "flat":
        ref = np.empty_like(a)
        ref[:, FC1_ROWS] = a
        return ref
    return a
