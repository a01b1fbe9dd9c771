"""torch.scratch: the book's PyTorch ``batch_norm`` / ``BatchNorm`` (equiv/book/d2l_torch.py).

The book's layer hard-codes eps 1e-5 and momentum 0.1. With that setting the adapter
calls the layer itself; with any other it calls the book's ``batch_norm`` function on
the layer's tensors with the requested setting, exactly as the layer's forward does.
The mode is the book's: training while gradients are enabled, prediction under
``torch.no_grad()``. What the adapter calls is one module, ``self.module`` (the layer, or
``batch_norm`` on its tensors), so an execution path wraps it as it wraps torch.builtin's.
"""
import torch

from equiv.backends import torch as backend
from equiv.backends.torch import devices, numpy, tensor
from equiv.book import d2l_torch as book
from equiv.conventions import DECLARED
from equiv.core import Adapter

BOOK_EPS, BOOK_MOMENTUM = 1e-5, 0.1


class BookCall(torch.nn.Module):
    """The book's layer with the book's setting; with another, the book's ``batch_norm`` on the
    layer's tensors with that setting, exactly as the layer's forward does."""

    def __init__(self, layer, eps, momentum):
        super().__init__()
        self.layer, self.eps, self.momentum = layer, eps, momentum
        self.plain = False    # True: the layer itself, whatever the setting (a user's plain call)

    def forward(self, X):
        layer = self.layer
        if self.plain or (self.eps, self.momentum) == (BOOK_EPS, BOOK_MOMENTUM):
            return layer(X)
        Y, layer.moving_mean, layer.moving_var = book.batch_norm(
            X, layer.gamma, layer.beta, layer.moving_mean, layer.moving_var,
            eps=self.eps, momentum=self.momentum)
        return Y


class TorchScratch(Adapter):
    name, framework = "torch.scratch", "torch"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")
    devices = devices()

    def build(self, momentum, eps):
        backend.setup()
        self.momentum = momentum
        self.layer = book.BatchNorm(self.num_features, num_dims=self.ndim)
        # self.module is what a path wraps; self.call stays the BookCall inside it
        self.module = self.call = BookCall(self.layer, self.eps, momentum)
        self.set_state(*(self.get_state()[k] for k in ("gamma", "beta", "running_mean", "running_var")))

    def _t(self, a, requires_grad=False):
        return tensor(a, self.dtype, self.device, requires_grad)

    def set_state(self, gamma, beta, running_mean, running_var):
        layer, shape = self.layer, self.layer.gamma.shape
        layer.gamma = torch.nn.Parameter(self._t(gamma).reshape(shape))
        layer.beta = torch.nn.Parameter(self._t(beta).reshape(shape))
        layer.moving_mean = self._t(running_mean).reshape(shape)
        layer.moving_var = self._t(running_var).reshape(shape)

    def get_state(self):
        layer = self.layer
        return {k: numpy(v).reshape(-1) for k, v in (
            ("gamma", layer.gamma), ("beta", layer.beta),
            ("running_mean", layer.moving_mean), ("running_var", layer.moving_var))}

    def _call(self, X):
        return self.module(X)

    def forward_train(self, x):
        with torch.enable_grad():
            return numpy(self._call(self._t(x)))

    def forward_infer(self, x):
        with torch.no_grad():
            return numpy(self._call(self._t(x)))

    def forward_default(self, x):
        # a plain call runs the book's layer with its own hard-coded eps and momentum
        self.call.plain = True
        try:
            return numpy(self.module(self._t(x)))
        finally:
            self.call.plain = False

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        layer = self.layer
        layer.zero_grad(set_to_none=True)
        xt = self._t(x, requires_grad=True)
        with torch.enable_grad():
            y = self._call(xt)
        y.backward(self._t(dy))
        return (numpy(y), numpy(xt.grad), numpy(layer.gamma.grad).reshape(-1),
                numpy(layer.beta.grad).reshape(-1))
