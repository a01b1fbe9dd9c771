"""mindspore.nn: ``mindspore.nn.BatchNorm1d`` (N, C) and ``BatchNorm2d`` (N, C, H, W), CPU, PyNative mode
(``equiv.backends.mindspore.setup``).

Mode, in MindSpore's words: ``cell.set_train(True)`` / ``set_train(False)``; a new cell is not
training (``Cell.training`` is False), so a plain call is inference. ``_BatchNorm`` hands the
operator ``momentum = 1.0 − momentum`` (mindspore/nn/layer/normalization.py:109): the layer's
momentum weighs the old value. The state is the Parameters ``gamma``, ``beta``, ``moving_mean``,
``moving_variance`` (checkpoint keys ``<cell>.gamma`` ... ``<cell>.moving_variance``).

The CPU primitive takes float16 and float32 input only (float64 is a TypeError); the adapter runs
float32, and float16 input into a float32 layer, the working float16 configuration: a layer built
with ``dtype=mindspore.float16`` never updates its running statistics on the CPU
(tests/test_mindspore_findings.py).
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from equiv.backends import mindspore as backend
from equiv.conventions import DECLARED
from equiv.core import Adapter, Unsupported


def _numpy(t):
    return np.array(t.asnumpy(), dtype=np.float64)


class MindSporeNN(Adapter):
    name, framework = "mindspore.nn", "mindspore"
    conventions = DECLARED[name]
    dtypes = ("float32", "float16")

    def build(self, momentum, eps):
        backend.setup()   # PyNative mode, CPU
        if not 0 < eps <= 1:   # "the eps must be in (0,1]", mindspore/ops/infer/ops_func_impl/batch_norm.cc:156
            raise Unsupported(f"{self.name}: the BatchNorm primitive accepts eps in (0, 1] only, not {eps:g}")
        cls = nn.BatchNorm1d if self.ndim == 2 else nn.BatchNorm2d
        self.layer = cls(self.num_features, eps=eps, momentum=momentum)   # float32 parameters

    def _x(self, a):
        return Tensor(np.asarray(a, dtype=np.float64).astype(self.dtype))

    def _params(self):
        layer = self.layer
        return dict(gamma=layer.gamma, beta=layer.beta, running_mean=layer.moving_mean,
                    running_var=layer.moving_variance)

    def set_state(self, gamma, beta, running_mean, running_var):
        values = dict(gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
        for k, p in self._params().items():
            p.set_data(Tensor(np.asarray(values[k], dtype=np.float32)))

    def get_state(self):
        return {k: _numpy(p) for k, p in self._params().items()}

    def forward_train(self, x):
        self.layer.set_train(True)
        return _numpy(self.layer(self._x(x)))

    def forward_infer(self, x):
        self.layer.set_train(False)
        return _numpy(self.layer(self._x(x)))

    def forward_default(self, x):
        return _numpy(self.layer(self._x(x)))

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        layer = self.layer
        layer.set_train(True)
        dyt = self._x(dy)

        def loss(xt):
            y = layer(xt)
            return (y * dyt).sum(), y

        step = ms.value_and_grad(loss, grad_position=0, weights=(layer.gamma, layer.beta), has_aux=True)
        (_, y), (dx, (dgamma, dbeta)) = step(self._x(x))
        return _numpy(y), _numpy(dx), _numpy(dgamma), _numpy(dbeta)
