"""BN-LeNet in MXNet Gluon (numpy semantics), two variants behind the protocol of ``equiv.lenet``.

- ``builtin`` (the net ``mxnet.gluon``): ``mxnet.gluon.nn.BatchNorm``, as ``equiv.adapters.mxnet_gluon`` uses it, built
  with eps and momentum from ``equiv.lenet.CONVENTIONS["mxnet.gluon"]`` (gluon's defaults:
  eps 1e-5, momentum 0.9 = weight of the old value). On the CPU its running statistics move
  in the backward pass, not the forward (documented in ``equiv.known``); a training step has
  a backward, so after ``step`` they are up to date.
- ``scratch``: the book's ``BatchNorm`` (``equiv.book.d2l_mxnet``, verbatim), as
  ``equiv.adapters.mxnet_scratch`` uses it. It hard-codes eps 1e-12 and momentum 0.1 (the
  new-batch weight); its moving statistics are plain attributes, set here in the net's dtype.

Mode, for both: training inside ``autograd.record()`` (gluon's train mode; the book's layer
reads ``autograd.is_training()``), prediction outside it (``evaluate``).

Layouts: ``nn.Conv2D`` weights are (out, in, kh, kw) and ``nn.Dense`` weights (out, in) with
y = x W^T + b, exactly ``reference.lenet``'s (PyTorch's), so weights transfer as a direct copy.

Optimizer: plain SGD written as ``w − lr·grad`` in the net's dtype (MXNet's Python scalar is a
double). Not ``gluon.Trainer('sgd')``, the book's: its ``sgd_update`` keeps the learning rate
as a C++ float, so a float64 net is updated with lr rounded to float32 (0.1 → 0.10000000149),
a non-BN difference that would hide the BN ones in float64 (``tests/test_lockstep_mxnet.py``
pins it). In float32 the two are the same arithmetic.
"""
import mxnet as mx
import numpy as onp
from mxnet import autograd, gluon
from mxnet import np as mnp
from mxnet.gluon import nn

from equiv.book import d2l_mxnet as book  # also sets npx.set_np(), the book's semantics
from equiv.conventions import DECLARED
from equiv.lenet import CONVENTIONS
from reference.lenet import BN_LAYERS, PARAM_NAMES, init_state

FRAMEWORK = "mxnet"
IMPLS = ("builtin", "scratch")



def version():
    return mx.__version__


def devices():
    return ("cpu", "cuda") if mx.context.num_gpus() > 0 else ("cpu",)


def _context(device):
    kind, _, index = str(device).partition(":")
    if kind == "cpu":
        return mx.cpu()
    if kind == "cuda":
        if mx.context.num_gpus() == 0:
            raise ValueError("--device cuda asked for, but mxnet sees no GPU (mx.context.num_gpus() is 0)")
        return mx.gpu(int(index or 0))
    raise ValueError(f"device must be cpu or cuda, got {device!r}")


def _bn(impl, channels, ndim):
    if impl == "scratch":
        return book.BatchNorm(channels, num_dims=ndim)
    c = CONVENTIONS["mxnet.gluon"]
    momentum = DECLARED["mxnet.gluon"].momentum_for(c["new_batch_weight"])   # 0.9: the old value's weight
    return nn.BatchNorm(axis=1, momentum=momentum, epsilon=c["eps"], in_channels=channels)


class _Net(nn.Block):
    """Named layers applied in order (``names``), reachable as attributes."""

    def __init__(self, layers):
        super().__init__()
        self.names = []
        for name, layer in layers:
            setattr(self, name, layer)        # registers the child block
            self.names.append(name)

    def forward(self, x):
        for name in self.names:
            x = getattr(self, name)(x)
        return x


