"""paddle.builtin: ``paddle.nn.BatchNorm1D`` (N, C) and ``BatchNorm2D`` (N, C, H, W), NCHW.

Mode, in Paddle's words: ``layer.train()`` / ``layer.eval()`` (``Layer.training``, True on a new
layer); ``use_global_stats`` (None here, the default) would override it (tests/test_paddle_findings.py).
The CPU kernel (phi::BatchNormKernel, paddle/phi/kernels/cpu/batch_norm_kernel.cc) takes
``float momentum, float epsilon``: both reach a float64 layer rounded to float32 (equiv.known).
The state is ``weight``, ``bias``, ``_mean``, ``_variance`` (the state_dict keys).
``paddle.builtin+nhwc`` (equiv.paths.paddle_paths) builds the layer with ``data_format="NHWC"``.
"""
import paddle

from equiv.backends.paddle import DTYPES, default_dtype, numpy, quiet, tensor
from equiv.conventions import DECLARED
from equiv.core import Adapter, weight_applied


class PaddleBuiltin(Adapter):
    name, framework = "paddle.builtin", "paddlepaddle"
    conventions = DECLARED[name]
    dtypes = DTYPES
    data_format = "NCHW"

    def build(self, momentum, eps):
        # the kernel's `float momentum`: a float32 layer weighs the batch by 1 − float32(1 − w); a
        # float64 one by 1 − (1 − w) where float32 holds 1 − w (paddle-momentum-float32 where not)
        self.new_batch_weight = weight_applied(momentum, self.dtype)
        cls = paddle.nn.BatchNorm1D if self.ndim == 2 else paddle.nn.BatchNorm2D
        fmt = dict(data_format=self.data_format) if self.ndim == 4 else {}
        with default_dtype(self.dtype):
            self.layer = cls(self.num_features, momentum=momentum, epsilon=eps, **fmt)

    # canonical (N, C, ...) in and out; a path with another layout converts here
    def _in(self, x, requires_grad=False):
        return tensor(x, self.dtype, requires_grad)

    def _out(self, t):
        return numpy(t)

    def _params(self):
        layer = self.layer
        return dict(gamma=layer.weight, beta=layer.bias, running_mean=layer._mean, running_var=layer._variance)

    def set_state(self, gamma, beta, running_mean, running_var):
        values = dict(gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
        for k, p in self._params().items():
            p.set_value(tensor(values[k], self.dtype))

    def get_state(self):
        return {k: numpy(p) for k, p in self._params().items()}

    def _call(self, x):
        with quiet():
            return self._out(self.layer(self._in(x)))

    def forward_train(self, x):
        self.layer.train()
        return self._call(x)

    def forward_infer(self, x):
        self.layer.eval()
        return self._call(x)

    def forward_default(self, x):
        return self._call(x)

    def forward_native(self, x):
        self.layer.train()
        with quiet():
            return numpy(self.layer(tensor(x, self.dtype)))

    def train_step(self, x, dy):
        layer = self.layer
        layer.train()
        layer.clear_gradients()
        xt = self._in(x, requires_grad=True)
        with quiet():
            y = layer(xt)
        y.backward(self._in(dy))
        return self._out(y), self._out(xt.grad), numpy(layer.weight.grad), numpy(layer.bias.grad)
