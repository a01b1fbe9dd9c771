"""torch.builtin: ``torch.nn.BatchNorm1d`` (N, C) and ``BatchNorm2d`` (N, C, H, W)."""
import torch

from equiv.backends import torch as backend
from equiv.backends.torch import devices, numpy, tensor
from equiv.conventions import DECLARED
from equiv.core import Adapter


class TorchBuiltin(Adapter):
    name, framework = "torch.builtin", "torch"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")
    devices = devices()

    def build(self, momentum, eps):
        backend.setup()
        cls = torch.nn.BatchNorm1d if self.ndim == 2 else torch.nn.BatchNorm2d
        self.module = cls(self.num_features, eps=eps, momentum=momentum,
                          device=self.device, dtype=tensor(0, self.dtype, "cpu").dtype)

    def _t(self, a, requires_grad=False):
        return tensor(a, self.dtype, self.device, requires_grad)

    def set_state(self, gamma, beta, running_mean, running_var):
        m = self.module
        with torch.no_grad():
            for p, v in ((m.weight, gamma), (m.bias, beta), (m.running_mean, running_mean),
                         (m.running_var, running_var)):
                p.copy_(self._t(v))

    def get_state(self):
        m = self.module
        return dict(gamma=numpy(m.weight), beta=numpy(m.bias),
                    running_mean=numpy(m.running_mean), running_var=numpy(m.running_var))

    def forward_train(self, x):
        self.module.train()
        return numpy(self.module(self._t(x)))

    def forward_infer(self, x):
        self.module.eval()
        return numpy(self.module(self._t(x)))

    def forward_default(self, x):
        return numpy(self.module(self._t(x)))

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        m = self.module
        m.train()
        m.zero_grad(set_to_none=True)
        xt = self._t(x, requires_grad=True)
        y = m(xt)
        y.backward(self._t(dy))
        return numpy(y), numpy(xt.grad), numpy(m.weight.grad), numpy(m.bias.grad)
