"""tinygrad.builtin: ``tinygrad.nn.BatchNorm`` on tinygrad's CPU device.

The mode is tinygrad's global ``TRAINING`` context variable (``Context(TRAINING=1)``, or the
environment variable ``TRAINING=1``; tinygrad/helpers.py:237), read by the layer at every call
(tinygrad/nn/__init__.py:43 and 55); a plain call runs in inference mode. Tensors are lazy: the
running statistics are ``assign``-ed in the forward and realized here with the output, as a
training loop's ``realize`` or ``.numpy()`` does.

The layer creates float32 parameters and buffers (``Tensor.ones``/``zeros``); ``build`` and
``set_state`` replace them with tensors of the case's dtype, as loading a checkpoint of that dtype does.
Gradients come from ``Tensor.gradient`` of the output against ``dy``.

The CPU device compiles every kernel with clang, even with the LLVM renderer (its worker
programs are compiled with the CLANG renderer, tinygrad/runtime/ops_cpu.py:209-211): without a
``clang`` on PATH the adapter reports its framework as not installed, with the command to fix it.
tinygrad specializes every kernel on shape, eps and momentum (constants of the graph), so each
Hypothesis example schedules and compiles afresh: the adapter runs the smaller "compile" budget.
"""
import shutil

import numpy as np

if shutil.which("clang") is None:
    raise ImportError("tinygrad's CPU device compiles its kernels with clang, which is not on PATH "
                      "(apt-get install clang)")

from tinygrad import Context, Tensor, dtypes, nn  # noqa: E402

from equiv.conventions import DECLARED  # noqa: E402
from equiv.core import Adapter  # noqa: E402

DEVICE = "CPU"
DTYPES = {"float64": dtypes.float64, "float32": dtypes.float32}


def numpy(t):
    return np.array(t.numpy(), dtype=np.float64)


class TinygradBuiltin(Adapter):
    name, framework = "tinygrad.builtin", "tinygrad"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32")
    example_budget = "compile"       # a schedule and a clang compile per example (see above)

    def build(self, momentum, eps):
        with Context(DEV=DEVICE):
            self.module = nn.BatchNorm(self.num_features, eps=eps, momentum=momentum)
        # the layer's own float32 ones and zeros, in the adapter's dtype (a float64 layer would
        # otherwise assign float64 batch statistics to float32 buffers: tinygrad refuses)
        m = self.module
        self.set_state(*(numpy(t) for t in (m.weight, m.bias, m.running_mean, m.running_var)))

    def _t(self, a):
        return Tensor(np.asarray(a, dtype=np.float64).astype(self.dtype), device=DEVICE, dtype=DTYPES[self.dtype])

    def set_state(self, gamma, beta, running_mean, running_var):
        m = self.module
        m.weight, m.bias = self._t(gamma), self._t(beta)
        m.running_mean, m.running_var = self._t(running_mean).is_param_(False), self._t(running_var).is_param_(False)

    def get_state(self):
        m = self.module
        return dict(gamma=numpy(m.weight), beta=numpy(m.bias),
                    running_mean=numpy(m.running_mean), running_var=numpy(m.running_var))

    def _call(self, x, training):
        m = self.module
        with Context(TRAINING=training):
            y = m(self._t(x))
        Tensor.realize(y, m.running_mean, m.running_var)
        return numpy(y)

    def forward_train(self, x):
        return self._call(x, 1)

    def forward_infer(self, x):
        return self._call(x, 0)

    def forward_default(self, x):
        m = self.module
        y = m(self._t(x))
        Tensor.realize(y, m.running_mean, m.running_var)
        return numpy(y)

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        m = self.module
        xt = self._t(x)
        with Context(TRAINING=1):
            y = m(xt)
            dx, dgamma, dbeta = y.gradient(xt, m.weight, m.bias, gradient=self._t(dy))
        Tensor.realize(y, dx, dgamma, dbeta, m.running_mean, m.running_var)
        return numpy(y), numpy(dx), numpy(dgamma), numpy(dbeta)
