"""BN-LeNet in JAX / Flax linen, two variants behind the protocol of ``equiv.lenet``.

- ``builtin`` (the net ``flax.linen``): ``flax.linen.BatchNorm``, as ``equiv.adapters.flax_linen`` uses it, built with
  eps and momentum from ``equiv.lenet.CONVENTIONS["flax.linen"]`` (Flax's defaults: eps 1e-5,
  momentum 0.99 = weight of the old value) and ``dtype`` = ``param_dtype`` = the net's dtype.
  Flax keeps the running statistics in at least float32 and computes the batch variance as
  E[x²] − E[x]² (its default ``use_fast_variance=True``); the running statistics are set here
  in float64 for a float64 net (Flax creates them float32 and promotes them at the first
  update, which a ``jax.lax.scan`` carry cannot do).
- ``scratch``: the book's ``BatchNorm`` (``equiv.book.d2l_jax``, verbatim), as
  ``equiv.adapters.jax_scratch`` uses it; it hard-codes eps 1e-5 and momentum 0.9 (new-batch
  weight 0.1). Kept as printed, with its two quirks (``equiv.known``: jax-scratch-4d-reduces-n-w-c):
  its 4-D branch reduces NHWC data over axes (0, 2, 3) = N, W, C, one mean and variance per
  row H instead of per channel, so bn1 and bn2 are not batch norm and their moving statistics
  become (1, H, 1, C) arrays after a training step (``get_state`` returns them flattened, H·C
  values, and the lockstep counts the shape mismatch as a divergence); and ``init`` already
  moves its moving statistics. After ``init`` the statistics are overwritten with
  ``reference.lenet.init_state()``, so both variants start from the reference's state.

Mode, for both: the module's ``training`` attribute, as in the book's ``BNLeNet``
(``use_running_average=not training`` / ``deterministic=not training``); a net holds a
training and an inference module over the same variables. Training steps apply it with
``mutable=['batch_stats']``.

The book's JAX tab is a different network from its other tabs: it writes
``nn.Conv(6, kernel_size=(5, 5))`` without padding, and ``flax.linen.Conv`` pads 'SAME' by
default, so conv1's output is 28×28 (not 24×24), conv2's 14×14 → pooled 7×7, and fc1's fan-in
is 16·7·7 = 784 instead of 16·4·4 = 256 (``tests/test_lockstep_jax.py`` measures it). This net
is the issue's, the reference's: both convolutions use ``padding='VALID'``.

Layouts: Flax is NHWC. Conv kernels are (kh, kw, in, out) = the reference's (out, in, kh, kw)
transposed (2, 3, 1, 0); Dense kernels (in, out) = W^T. Flattening NHWC gives the features in
(h, w, c) order, the reference's NCHW flatten in (c, h, w) order, so fc1's kernel rows are
permuted (``equiv.lenet.layout``) to compute the same function. BN gamma / beta are (C,) for Flax,
(1, C) / (1, 1, 1, C) for the book's layer. ``step`` returns the activations in the
reference's layout (NCHW; "flat" in (c, h, w) order).

Loss: mean ``optax.softmax_cross_entropy_with_integer_labels`` (the book's ``Classifier.loss``;
optax comes with flax). Optimizer: plain SGD ``p − lr·g`` by ``jax.tree_util.tree_map`` (the
book's ``optax.sgd`` computes the same). Jitted, with the module a static argument (compiled once per
variant, dtype and shapes): the training step (one per ``capture`` flag, lr an argument), the
inference step and, for ``train_epoch``, a whole epoch's full batches as one ``jax.lax.scan``
(not the default on the CPU, where XLA runs it ~5× slower than the steps; see ``train_epoch``).
``equiv.backends.jax.setup()`` turns on float64: ``equiv.registry.load_lenet`` runs it before it
imports this module, and ``build`` again.
"""
from functools import partial

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from equiv.backends import jax as jax_backend
from equiv.backends.jax import DTYPES, stats_dtype
from equiv.book import d2l_jax as book
from equiv.conventions import DECLARED
from equiv.lenet import CONVENTIONS
from equiv.lenet.layout import activation_to_reference, param_from_channels_last, param_to_channels_last
from reference.lenet import ACTIVATIONS, BN_LAYERS, LAYERS, PARAM_NAMES, init_state

FRAMEWORK = "jax"
IMPLS = ("builtin", "scratch")




def version():
    return f"flax {flax.__version__} / jax {jax.__version__}"


def devices():
    try:
        jax.devices("gpu")
    except RuntimeError:
        return ("cpu",)
    return ("cpu", "cuda")


def _device(device):
    kind, _, index = str(device).partition(":")
    if kind == "cpu":
        return jax.devices("cpu")[0]
    if kind == "cuda":
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            raise ValueError("--device cuda asked for, but jax sees no GPU (jax.devices('gpu') fails)") from None
        return gpus[int(index or 0)]
    raise ValueError(f"device must be cpu or cuda, got {device!r}")


