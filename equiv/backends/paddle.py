"""PaddlePaddle conversions shared by the paddle adapter and its paths (its backend).

Paddle creates a layer's parameters in the global default dtype (``paddle.get_default_dtype()``,
``_BatchNormBase.__init__``, paddle/nn/layer/norm.py:784-787); ``default_dtype`` sets it for the
construction only. Its CPU kernel is registered for float32 and float64 only: a float16 or
bfloat16 input is a RuntimeError (NotFound) "kernel ... not registered".
"""
import contextlib
import warnings

import numpy as np
import paddle

DTYPES = ("float64", "float32")


@contextlib.contextmanager
def default_dtype(dtype):
    old = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)
    try:
        yield
    finally:
        paddle.set_default_dtype(old)


@contextlib.contextmanager
def quiet():
    """_BatchNormBase.forward warns "When training, we now always track global mean and variance."
    on every training call (paddle/nn/layer/norm.py:885-888)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When training, we now always track")
        yield


def tensor(a, dtype, requires_grad=False):
    t = paddle.to_tensor(np.asarray(a, dtype=np.float64).astype(dtype))
    t.stop_gradient = not requires_grad
    return t


def numpy(t):
    return np.array(t.numpy(), dtype=np.float64)
