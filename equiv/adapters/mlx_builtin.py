"""mlx.builtin: ``mlx.nn.BatchNorm`` on MLX's CPU device (Linux: ``pip install mlx[cpu]``).

MLX is channel-last (``NC`` or ``NHWC``, mlx/nn/layers/normalization.py:291-295): 4-D arrays go
NCHW -> NHWC on the way in and back on the way out. The mode is ``module.train()`` /
``module.eval()``; a fresh module trains (mlx/nn/layers/base.py:64). ``mx.array`` of a float64
NumPy array is float32 unless a dtype is given: every array is built with the case's dtype. The
layer creates float32 parameters and buffers (``mx.ones``/``mx.zeros``); ``set_state`` replaces
them with arrays of the case's dtype, as loading a checkpoint of that dtype does. Gradients come
from ``mx.vjp`` of a function that sets the parameters and calls the module, as
``nn.value_and_grad`` does (mlx/nn/utils.py); the running statistics it assigns are kept, as in a
training step. Arrays are lazy: ``mx.eval`` realizes the output and the running statistics.
"""
import mlx.core as mx
import numpy as np
from mlx import nn

from equiv.backends import mlx as backend
from equiv.conventions import DECLARED
from equiv.core import Adapter

DTYPES = {"float64": mx.float64, "float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def numpy(a, nchw=False):
    """Float64 NumPy copy (exact; bfloat16 through float32); 4-D moved back to NCHW."""
    a = np.array(a.astype(mx.float64 if a.dtype == mx.float64 else mx.float32), dtype=np.float64)
    return a.transpose(0, 3, 1, 2) if nchw and a.ndim == 4 else a


class MLXBuiltin(Adapter):
    name, framework = "mlx.builtin", "mlx"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")

    def build(self, momentum, eps):
        backend.setup()   # the CPU device
        self.module = nn.BatchNorm(self.num_features, eps=eps, momentum=momentum)

    def _a(self, a, nhwc=False):
        a = np.asarray(a, dtype=np.float64)
        if nhwc and a.ndim == 4:
            a = a.transpose(0, 2, 3, 1)
        return mx.array(a, dtype=mx.float64).astype(DTYPES[self.dtype])

    def set_state(self, gamma, beta, running_mean, running_var):
        m = self.module
        m.weight, m.bias = self._a(gamma), self._a(beta)
        m.running_mean, m.running_var = self._a(running_mean), self._a(running_var)

    def get_state(self):
        m = self.module
        return dict(gamma=numpy(m.weight), beta=numpy(m.bias),
                    running_mean=numpy(m.running_mean), running_var=numpy(m.running_var))

    def _call(self, x, nhwc=True):
        m = self.module
        y = m(self._a(x, nhwc=nhwc))
        mx.eval(y, m.running_mean, m.running_var)
        return numpy(y, nchw=nhwc)

    def forward_train(self, x):
        self.module.train()
        return self._call(x)

    def forward_infer(self, x):
        self.module.eval()
        return self._call(x)

    def forward_default(self, x):
        return self._call(x)

    def forward_native(self, x):
        self.module.train()
        return self._call(x, nhwc=False)

    def train_step(self, x, dy):
        m = self.module
        m.train()
        weight, bias = m.weight, m.bias

        def call(x, w, b):
            m.weight, m.bias = w, b
            return m(x)

        (y,), (dx, dgamma, dbeta) = mx.vjp(call, [self._a(x, nhwc=True), weight, bias], [self._a(dy, nhwc=True)])
        m.weight, m.bias = weight, bias
        mx.eval(y, dx, dgamma, dbeta, m.running_mean, m.running_var)
        return numpy(y, nchw=True), numpy(dx, nchw=True), numpy(dgamma), numpy(dbeta)