def _flatten(x):
    return x.reshape((x.shape[0], -1))


def _pool(x):
    return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))


class LeNet(nn.Module):
    """The book's BN-LeNet (NHWC), layers named as ``reference.lenet.ACTIVATIONS``.

    ``capture=True``: returns (logits, activations by layer name) instead of the logits.
    A subclass that overrides ``bn`` plants a different BN layer (the jitted steps are
    compiled per module, and a subclass is a different module)."""
    impl: str
    dtype: object
    training: bool = True

    def bn(self, name, channels, ndim):
        """The BN layer ``name`` (``ndim`` 4 after a convolution, 2 after a dense layer)."""
        if self.impl == "scratch":
            return book.BatchNorm(channels, ndim, deterministic=not self.training, name=name)
        c = CONVENTIONS["flax.linen"]
        momentum = DECLARED["flax.linen"].momentum_for(c["new_batch_weight"])   # 0.99: the old value's weight
        return nn.BatchNorm(use_running_average=not self.training, momentum=momentum, epsilon=c["eps"],
                            dtype=self.dtype, param_dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, x, capture=False):
        dt = self.dtype
        conv = lambda n, name: nn.Conv(n, kernel_size=(5, 5), padding="VALID",  # noqa: E731
                                       dtype=dt, param_dtype=dt, name=name)
        dense = lambda n, name: nn.Dense(n, dtype=dt, param_dtype=dt, name=name)  # noqa: E731
        bn = self.bn
        layers = (("conv1", conv(6, "conv1")), ("bn1", bn("bn1", 6, 4)), ("sig1", nn.sigmoid), ("pool1", _pool),
                  ("conv2", conv(16, "conv2")), ("bn2", bn("bn2", 16, 4)), ("sig2", nn.sigmoid), ("pool2", _pool),
                  ("flat", _flatten),
                  ("fc1", dense(120, "fc1")), ("bn3", bn("bn3", 120, 2)), ("sig3", nn.sigmoid),
                  ("fc2", dense(84, "fc2")), ("bn4", bn("bn4", 84, 2)), ("sig4", nn.sigmoid),
                  ("fc3", dense(10, "fc3")))
        acts = {}
        for name, layer in layers:
            x = layer(x)
            if capture:
                acts[name] = x
        return (x, acts) if capture else x


def _loss(logits, Y):
    """The book's Classifier.loss: mean softmax cross-entropy."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()


@partial(jax.jit, static_argnums=0)
def _init(module, x):
    """Flax's random init (compiled once per variant and dtype: eager init is seconds)."""
    return module.init(jax.random.key(0), x)


