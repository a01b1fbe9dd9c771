"""torch.builtin: ``torch.nn.BatchNorm1d`` on (N, C) and (N, C, L), ``BatchNorm2d`` on (N, C, H, W) and
``BatchNorm3d`` on (N, C, D, H, W).

Layer options (equiv.options): ``momentum=None`` (given to the constructor, or set on the layer
after its first training step), ``affine=False``, ``track_running_stats=False`` (given to the
constructor, or set on the built layer)."""
import numpy as np
import torch

from equiv.backends import torch as backend
from equiv.backends.torch import devices, numpy, tensor
from equiv.conventions import DECLARED
from equiv.core import Adapter

# the class of each input rank
LAYERS = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}


class TorchBuiltin(Adapter):
    name, framework = "torch.builtin", "torch"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")
    devices = devices()
    ndims = tuple(LAYERS)
    supported_options = {"momentum": ("cumulative", "cumulative_after_ema"), "affine": (False,),
                         "track_running_stats": (False, "set_false")}

    def build(self, momentum, eps):
        backend.setup()
        opts = self.options
        self.module = self._new_layer(eps=eps, momentum=None if opts.get("momentum") == "cumulative" else momentum,
                                      affine=opts.get("affine", True),
                                      track_running_stats=opts.get("track_running_stats") is not False,
                                      device=self.device, dtype=tensor(0, self.dtype, "cpu").dtype)
        if opts.get("track_running_stats") == "set_false":
            self.module.track_running_stats = False

    def _new_layer(self, **kw):
        """The layer of this rank built with ``kw`` (eps, momentum, affine, ...)."""
        return LAYERS[self.ndim](self.num_features, **kw)

    def _t(self, a, requires_grad=False):
        return tensor(a, self.dtype, self.device, requires_grad)

    def _trained(self):
        """After a training call: the switch of ``momentum="cumulative_after_ema"`` (momentum=None from now)."""
        if self.options.get("momentum") == "cumulative_after_ema":
            self.module.momentum = None

    def set_state(self, gamma, beta, running_mean, running_var):
        m = self.module
        with torch.no_grad():
            for p, v in ((m.weight, gamma), (m.bias, beta), (m.running_mean, running_mean),
                         (m.running_var, running_var)):
                if p is not None:   # affine=False: no gamma, beta; track_running_stats=False: no buffers
                    p.copy_(self._t(v))

    def get_state(self):
        m = self.module
        c = self.num_features
        # affine=False: gamma 1 and beta 0, as the layer applies them
        state = dict(gamma=numpy(m.weight) if m.weight is not None else np.ones(c),
                     beta=numpy(m.bias) if m.bias is not None else np.zeros(c))
        if m.running_mean is not None:
            state.update(running_mean=numpy(m.running_mean), running_var=numpy(m.running_var))
        return state

    def forward_train(self, x):
        self.module.train()
        y = numpy(self.module(self._t(x)))
        self._trained()
        return y

    def forward_infer(self, x):
        self.module.eval()
        return numpy(self.module(self._t(x)))

    def forward_default(self, x):
        y = numpy(self.module(self._t(x)))
        if self.module.training:
            self._trained()
        return y

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        m = self.module
        m.train()
        m.zero_grad(set_to_none=True)
        xt = self._t(x, requires_grad=True)
        y = m(xt)
        y.backward(self._t(dy))
        self._trained()
        grad = (lambda p: None if p is None or p.grad is None else numpy(p.grad))   # noqa: E731
        return numpy(y), numpy(xt.grad), grad(m.weight), grad(m.bias)
