"""BN-LeNet in Equinox, two variants behind the protocol of ``equiv.lenet``: ``eqx.nn.BatchNorm``
in its two modes, as ``equiv.adapters.equinox_nn`` uses it.

- ``batch``: ``mode="batch"``, the main net: batch statistics in training; moving averages
  hidden = m·hidden + (1 − m)·batch from (0, 1), read in inference as hidden/(1 − m^counter)
  (equinox/nn/_batch_norm.py:244-262).
- ``ema``: ``mode="ema"``, what a layer built without ``mode`` is (with a warning): a training
  batch is normalized with the updated moving averages (1 − m)·batch + m·running, not with the
  batch statistics (_batch_norm.py:224-240, 264): ``equiv.known``,
  equinox-ema-normalizes-with-moving-averages, and ``equiv.known.NET_FINDINGS``.

Both with Equinox's defaults (eps 1e-5, momentum 0.99 = the old value's weight: the conventions
of ``equiv.conventions.DECLARED``), ``dtype`` the net's. Equinox is channel-first per example, so
the layers hold the reference's layouts as they are (Conv2d (out, in, kh, kw), Linear (out, in),
flatten in (c, h, w) order). The net sees one example at a time and runs under
``jax.vmap(..., axis_name="batch", in_axes=(None, 0, None), out_axes=(0, 0, None))``, as Equinox
requires of its BatchNorm (its ``lax.pmean`` over the named axis takes the batch statistics).

The shared initialization: the reference's parameters, and its statistics (0, 1) loaded as a
trained checkpoint is, as ``equiv.adapters.equinox_nn`` writes one: ``batch``: hidden = the values,
counter 2^62 (m^counter is 0, so inference reads the values and the next update is their moving
average, the reference's); ``ema``: the values, ``ema_first_time_index`` False (a fresh layer's
first training call would instead replace them by the batch's, _batch_norm.py:238-239).
``get_state`` returns what inference reads. Steps are ``eqx.filter_jit``-ed functions of the
model and its ``eqx.nn.State``: compiled once per variant, dtype and shapes.
"""
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from equiv.backends import jax as jax_backend
from equiv.backends.jax import DTYPES
from equiv.lenet import CONVENTIONS
from equiv.lenet.jax_net import _device, devices  # noqa: F401  (the same devices as the Flax net)
from reference.lenet import ACTIVATIONS, BN_LAYERS, PARAM_NAMES, init_state

FRAMEWORK = "equinox"
IMPLS = ("batch", "ema")
COUNTER = 2 ** 62


def version():
    return f"equinox {eqx.__version__} / jax {jax.__version__}"


class LeNet(eqx.Module):
    """The book's BN-LeNet, per example (1, 28, 28); layers named as ``reference.lenet.ACTIVATIONS``."""
    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    fc1: eqx.nn.Linear
    bn3: eqx.nn.BatchNorm
    fc2: eqx.nn.Linear
    bn4: eqx.nn.BatchNorm
    fc3: eqx.nn.Linear

    def __init__(self, mode, dtype, key):
        c = CONVENTIONS[f"equinox.{mode}"]
        k = jax.random.split(key, 5)
        bn = lambda n: eqx.nn.BatchNorm(n, "batch", eps=c["eps"], momentum=1 - c["new_batch_weight"],  # noqa: E731
                                        dtype=dtype, mode=mode)
        self.conv1, self.bn1 = eqx.nn.Conv2d(1, 6, 5, key=k[0], dtype=dtype), bn(6)
        self.conv2, self.bn2 = eqx.nn.Conv2d(6, 16, 5, key=k[1], dtype=dtype), bn(16)
        self.fc1, self.bn3 = eqx.nn.Linear(256, 120, key=k[2], dtype=dtype), bn(120)
        self.fc2, self.bn4 = eqx.nn.Linear(120, 84, key=k[3], dtype=dtype), bn(84)
        self.fc3 = eqx.nn.Linear(84, 10, key=k[4], dtype=dtype)

    def __call__(self, x, state, inference):
        pool = eqx.nn.AvgPool2d(2, 2)
        acts = {}

        def bn(layer, x):
            y, new = layer(x, acts["state"], inference=inference)
            acts["state"] = new
            return y
        acts["state"] = state
        layers = (("conv1", self.conv1), ("bn1", lambda x: bn(self.bn1, x)), ("sig1", jax.nn.sigmoid),
                  ("pool1", pool), ("conv2", self.conv2), ("bn2", lambda x: bn(self.bn2, x)),
                  ("sig2", jax.nn.sigmoid), ("pool2", pool), ("flat", jnp.ravel),
                  ("fc1", self.fc1), ("bn3", lambda x: bn(self.bn3, x)), ("sig3", jax.nn.sigmoid),
                  ("fc2", self.fc2), ("bn4", lambda x: bn(self.bn4, x)), ("sig4", jax.nn.sigmoid),
                  ("fc3", self.fc3))
        for name, layer in layers:
            x = acts[name] = layer(x)
        state = acts.pop("state")
        return x, acts, state