@partial(jax.jit, static_argnums=(0, 1))
def _train_step(module, capture, params, stats, X, Y, lr):
    """One SGD step in training mode: (params, stats, loss before the step, logits, activations)."""
    def loss_fn(params):
        out, updated = module.apply({"params": params, "batch_stats": stats}, X, capture=capture,
                                    mutable=["batch_stats"])
        logits, acts = out if capture else (out, {})
        return _loss(logits, Y), (updated["batch_stats"], logits, acts)
    (loss, (stats, logits, acts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
    return params, stats, loss, logits, acts


@partial(jax.jit, static_argnums=0)
def _eval_step(module, params, stats, X, Y):
    """Inference mode: (summed cross-entropy, number of correct predictions) of a batch."""
    logits = module.apply({"params": params, "batch_stats": stats}, X)
    total = optax.softmax_cross_entropy_with_integer_labels(logits, Y).sum()
    return total, (jnp.argmax(logits, axis=1) == Y).sum()


@partial(jax.jit, static_argnums=0)
def _epoch_scan(module, params, stats, X, Y, idx, lr):
    """Full batches idx (steps, batch) in one scan: (params, stats, losses, correct per step)."""
    def body(carry, rows):
        Xb, Yb = jnp.take(X, rows, axis=0), jnp.take(Y, rows, axis=0)
        params, stats, loss, logits, _ = _train_step(module, False, *carry, Xb, Yb, lr)
        return (params, stats), (loss, (jnp.argmax(logits, axis=1) == Yb).sum())
    (params, stats), (losses, correct) = jax.lax.scan(body, (params, stats), idx)
    return params, stats, losses, correct


class Net:
    """A BN-LeNet: its modules (training and inference: ``LeNet`` with ``training`` True and
    False), variables (``params``, ``stats`` = the batch_stats collection), dtype and device.
    The steps are module-level jitted functions with the module a static argument: compiled
    once per module, dtype and shapes, and shared by the nets that use them."""

    def __init__(self, impl, dtype, device):
        self.impl, self.dtype_name, self.device = impl, dtype, device
        self.dtype = DTYPES[dtype]
        self.module = LeNet(impl, self.dtype, training=True)
        self.predict_module = LeNet(impl, self.dtype, training=False)
        variables = _init(self.module, jnp.zeros((1, 28, 28, 1), self.dtype))
        self.params = _put(self, _plain(variables["params"]))
        self.stats = _plain(variables["batch_stats"])

    def __repr__(self):
        return f"<jax_net.Net {self.impl} {self.dtype_name} on {self.device}>"


def _plain(tree):
    """Nested plain dicts (Flax may hand out FrozenDicts)."""
    return {k: _plain(v) for k, v in tree.items()} if hasattr(tree, "items") else tree


def _put(net, tree):
    return jax.device_put(tree, net.device)


def build(impl, dtype="float32", device="cpu"):
    """A fresh BN-LeNet (random Flax init; load the shared weights with ``load_params``)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown jax BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    jax_backend.setup()
    net = Net(impl, dtype, _device(device))
    _set_state(net, init_state())   # the book's init moved its statistics: start from the reference's
    return net


def _a(net, a, dtype=None):
    return jax.device_put(jnp.asarray(np.asarray(a, dtype=np.float64), dtype or net.dtype), net.device)


def _numpy(a):
    return np.asarray(jnp.asarray(a, jnp.float64)).copy()


def _bn_names(net):
    """(gamma, beta, running mean, running var) variable names of the variant's BN layers."""
    return ("gamma", "beta", "moving_mean", "moving_var") if net.impl == "scratch" else ("scale", "bias", "mean",
                                                                                          "var")


def _bn_shape(net, name):
    """The shape of a BN layer's gamma, beta and initial statistics."""
    c = BN_LAYERS[name]
    if net.impl == "builtin":
        return (c,)
    return (1, c) if name in ("bn3", "bn4") else (1, 1, 1, c)


def _set_state(net, state):
    _, _, rm, rv = _bn_names(net)
    # Flax: statistics in at least float32 (float64 for a float64 net); the book's: the net's dtype
    dt = stats_dtype(net.dtype_name) if net.impl == "builtin" else net.dtype
    net.stats = {name: {rm: _a(net, state[f"{name}.running_mean"], dt).reshape(_bn_shape(net, name)),
                        rv: _a(net, state[f"{name}.running_var"], dt).reshape(_bn_shape(net, name))}
                 for name in BN_LAYERS}


def _slot(net, key):
    """(layer, variable name) in net.params of a reference parameter name."""
    name, kind = key.split(".")
    if name in BN_LAYERS:
        gamma, beta = _bn_names(net)[:2]
        return name, gamma if kind == "gamma" else beta
    return name, "kernel" if kind == "weight" else "bias"


def _ref_shape(key):
    name, kind = key.split(".")
    if name in BN_LAYERS:
        return (BN_LAYERS[name],)
    return LAYERS[name] if kind == "weight" else (LAYERS[name][0],)


def load_params(net, params):
    """Copy the reference's parameters into the net (transposed to Flax's layouts, cast to the dtype)."""
    for key, value in params.items():
        if key not in PARAM_NAMES:
            raise ValueError(f"{key}: not a BN-LeNet parameter; known: {', '.join(PARAM_NAMES)}")
        layer, var = _slot(net, key)
        target = net.params[layer][var]
        v = np.asarray(value, dtype=np.float64)
        if v.size != target.size:
            raise ValueError(f"{key}: shape {tuple(v.shape)} does not fit {tuple(target.shape)}")
        flax_v = param_to_channels_last(key, v.reshape(_ref_shape(key)))
        net.params[layer][var] = _a(net, flax_v).reshape(target.shape)


def get_params(net):
    out = {}
    for key in PARAM_NAMES:
        layer, var = _slot(net, key)
        out[key] = param_from_channels_last(key, _numpy(net.params[layer][var]))
    return out


def get_state(net):
    """Running statistics, flattened: (C,) when per channel; the book's conv layers after a
    training step hold (1, H, 1, C) arrays, returned as their H·C values."""
    _, _, rm, rv = _bn_names(net)
    out = {}
    for name in BN_LAYERS:
        s = net.stats[name]
        out[f"{name}.running_mean"], out[f"{name}.running_var"] = _numpy(s[rm]).reshape(-1), _numpy(s[rv]).reshape(-1)
    return out


def as_arrays(net, x, y):
    """Images (N, 1, 28, 28) as a jax array (N, 28, 28, 1) in the net's dtype on its device, labels
    int32. jax arrays pass through (images already NHWC; NCHW ones are transposed)."""
    if isinstance(x, jax.Array):
        X = x.transpose(0, 2, 3, 1) if x.ndim == 4 and x.shape[1] == 1 and x.shape[3] != 1 else x
    else:
        a = np.asarray(x)
        X = jax.device_put(jnp.asarray(a.reshape(-1, 1, 28, 28).transpose(0, 2, 3, 1).astype(net.dtype_name)),
                           net.device)
    Y = y if isinstance(y, jax.Array) else jax.device_put(jnp.asarray(np.asarray(y, dtype=np.int32)), net.device)
    return X, Y


def _lr(net, lr):
    return jnp.asarray(lr, net.dtype)


def step(net, x, y, lr, capture=True):
    """One SGD step in training mode. Returns (loss before the step, activations)."""
    X, Y = as_arrays(net, x, y)
    net.params, net.stats, loss, logits, acts = _train_step(net.module, bool(capture), net.params, net.stats,
                                                            X, Y, _lr(net, lr))
    out = {name: acts[name] for name in ACTIVATIONS if name in acts}   # jit returns dicts key-sorted
    out["fc3"] = logits
    return float(loss), {k: activation_to_reference(k, _numpy(v)) for k, v in out.items()}


def train_epoch(net, X, Y, order, lr, batch, scan=None, on_step=None):
    """One epoch of SGD steps over ``order`` (indices into X, Y), batches of ``batch`` in that
    order, the last one the remainder: the same steps as calling ``step`` per batch (training
    mode, capture=False), without a transfer to the host per step.

    ``scan`` True: the full batches run as one jitted ``jax.lax.scan`` that takes each batch from
    X on the device, the remainder by the jitted step. ``scan`` False: every batch is the jitted
    step of ``step`` dispatched from Python (the same executable on the same batch: bit for bit
    ``step``'s results), and the losses and counts stay on the device until the end.
    Default (None): the scan except on the CPU, where XLA runs the weight-gradient convolutions
    inside a loop body far slower than as a top-level computation (jax-ml/jax#12868; measured
    with jax 0.10.2, float32, batch 128: conv2's kernel gradient 0.5 ms at the top level, 40 ms
    in a scan; a Fashion-MNIST epoch, builtin: 20 s scanned, 3.4 s stepped, 3.8 s by ``step``
    on 2 CPU cores).
    The book's layer changes its conv statistics' shape at the first step ((1, 1, 1, C) ->
    (1, H, 1, C)), which a scan carry cannot: then the first batch is a step of its own.

    ``on_step(k)``, when given, is called as k more steps are dispatched (progress bars).

    Returns (the losses of the steps as a float64 NumPy array, the number of correct training
    predictions).
    """
    X, Y = as_arrays(net, X, Y)
    order = np.asarray(order)
    if scan is None:
        scan = net.device.platform != "cpu"
    lr = _lr(net, lr)
    n_full = len(order) // batch
    losses, correct = [], []

    def rows(a):
        return jax.device_put(jnp.asarray(np.asarray(a, dtype=np.int32)), net.device)

    def single(r):
        r = rows(r)
        Xb, Yb = jnp.take(X, r, axis=0), jnp.take(Y, r, axis=0)
        net.params, net.stats, loss, logits, _ = _train_step(net.module, False, net.params, net.stats, Xb, Yb, lr)
        losses.append(loss[None])
        correct.append((jnp.argmax(logits, axis=1) == Yb).sum()[None])
        if on_step:
            on_step(1)

    start = 0
    if scan and n_full:
        if not _stats_stable(net, X[:batch], Y[:batch]):
            single(order[:batch])
            start = 1
        if n_full > start:
            idx = rows(order[start * batch:n_full * batch].reshape(-1, batch))
            net.params, net.stats, loss, c = _epoch_scan(net.module, net.params, net.stats, X, Y, idx, lr)
            losses.append(loss)
            correct.append(c)
            if on_step:
                on_step(n_full - start)
        start = n_full
    for b in range(start * batch, len(order), batch):
        single(order[b:b + batch])
    if not losses:
        return np.zeros(0), 0
    return (np.asarray(jnp.concatenate(losses), dtype=np.float64),
            int(np.asarray(jnp.concatenate(correct)).sum()))


def _stats_stable(net, X, Y):
    """True when a training step keeps the shapes and dtypes of the batch statistics."""
    out = jax.eval_shape(partial(_train_step, net.module, False), net.params, net.stats, X, Y, _lr(net, 0.0))[1]
    same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype, net.stats, out)
    return all(jax.tree_util.tree_leaves(same))


def evaluate(net, x, y, batch=1024):
    """Mean cross-entropy and accuracy in inference mode (running statistics)."""
    X, Y = as_arrays(net, x, y)
    total, correct = 0.0, 0
    for i in range(0, X.shape[0], batch):
        t, c = _eval_step(net.predict_module, net.params, net.stats, X[i:i + batch], Y[i:i + batch])
        total += float(t)
        correct += int(c)
    n = X.shape[0]
    return total / n, correct / n
