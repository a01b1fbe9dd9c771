"""A batch norm of one's own, as a custom ``torch.autograd.Function`` with a hand-written backward,
and the adapter that puts it under test:

    pytest --pyargs equiv.suite --adapters examples.torch_autograd_bn:AutogradBatchNormAdapter
    equiv check --adapters examples.torch_autograd_bn:AutogradBatchNormAdapter

(from the folder that holds ``examples/``; with your own module, give its import path).
"""
import numpy as np
import torch

from equiv import Adapter


class BatchNormFunction(torch.autograd.Function):
    """y = gamma·(x − mean)/sqrt(var + eps) + beta over every axis but 1; backward by hand."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        inv = torch.rsqrt(var + eps)
        x_hat = (x - mean) * inv
        ctx.save_for_backward(x_hat, inv, gamma)
        ctx.dims, ctx.shape = dims, shape
        return gamma.reshape(shape) * x_hat + beta.reshape(shape), mean.reshape(-1), var.reshape(-1)

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x_hat, inv, gamma = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        m = x_hat.numel() // x_hat.shape[1]
        dbeta = dy.sum(dim=dims)
        dgamma = (dy * x_hat).sum(dim=dims)
        dx = gamma.reshape(shape) * inv / m * (m * dy - dbeta.reshape(shape) - x_hat * dgamma.reshape(shape))
        return dx, dgamma, dbeta, None


class MyBatchNorm(torch.nn.Module):
    """PyTorch's conventions: new = (1 − momentum)·old + momentum·batch, unbiased running variance."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=torch.float32):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = torch.nn.Parameter(torch.ones(num_features, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(num_features, dtype=dtype))
        self.register_buffer("running_mean", torch.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", torch.ones(num_features, dtype=dtype))

    def forward(self, x):
        if not self.training:
            shape = [1, -1] + [1] * (x.dim() - 2)
            inv = torch.rsqrt(self.running_var.reshape(shape) + self.eps)
            return self.weight.reshape(shape) * (x - self.running_mean.reshape(shape)) * inv + self.bias.reshape(shape)
        m = x.numel() // x.shape[1]
        if m < 2:   # as torch.nn.BatchNorm2d: the unbiased variance of one value is undefined
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        y, mean, var = BatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * m / (m - 1))
        return y


class AutogradBatchNormAdapter(Adapter):
    """The protocol around MyBatchNorm: NumPy in, float64 NumPy out; it translates, nothing more."""

    name, framework, install = "examples.torch_autograd_bn", "torch", "pip install torch"
    # its conventions, declared as data: PyTorch's, and a module's default mode
    conventions = {"preset": "torch", "default_mode": "training", "mode_switch": "module.train() / module.eval()"}
    dtypes = ("float64", "float32")

    def build(self, momentum, eps):
        dtype = getattr(torch, self.dtype)
        self.module = MyBatchNorm(self.num_features, eps=eps, momentum=momentum, dtype=dtype)

    def _t(self, a, grad=False):
        return torch.tensor(np.asarray(a), dtype=getattr(torch, self.dtype), requires_grad=grad)

    def set_state(self, gamma, beta, running_mean, running_var):
        m = self.module
        with torch.no_grad():
            for p, v in ((m.weight, gamma), (m.bias, beta), (m.running_mean, running_mean),
                         (m.running_var, running_var)):
                p.copy_(self._t(v))

    def get_state(self):
        m = self.module
        return {k: v.detach().numpy().astype(np.float64) for k, v in (
            ("gamma", m.weight), ("beta", m.bias), ("running_mean", m.running_mean),
            ("running_var", m.running_var))}

    def forward_train(self, x):
        self.module.train()
        return self.module(self._t(x)).detach().numpy().astype(np.float64)

    def forward_infer(self, x):
        self.module.eval()
        return self.module(self._t(x)).detach().numpy().astype(np.float64)

    def forward_default(self, x):
        return self.module(self._t(x)).detach().numpy().astype(np.float64)

    forward_native = forward_train

    def train_step(self, x, dy):
        m = self.module
        m.train()
        m.zero_grad(set_to_none=True)
        xt = self._t(x, grad=True)
        y = m(xt)
        y.backward(self._t(dy))
        return tuple(t.detach().numpy().astype(np.float64) for t in (y, xt.grad, m.weight.grad, m.bias.grad))