def _batched(model, state, X, inference):
    return jax.vmap(lambda x: model(x, state, inference), axis_name="batch", out_axes=(0, 0, None))(X)


@eqx.filter_jit
def _train_step(model, state, X, Y, lr, capture):
    """One SGD step in training mode: (model, state, loss before the step, activations: all of
    them when ``capture``, else the logits; a Python bool, so static)."""
    def loss_fn(model):
        logits, acts, new = _batched(model, state, X, False)
        acts = acts if capture else {"fc3": logits}
        return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean(), (new, acts)
    (loss, (state, acts)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model)
    model = eqx.apply_updates(model, jax.tree_util.tree_map(lambda g: -lr * g, grads))
    return model, state, loss, acts


@eqx.filter_jit
def _eval_step(model, state, X, Y):
    logits, _, _ = _batched(model, state, X, True)
    total = optax.softmax_cross_entropy_with_integer_labels(logits, Y).sum()
    return total, (jnp.argmax(logits, axis=1) == Y).sum()


def _init(mode, dtype, device):
    """The model and state Equinox builds, their arrays zeros: ``eqx.filter_eval_shape`` of
    ``make_with_state`` (every user of the protocol loads the reference's weights; Equinox's random
    init, eager or jitted, costs ~10 s of compiling on 2 CPU cores)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # mode is given: no legacy-mode warning
        shapes = eqx.filter_eval_shape(eqx.nn.make_with_state(LeNet), mode, dtype, jax.random.key(0))
    return jax.tree_util.tree_map(lambda s: _zeros(s, device) if isinstance(s, jax.ShapeDtypeStruct) else s, shapes)


def _zeros(s, device):
    """Zeros of ``s``'s shape and dtype; weakly typed where Equinox's value is (mode "batch"'s
    counter, jnp.array(0): as a strong int64 it would make momentum**counter, and so a float32
    net's inference statistics, float64)."""
    if s.weak_type:
        return jax.device_put(jnp.asarray(s.dtype.type(0).item()), device)
    return jax.device_put(np.zeros(s.shape, s.dtype), device)


@jax.jit
def _read(momentum, stats):
    """What inference reads of mode "batch"'s (hidden mean, hidden var, counter), per layer."""
    return {name: (m / jnp.where(c == 0, 1, 1 - momentum ** c), v / jnp.where(c == 0, 1, 1 - momentum ** c))
            for name, (m, v, c) in stats.items()}


class Net:
    """A BN-LeNet: its Equinox model, state, mode, dtype and device."""

    def __init__(self, impl, dtype, device):
        self.impl, self.dtype_name, self.device = impl, dtype, device
        self.dtype = DTYPES[dtype]
        self.model, self.state = _init(impl, self.dtype, device)

    def __repr__(self):
        return f"<equinox_net.Net {self.impl} {self.dtype_name} on {self.device}>"


def build(impl, dtype="float32", device="cpu"):
    """A fresh BN-LeNet (weights zero: load them with ``load_params``) holding the reference's
    statistics (see above)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown equinox BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    jax_backend.setup()
    net = Net(impl, dtype, _device(device))
    _set_state(net, init_state())
    return net


def _a(net, a, shape=None):
    """A NumPy value as an array of the net's dtype on its device (cast on the host: no eager op)."""
    a = np.asarray(a, dtype=np.float64).astype(net.dtype_name)
    return jax.device_put(a if shape is None else a.reshape(shape), net.device)


def _numpy(a):
    return np.asarray(a).astype(np.float64)


def _set_state(net, state):
    for name in BN_LAYERS:
        layer, values = getattr(net.model, name), (_a(net, state[f"{name}.running_mean"]),
                                                    _a(net, state[f"{name}.running_var"]))
        if net.impl == "ema":
            net.state = net.state.set(layer.ema_first_time_index, jax.device_put(np.asarray(False), net.device))
            net.state = net.state.set(layer.ema_state_index, values)
        else:               # hidden·1/(1 − m^(2^62)) = hidden: the values, and their moving average next
            net.state = net.state.set(layer.batch_counter, jax.device_put(jnp.asarray(COUNTER), net.device))
            net.state = net.state.set(layer.batch_state_index, values)


def get_state(net):
    """The running statistics inference reads (batch: hidden/(1 − m^counter), _batch_norm.py:249-251)."""
    layers = {name: getattr(net.model, name) for name in BN_LAYERS}
    if net.impl == "ema":
        stats = {name: net.state.get(layer.ema_state_index) for name, layer in layers.items()}
    else:
        stats = _read(net.model.bn1.momentum, {name: (*net.state.get(layer.batch_state_index),
                                                     net.state.get(layer.batch_counter))
                                              for name, layer in layers.items()})
    out = {}
    for name, (mean, var) in stats.items():
        out[f"{name}.running_mean"], out[f"{name}.running_var"] = _numpy(mean), _numpy(var)
    return out


def _slot(key):
    """(layer, attribute) of a reference parameter name."""
    name, kind = key.split(".")
    return name, {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}[kind]


def load_params(net, params):
    """Copy the reference's parameters into the net (the same layouts; cast to the dtype)."""
    for key, value in params.items():
        if key not in PARAM_NAMES:
            raise ValueError(f"{key}: not a BN-LeNet parameter; known: {', '.join(PARAM_NAMES)}")
        layer, attr = _slot(key)
        target = getattr(getattr(net.model, layer), attr)
        v = np.asarray(value, dtype=np.float64)
        if v.size != target.size:                  # a conv bias is (C, 1, 1) in Equinox
            raise ValueError(f"{key}: shape {tuple(v.shape)} does not fit {tuple(target.shape)}")
        net.model = eqx.tree_at(lambda m: getattr(getattr(m, layer), attr), net.model,  # noqa: B023
                                _a(net, v, target.shape))


def get_params(net):
    out = {}
    for key in PARAM_NAMES:
        layer, attr = _slot(key)
        w = _numpy(getattr(getattr(net.model, layer), attr))
        out[key] = w if key.endswith(".weight") else w.reshape(-1)
    return out


def as_arrays(net, x, y):
    """Images (N, 1, 28, 28) in the net's dtype on its device (NCHW, as the reference); labels int32."""
    X = x if isinstance(x, jax.Array) else jax.device_put(
        jnp.asarray(np.asarray(x).reshape(-1, 1, 28, 28).astype(net.dtype_name)), net.device)
    Y = y if isinstance(y, jax.Array) else jax.device_put(jnp.asarray(np.asarray(y, dtype=np.int32)), net.device)
    return X, Y


def step(net, x, y, lr, capture=True):
    """One SGD step in training mode. Returns (loss before the step, activations)."""
    X, Y = as_arrays(net, x, y)
    net.model, net.state, loss, acts = _train_step(net.model, net.state, X, Y, jnp.asarray(lr, net.dtype),
                                                   bool(capture))
    names = ACTIVATIONS if capture else ("fc3",)
    return float(loss), {k: _numpy(acts[k]) for k in names}


def evaluate(net, x, y, batch=1024):
    """Mean cross-entropy and accuracy in inference mode (running statistics)."""
    X, Y = as_arrays(net, x, y)
    total, correct = 0.0, 0
    for i in range(0, X.shape[0], batch):
        t, c = _eval_step(net.model, net.state, X[i:i + batch], Y[i:i + batch])
        total += float(t)
        correct += int(c)
    return total / X.shape[0], correct / X.shape[0]
