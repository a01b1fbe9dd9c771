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
``build`` turns TF32 off on CUDA (``equiv.backends.torch.setup``).
"""
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from equiv.backends import torch as torch_backend
from equiv.backends.torch import DTYPES, devices  # noqa: F401  (devices: part of the protocol)
from equiv.book import d2l_torch as book
from equiv.lenet import CONVENTIONS
from reference.lenet import BN_LAYERS, init_state

FRAMEWORK = "torch"
IMPLS = ("builtin", "scratch")



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
    torch_backend.setup()
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


def _sgd_step(net, X, Y, idx, lr):
    """Forward, mean cross-entropy, backward and SGD on the batch ``X[idx]``: device tensors
    only, no host synchronisation. Returns (loss, correct predictions) as 0-d tensors."""
    xb, yb = X[idx], Y[idx]
    logits = net(xb)
    loss = F.cross_entropy(logits, yb)
    loss.backward()
    params = [p for p in net.parameters()]
    with torch.no_grad():
        torch._foreach_add_(params, [p.grad for p in params], alpha=-lr)   # w − lr·g, as SGD
    return loss.detach(), (logits.argmax(dim=1) == yb).sum()


def train_epoch(net, X, Y, order, lr, batch, on_step=None):
    """One epoch in training mode without a host synchronisation per step (``equiv.lenet.train``).

    The same arithmetic as ``step`` per batch (``torch.optim.SGD`` without momentum is
    ``w − lr·g``; tested equal). On CUDA the full-batch step (gather, forward, backward, SGD,
    bookkeeping) is captured once in a CUDA graph and replayed per batch: one launch per
    step instead of ~100 kernels from Python. The smaller last batch runs eagerly.
    ``on_step(k)``, when given, is called as k more steps are launched (progress bars).
    Returns (per-step mean losses, correct training predictions) on the host.
    """
    net.train()
    n, steps = X.shape[0], -(-X.shape[0] // batch)
    order_t = torch.as_tensor(np.asarray(order, dtype=np.int64), device=net.device)
    losses = torch.zeros(steps, dtype=torch.float64, device=net.device)
    correct = torch.zeros((), dtype=torch.int64, device=net.device)
    full = n // batch
    start = 0
    with torch.enable_grad():             # scratch: training mode is gradients enabled
        if net.device.type == "cuda" and full > 1:
            g = _graph(net, X, Y, batch, lr)
            g["order"].copy_(order_t)
            g["step"].zero_()
            g["losses"].zero_()
            g["correct"].zero_()
            for _ in range(full):
                g["graph"].replay()
                if on_step:
                    on_step(1)
            losses[:full] = g["losses"][:full]
            correct += g["correct"]
            start = full
        for b in range(start, steps):
            net.zero_grad(set_to_none=True)
            loss, right = _sgd_step(net, X, Y, order_t[b * batch:(b + 1) * batch], lr)
            losses[b] = loss
            correct += right
            if on_step:
                on_step(1)
    return losses.cpu().numpy(), int(correct)


def _graph(net, X, Y, batch, lr):
    """The full-batch training step of ``net`` on ``X``, ``Y`` captured in a CUDA graph (cached).

    Inside the graph the batch's indices are ``order[step·batch : (step+1)·batch]`` with
    ``step`` a device counter, so a replay needs no input from the host. The book's layer
    rebinds ``moving_mean`` / ``moving_var`` to new tensors each call; a graph would keep
    reading the tensors of the capture, so the captured step copies the new statistics back
    into them. Warm-up steps (required before capture) move the weights and statistics, which
    are restored afterwards; capturing runs no kernel.
    """
    key = (X.data_ptr(), Y.data_ptr(), batch, lr)
    cache = getattr(net, "_graphs", {})
    if key in cache:
        return cache[key]
    dev = net.device
    order = torch.arange(X.shape[0], device=dev)
    step = torch.zeros((), dtype=torch.int64, device=dev)
    losses = torch.zeros(X.shape[0] // batch, dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    arange = torch.arange(batch, device=dev)
    bns = [getattr(net, name) for name in BN_LAYERS] if net.impl == "scratch" else []

    def captured():
        idx = order[step * batch + arange]
        before = [(m.moving_mean, m.moving_var) for m in bns]
        loss, right = _sgd_step(net, X, Y, idx, lr)
        for m, (mean, var) in zip(bns, before):
            mean.copy_(m.moving_mean)
            var.copy_(m.moving_var)
            m.moving_mean, m.moving_var = mean, var
        losses.index_copy_(0, step.view(1), loss.view(1).to(torch.float64))
        correct.add_(right)
        step.add_(1)

    saved_params = {k: v.detach().clone() for k, v in net.state_dict().items()}
    saved_state = get_state(net)
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(3):
            net.zero_grad(set_to_none=True)
            step.zero_()
            captured()
    torch.cuda.current_stream(dev).wait_stream(side)
    with torch.no_grad():
        for k, v in net.state_dict().items():
            v.copy_(saved_params[k])
    if bns:
        _set_state(net, saved_state)
    net.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured()
    cache[key] = dict(graph=graph, order=order, step=step, losses=losses, correct=correct)
    net._graphs = cache
    return cache[key]

