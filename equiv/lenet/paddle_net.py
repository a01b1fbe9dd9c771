"""BN-LeNet in PaddlePaddle (dynamic graph), one variant behind the protocol of ``equiv.lenet``.

- ``builtin``: ``paddle.nn.BatchNorm2D`` / ``BatchNorm1D``, as ``equiv.adapters.paddle_builtin`` uses
  them, built with eps and momentum from ``equiv.lenet.CONVENTIONS["paddle.builtin"]`` (Paddle's
  defaults: eps 1e-5, momentum 0.9 = weight of the old value); mode by ``net.train()`` / ``net.eval()``.
  Paddle has no book layer of its own here: the book's chapter has no Paddle tab in this suite.

Layouts: ``nn.Conv2D`` weights are (out, in, kh, kw), the reference's; ``nn.Linear`` weights are
(in, out) with y = x W + b, the transpose of the reference's (out, in): transposed on load and read.
Parameters are made in ``paddle.get_default_dtype()``, set for the build only.

Optimizer: plain SGD written as ``w − lr·grad`` in the net's dtype, as the other nets.
"""
import numpy as np
import paddle
from paddle import nn
from paddle.nn import functional as F

from equiv.backends.paddle import default_dtype, quiet
from equiv.conventions import DECLARED
from equiv.lenet import CONVENTIONS
from reference.lenet import BN_LAYERS, PARAM_NAMES, init_state

FRAMEWORK = "paddle"
IMPLS = ("builtin",)


def version():
    return paddle.__version__


def devices():
    return ("cpu", "cuda") if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() else ("cpu",)


def _bn(channels, ndim):
    c = CONVENTIONS["paddle.builtin"]
    momentum = DECLARED["paddle.builtin"].momentum_for(c["new_batch_weight"])   # 0.9: the old value's weight
    cls = nn.BatchNorm1D if ndim == 2 else nn.BatchNorm2D
    return cls(channels, momentum=momentum, epsilon=c["eps"])


NAMES = ("conv1", "bn1", "sig1", "pool1", "conv2", "bn2", "sig2", "pool2", "flat",
         "fc1", "bn3", "sig3", "fc2", "bn4", "sig4", "fc3")


def build(impl, dtype="float32", device="cpu"):
    """A fresh BN-LeNet (random Paddle init; load the shared weights with ``load_params``)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown paddle BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    if str(device).startswith("cuda") and "cuda" not in devices():
        raise ValueError("--device cuda asked for, but paddle sees no CUDA GPU")
    paddle.set_device("gpu" + str(device)[4:] if str(device).startswith("cuda") else "cpu")
    with default_dtype(dtype):
        layers = dict(
            conv1=nn.Conv2D(1, 6, kernel_size=5), bn1=_bn(6, 4), sig1=nn.Sigmoid(), pool1=nn.AvgPool2D(2, stride=2),
            conv2=nn.Conv2D(6, 16, kernel_size=5), bn2=_bn(16, 4), sig2=nn.Sigmoid(), pool2=nn.AvgPool2D(2, stride=2),
            flat=nn.Flatten(), fc1=nn.Linear(256, 120), bn3=_bn(120, 2), sig3=nn.Sigmoid(),
            fc2=nn.Linear(120, 84), bn4=_bn(84, 2), sig4=nn.Sigmoid(), fc3=nn.Linear(84, 10))
        net = nn.Sequential(*[(name, layers[name]) for name in NAMES])
    net.impl, net.dtype_name, net.device = impl, dtype, device
    _set_state(net, init_state())
    return net


def _t(net, a):
    return paddle.to_tensor(np.asarray(a, dtype=np.float64).astype(net.dtype_name))


def _numpy(t):
    return np.array(t.numpy(), dtype=np.float64)


def _layer(net, name):
    return getattr(net, name)


def _target(net, key):
    """The Paddle parameter of a reference.lenet name, and whether it is stored transposed."""
    name, kind = key.split(".")
    m = _layer(net, name)
    if name in BN_LAYERS:
        return (m.weight if kind == "gamma" else m.bias), False
    return getattr(m, kind), name.startswith("fc") and kind == "weight"


def _set_state(net, state):
    for name in BN_LAYERS:
        m = _layer(net, name)
        m._mean.set_value(_t(net, state[f"{name}.running_mean"]))
        m._variance.set_value(_t(net, state[f"{name}.running_var"]))


def load_params(net, params):
    """Copy the reference's parameters into the net (fc weights transposed, cast to the dtype)."""
    for key, value in params.items():
        p, transposed = _target(net, key)
        v = np.asarray(value, dtype=np.float64)
        v = v.T if transposed else v
        if v.size != int(np.prod(p.shape)):
            raise ValueError(f"{key}: shape {tuple(np.shape(value))} does not fit {tuple(p.shape)}")
        p.set_value(_t(net, v.reshape(p.shape)))


def get_params(net):
    out = {}
    for key in PARAM_NAMES:
        p, transposed = _target(net, key)
        v = _numpy(p)
        out[key] = v.T if transposed else v
    return out


def get_state(net):
    out = {}
    for name in BN_LAYERS:
        m = _layer(net, name)
        out[f"{name}.running_mean"], out[f"{name}.running_var"] = _numpy(m._mean), _numpy(m._variance)
    return out


def as_arrays(net, x, y):
    """Images (N, 1, 28, 28) and labels as Paddle tensors (images in the net's dtype)."""
    X = x if isinstance(x, paddle.Tensor) else _t(net, x)
    Y = y if isinstance(y, paddle.Tensor) else paddle.to_tensor(np.asarray(y, dtype=np.int64))
    return X, Y


def step(net, x, y, lr, capture=True):
    """One SGD step in training mode. Returns (loss before the step, activations)."""
    X, Y = as_arrays(net, x, y)
    net.train()
    net.clear_gradients()
    acts = {}
    h = X
    with quiet():
        for name in NAMES:
            h = _layer(net, name)(h)
            if capture:
                acts[name] = h.detach()
    loss = F.cross_entropy(h, Y)          # mean cross-entropy of the logits (softmax inside)
    loss.backward()
    with paddle.no_grad():
        for p in net.parameters():
            if not p.stop_gradient and p.grad is not None:
                p.set_value(p - lr * p.grad)
    net.clear_gradients()
    acts["fc3"] = h.detach()
    return float(loss.numpy()), {k: _numpy(v) for k, v in acts.items()}


def evaluate(net, x, y, batch=1024):
    """Mean cross-entropy and accuracy in inference mode (running statistics)."""
    X, Y = as_arrays(net, x, y)
    net.eval()
    total, correct = 0.0, 0
    with paddle.no_grad():
        for i in range(0, X.shape[0], batch):
            logits = net(X[i:i + batch])
            yb = Y[i:i + batch]
            total += float(F.cross_entropy(logits, yb, reduction="sum").numpy())
            correct += int((logits.argmax(axis=1) == yb).astype("int64").sum().numpy())
    net.train()
    n = X.shape[0]
    return total / n, correct / n