def build(impl, dtype="float32", device="cpu", *, bn=None, contexts=None):
    """A fresh BN-LeNet (random gluon init; load the shared weights with ``load_params``).
    ``bn(channels, ndim)``, when given, makes the BN layers, and ``contexts`` (a list) are the
    contexts the parameters live on (``equiv.lenet.mxnet_sync_net``)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown mxnet BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    ctx = _context(device) if contexts is None else contexts[0]
    bn = bn or (lambda channels, ndim: _bn(impl, channels, ndim))
    net = _Net([
        ("conv1", nn.Conv2D(6, kernel_size=5, in_channels=1)), ("bn1", bn(6, 4)),
        ("sig1", nn.Activation("sigmoid")), ("pool1", nn.AvgPool2D(pool_size=2, strides=2)),
        ("conv2", nn.Conv2D(16, kernel_size=5, in_channels=6)), ("bn2", bn(16, 4)),
        ("sig2", nn.Activation("sigmoid")), ("pool2", nn.AvgPool2D(pool_size=2, strides=2)),
        ("flat", nn.Flatten()),
        ("fc1", nn.Dense(120, in_units=256)), ("bn3", bn(120, 2)), ("sig3", nn.Activation("sigmoid")),
        ("fc2", nn.Dense(84, in_units=120)), ("bn4", bn(84, 2)), ("sig4", nn.Activation("sigmoid")),
        ("fc3", nn.Dense(10, in_units=84)),
    ])
    net.initialize(ctx=ctx if contexts is None else contexts)   # initializers fill float32 only: then cast
    net.cast(dtype)
    net.impl, net.dtype_name, net.ctx = impl, dtype, ctx
    net.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()   # the book's Classifier.loss (then .mean())
    _set_state(net, init_state())  # the book's moving stats are plain attributes: dtype/device by hand
    return net


def _a(net, a):
    return mnp.array(onp.asarray(a, dtype=onp.float64), dtype=net.dtype_name, ctx=net.ctx)


def _numpy(a):
    return onp.array(a.asnumpy(), dtype=onp.float64)


def _parameters(net):
    """name of reference.lenet.PARAM_NAMES -> gluon Parameter."""
    out = {}
    for key in PARAM_NAMES:
        name, kind = key.split(".")
        out[key] = getattr(getattr(net, name), kind)
    return out


def _set_state(net, state):
    for name in BN_LAYERS:
        m = getattr(net, name)
        rm, rv = state[f"{name}.running_mean"], state[f"{name}.running_var"]
        if net.impl == "scratch":
            m.moving_mean = _a(net, rm).reshape(m.gamma.shape)
            m.moving_var = _a(net, rv).reshape(m.gamma.shape)
        else:
            m.running_mean.set_data(_a(net, rm))
            m.running_var.set_data(_a(net, rv))


def load_params(net, params):
    """Copy the reference's parameters into the net (same layouts: a direct copy, cast to the dtype)."""
    targets = _parameters(net)
    for key, value in params.items():
        p = targets[key]
        v = _a(net, value)
        if v.size != int(onp.prod(p.shape)):
            raise ValueError(f"{key}: shape {tuple(v.shape)} does not fit {tuple(p.shape)}")
        p.set_data(v.reshape(p.shape))


def get_params(net):
    out = {}
    for key, p in _parameters(net).items():
        v = _numpy(p.data())
        out[key] = v.reshape(-1) if key.endswith((".gamma", ".beta")) else v
    return out


def get_state(net):
    out = {}
    for name in BN_LAYERS:
        m = getattr(net, name)
        rm, rv = (m.moving_mean, m.moving_var) if net.impl == "scratch" else (m.running_mean.data(),
                                                                               m.running_var.data())
        out[f"{name}.running_mean"], out[f"{name}.running_var"] = _numpy(rm).reshape(-1), _numpy(rv).reshape(-1)
    return out


def as_arrays(net, x, y):
    """Images (N, 1, 28, 28) and labels as mxnet.np arrays on the net's device (images in its dtype)."""
    X = x if isinstance(x, mnp.ndarray) else _a(net, x)
    Y = y if isinstance(y, mnp.ndarray) else mnp.array(onp.asarray(y, dtype=onp.int32), dtype="int32", ctx=net.ctx)
    return X, Y


def step(net, x, y, lr, capture=True):
    """One SGD step in training mode. Returns (loss before the step, activations)."""
    X, Y = as_arrays(net, x, y)
    acts = {}
    with autograd.record():              # training mode: gluon's and the book's (is_training())
        h = X
        for name in net.names:
            h = getattr(net, name)(h)
            if capture:
                acts[name] = h
        loss = net.loss_fn(h, Y).mean()
    loss.backward()                      # builtin: the running statistics move here
    for p in _parameters(net).values():
        p.set_data(p.data() - lr * p.grad())
    acts["fc3"] = h
    return float(loss.item()), {k: _numpy(v) for k, v in acts.items()}


def evaluate(net, x, y, batch=1024):
    """Mean cross-entropy and accuracy in inference mode (running statistics)."""
    X, Y = as_arrays(net, x, y)
    total, correct = 0.0, 0
    for i in range(0, X.shape[0], batch):   # outside autograd.record(): prediction mode
        logits = net(X[i:i + batch])
        yb = Y[i:i + batch]
        total += float(net.loss_fn(logits, yb).sum().item())
        correct += int((logits.argmax(axis=1).astype("int32") == yb).sum().item())
    n = X.shape[0]
    return total / n, correct / n
