"""mxnet.scratch: the book's MXNet ``batch_norm`` / ``BatchNorm`` (equiv/book/d2l_mxnet.py).

The book's layer hard-codes eps 1e-12 and momentum 0.1 (PyTorch's meaning: the weight of
the new batch). With that setting the adapter calls the layer itself; with any other it
calls the book's ``batch_norm`` function on the layer's arrays with the requested
setting, exactly as the layer's forward does. The mode is the book's:
``autograd.is_training()``, i.e. training inside ``autograd.record()`` /
``autograd.train_mode()``, prediction otherwise. The book's code updates the moving
statistics in its forward, so ``forward_train`` moves them (unlike gluon's layer).

MXNet refuses a subnormal Python scalar in an array operation ("Out of range value for
scalar", tests/test_mxnet_findings.py); a new-batch weight below 2.2e-308 is therefore
passed as 0.0, the nearest value MXNet takes (a change of less than 2.3e-308·|mean|).
"""
from mxnet import autograd

from equiv.backends import mxnet as backend
from equiv.backends.mxnet import DTYPES, array, numpy
from equiv.book import d2l_mxnet as book
from equiv.conventions import DECLARED
from equiv.core import Adapter

BOOK_EPS, BOOK_MOMENTUM = 1e-12, 0.1
MIN_NORMAL = 2.2250738585072014e-308


class MXNetScratch(Adapter):
    name, framework = "mxnet.scratch", "mxnet"
    conventions = DECLARED[name]
    dtypes = DTYPES

    def build(self, momentum, eps):
        backend.setup()
        self.momentum = momentum if abs(momentum) >= MIN_NORMAL else 0.0
        self.layer = book.BatchNorm(self.num_features, num_dims=self.ndim)
        self.layer.initialize()
        self.layer.cast(self.dtype)
        self.set_state(*(self.get_state()[k] for k in ("gamma", "beta", "running_mean", "running_var")))

    def _x(self, a):
        return array(a, self.dtype)

    def set_state(self, gamma, beta, running_mean, running_var):
        layer, shape = self.layer, self.layer.gamma.shape
        layer.gamma.set_data(self._x(gamma).reshape(shape))
        layer.beta.set_data(self._x(beta).reshape(shape))
        layer.moving_mean = self._x(running_mean).reshape(shape)
        layer.moving_var = self._x(running_var).reshape(shape)

    def get_state(self):
        layer = self.layer
        return {k: numpy(v).reshape(-1) for k, v in (
            ("gamma", layer.gamma.data()), ("beta", layer.beta.data()),
            ("running_mean", layer.moving_mean), ("running_var", layer.moving_var))}

    def _call(self, X):
        layer = self.layer
        if (self.eps, self.momentum) == (BOOK_EPS, BOOK_MOMENTUM):
            return layer(X)
        Y, layer.moving_mean, layer.moving_var = book.batch_norm(
            X, layer.gamma.data(), layer.beta.data(), layer.moving_mean, layer.moving_var,
            eps=self.eps, momentum=self.momentum)
        return Y

    def forward_train(self, x):
        with autograd.train_mode():
            return numpy(self._call(self._x(x)))

    def forward_infer(self, x):
        with autograd.predict_mode():
            return numpy(self._call(self._x(x)))

    def forward_default(self, x):
        return numpy(self.layer(self._x(x)))

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        layer = self.layer
        X = self._x(x)
        X.attach_grad()
        with autograd.record():
            Y = self._call(X)
        Y.backward(self._x(dy))
        return (numpy(Y), numpy(X.grad), numpy(layer.gamma.grad()).reshape(-1),
                numpy(layer.beta.grad()).reshape(-1))
