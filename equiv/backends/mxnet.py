"""MXNet's backend: conversions shared by the mxnet adapters, and the process's mxnet setup.

Both adapters run with the book's NumPy semantics (``setup()``: ``npx.set_np()``, set on import of
``equiv.book.d2l_mxnet`` too): arrays are ``mxnet.np.ndarray`` on the CPU.
"""
import numpy as onp
from mxnet import np, npx


def setup():
    """The book's NumPy semantics, process-wide (``equiv.registry`` calls it before it loads mxnet code,
    the adapters as they build)."""
    npx.set_np()


DTYPES = ("float64", "float32", "float16")   # no bfloat16 in mxnet.np


def array(a, dtype):
    return np.array(onp.asarray(a, dtype=onp.float64), dtype=dtype)


def numpy(a):
    return onp.array(a.asnumpy(), dtype=onp.float64)
