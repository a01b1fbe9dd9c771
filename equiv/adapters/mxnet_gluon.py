"""mxnet.gluon: ``mxnet.gluon.nn.BatchNorm`` (channel axis 1, as the canonical layout).

Mode, in gluon's words: training inside ``autograd.record()`` (or ``train_mode()``),
prediction otherwise. On the CPU the operator's forward never writes the running
statistics; its backward does (src/operator/nn/batch_norm.cc, BatchNormBackwardImpl,
"update running averages"), so ``forward_train`` leaves them as they were and only
``train_step`` moves them. For float16 input gluon keeps gamma, beta and the running
statistics in float32 (``_BatchNorm.cast``).
"""
from mxnet import autograd
from mxnet.gluon import nn

from equiv.backends import mxnet as backend
from equiv.backends.mxnet import DTYPES, array, numpy
from equiv.conventions import DECLARED
from equiv.core import Adapter


class MXNetGluon(Adapter):
    name, framework = "mxnet.gluon", "mxnet"
    conventions = DECLARED[name]
    dtypes = DTYPES

    def build(self, momentum, eps):
        backend.setup()
        # the batch weighs 1 − momentum: for a tiny w, 1 − fl(1 − w), not exactly w (the float32
        # momentum where float32 does not hold 1 − w is gluon-momentum-float32): report the weight applied
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        self.layer = nn.BatchNorm(axis=1, momentum=momentum, epsilon=eps, in_channels=self.num_features)
        self.layer.initialize()
        self.layer.cast(self.dtype)       # float16: parameters stay float32

    def _x(self, a):
        return array(a, self.dtype)

    def _params(self):
        layer = self.layer
        return dict(gamma=layer.gamma, beta=layer.beta, running_mean=layer.running_mean,
                    running_var=layer.running_var)

    def set_state(self, gamma, beta, running_mean, running_var):
        values = dict(gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
        for k, p in self._params().items():
            p.set_data(array(values[k], p.dtype))

    def get_state(self):
        return {k: numpy(p.data()) for k, p in self._params().items()}

    def forward_train(self, x):
        with autograd.train_mode():
            return numpy(self.layer(self._x(x)))

    def forward_infer(self, x):
        with autograd.predict_mode():
            return numpy(self.layer(self._x(x)))

    def forward_default(self, x):
        return numpy(self.layer(self._x(x)))

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        X = self._x(x)
        X.attach_grad()
        with autograd.record():
            y = self.layer(X)
        y.backward(self._x(dy))
        layer = self.layer
        return numpy(y), numpy(X.grad), numpy(layer.gamma.grad()), numpy(layer.beta.grad())
