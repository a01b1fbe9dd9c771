"""BN-LeNet in PyTorch, two variants behind the protocol of ``equiv.lenet``.

- ``builtin``: ``torch.nn.BatchNorm2d`` / ``BatchNorm1d``, as ``equiv.adapters.torch_builtin``
  uses them, built with eps and momentum from ``equiv.lenet.CONVENTIONS`` (torch's defaults);
  mode by ``net.train()`` / ``net.eval()``.
- ``scratch``: the book's ``BatchNorm`` (``equiv.book.d2l_torch``, verbatim), as
  ``equiv.adapters.torch_scratch`` uses it. It hard-codes eps 1e-5 and momentum 0.1, equal to
  torch's defaults. Its mode is ``torch.is_grad_enabled()`` (the book's): training steps run
  with gradients, evaluation under ``torch.no_grad()``.

Layers are named as ``reference.lenet.ACTIVATIONS`` (conv1, bn1, sig1, …, fc3), so the
activations of a step are captured by an explicit forward over the named children.
Importing ``equiv.adapters._torch`` turns TF32 off on CUDA.
"""
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from equiv.adapters._torch import DTYPES, devices  # noqa: F401  (devices: part of the protocol)
from equiv.adapters.torch_scratch import BOOK_EPS, BOOK_MOMENTUM
from equiv.book import d2l_torch as book
from equiv.lenet import CONVENTIONS
from reference.lenet import BN_LAYERS, init_state

FRAMEWORK = "torch"
IMPLS = ("builtin", "scratch")

_c = CONVENTIONS["torch.scratch"]
assert (_c["eps"], _c["new_batch_weight"]) == (BOOK_EPS, BOOK_MOMENTUM), "the book's layer hard-codes these"


def version():
    return torch.__version__


def _bn(impl, channels, ndim):
    if impl == "scratch":
        return book.BatchNorm(channels, num_dims=ndim)
    c = CONVENTIONS["torch.builtin"]   # torch's momentum is the new-batch weight
    cls = torch.nn.BatchNorm1d if ndim == 2 else torch.nn.BatchNorm2d
    return cls(channels, eps=c["eps"], momentum=c["new_batch_weight"])


def build(impl, dtype="float32", device="cpu"):
    """A fresh BN-LeNet (random torch init; load the shared weights with ``load_params``)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown torch BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA GPU (torch.cuda.is_available() is False)")
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, kernel_size=5)), ("bn1", _bn(impl, 6, 4)),
        ("sig1", nn.Sigmoid()), ("pool1", nn.AvgPool2d(kernel_size=2, stride=2)),
        ("conv2", nn.Conv2d(6, 16, kernel_size=5)), ("bn2", _bn(impl, 16, 4)),
        ("sig2", nn.Sigmoid()), ("pool2", nn.AvgPool2d(kernel_size=2, stride=2)),
        ("flat", nn.Flatten()),
        ("fc1", nn.Linear(256, 120)), ("bn3", _bn(impl, 120, 2)), ("sig3", nn.Sigmoid()),
        ("fc2", nn.Linear(120, 84)), ("bn4", _bn(impl, 84, 2)), ("sig4", nn.Sigmoid()),
        ("fc3", nn.Linear(84, 10)),
    ]))
    net.to(device=device, dtype=DTYPES[dtype])
    net.impl, net.dtype_name, net.device = impl, dtype, torch.device(device)
    net.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)   # the book's optimizer
    _set_state(net, init_state())   # the book's moving stats are plain attributes: dtype/device by hand
    return net


def _t(net, a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(net.device, DTYPES[net.dtype_name])


def _numpy(t):
    return t.detach().to("cpu", torch.float64).numpy().copy()


def _bn_tensors(net, name):
    """(gamma, beta) parameters of a BN layer, whatever the variant."""
    m = getattr(net, name)
    return (m.gamma, m.beta) if net.impl == "scratch" else (m.weight, m.bias)


def _set_state(net, state):
    for name in BN_LAYERS:
        m = getattr(net, name)
        rm, rv = state[f"{name}.running_mean"], state[f"{name}.running_var"]
        if net.impl == "scratch":
            m.moving_mean = _t(net, rm).reshape(m.gamma.shape)
            m.moving_var = _t(net, rv).reshape(m.gamma.shape)
        else:
            with torch.no_grad():
                m.running_mean.copy_(_t(net, rm))
                m.running_var.copy_(_t(net, rv))


def load_params(net, params):
    """Copy the reference's parameters into the net (same layouts: a direct copy, cast to the dtype)."""
    with torch.no_grad():
        for key, value in params.items():
            name, kind = key.split(".")
            if kind in ("gamma", "beta"):
                target = _bn_tensors(net, name)[kind == "beta"]
            else:
                target = getattr(getattr(net, name), kind)
            v = _t(net, value)
            if v.numel() != target.numel():
                raise ValueError(f"{key}: shape {tuple(v.shape)} does not fit {tuple(target.shape)}")
            target.copy_(v.reshape(target.shape))


def get_params(net):
    out = {}
    for name, _ in net.named_children():
        if name in BN_LAYERS:
            gamma, beta = _bn_tensors(net, name)
            out[f"{name}.gamma"], out[f"{name}.beta"] = _numpy(gamma).reshape(-1), _numpy(beta).reshape(-1)
        elif name.startswith(("conv", "fc")):
            m = getattr(net, name)
            out[f"{name}.weight"], out[f"{name}.bias"] = _numpy(m.weight), _numpy(m.bias)
    return out


def get_state(net):
    out = {}
    for name in BN_LAYERS:
        m = getattr(net, name)
        rm, rv = (m.moving_mean, m.moving_var) if net.impl == "scratch" else (m.running_mean, m.running_var)
        out[f"{name}.running_mean"], out[f"{name}.running_var"] = _numpy(rm).reshape(-1), _numpy(rv).reshape(-1)
    return out


def as_arrays(net, x, y):
    """Images (N, 1, 28, 28) and labels as tensors on the net's device (images in its dtype)."""
    X = x if isinstance(x, torch.Tensor) else _t(net, x)
    Y = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y, dtype=np.int64), device=net.device)
    return X, Y


def step(net, x, y, lr, capture=True):
    """One SGD step in training mode. Returns (loss before the step, activations)."""
    X, Y = as_arrays(net, x, y)
    net.train()                          # builtin: batch statistics; scratch: ignored (grad mode)
    acts = {}
    with torch.enable_grad():            # scratch: training mode is gradients enabled
        h = X
        for name, layer in net.named_children():
            h = layer(h)
            if capture:
                acts[name] = h.detach()
        loss = F.cross_entropy(h, Y)     # the book's Classifier.loss: mean cross-entropy
        net.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    for group in net.optimizer.param_groups:
        group["lr"] = lr
    net.optimizer.step()
    acts["fc3"] = h.detach()
    return float(loss.detach()), {k: _numpy(v) for k, v in acts.items()}


def evaluate(net, x, y, batch=1024):
    """Mean cross-entropy and accuracy in inference mode (running statistics)."""
    X, Y = as_arrays(net, x, y)
    net.eval()
    total, correct = 0.0, 0
    with torch.no_grad():                # scratch: prediction mode is gradients disabled
        for i in range(0, X.shape[0], batch):
            logits = net(X[i:i + batch])
            yb = Y[i:i + batch]
            total += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    net.train()
    n = X.shape[0]
    return total / n, correct / n
