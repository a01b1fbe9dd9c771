"""BN-LeNet in TensorFlow / Keras 3, two variants behind the protocol of ``equiv.lenet``.

- ``builtin`` (the net ``tf.keras``): ``keras.layers.BatchNormalization``, as ``equiv.adapters.tf_keras`` uses it,
  built with momentum and epsilon from ``equiv.lenet.CONVENTIONS["tf.keras"]`` (Keras'
  defaults: momentum 0.99 = weight of the old value, epsilon 1e-3). Its moving statistics
  move in the training call (``training=True``), in the forward pass.
- ``scratch``: the book's ``BatchNorm`` (``equiv.book.d2l_tensorflow``, verbatim) as
  ``equiv.adapters.tf_scratch`` uses it: ``BookLayer`` only restores Keras 2's no-op
  ``add_update``, which Keras 3 removed. It hard-codes eps 1e-5 and momentum 0.1 (the
  new-batch weight); its ``assign_moving_average`` runs in the training call.

Mode, for both: the ``training`` argument of every call (``True`` in ``step``, ``False`` in
``evaluate``).

Layout: channels-last, as the book's TensorFlow tab (NHWC; ``Conv2D`` kernels
(kh, kw, in, out), ``Dense`` kernels (in, out) with y = x K + b). Weights transfer from
``reference.lenet``'s PyTorch layouts: conv kernel = W.transpose(2, 3, 1, 0), dense kernel =
W.T, except fc1: Keras flattens the NHWC pool2 output in (h, w, c) order, the reference its
NCHW output in (c, h, w) order, so fc1's kernel rows are permuted to match (``equiv.lenet.layout``)
and both nets compute the same function. ``get_params`` undoes every conversion; ``step``
returns 4-D activations transposed back to NCHW and "flat" re-ordered to (c, h, w), so that
the lockstep compares like with like.

dtype: every layer is built with ``dtype="float64"`` or ``"float32"`` (a Keras dtype policy:
variables and computation in that dtype).

Loss: mean of ``tf.nn.sparse_softmax_cross_entropy_with_logits`` over the batch, which is
what the book's ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` computes;
not the Keras loss object itself, whose Keras 3 ``__call__`` converts the logits to its own
dtype (float32 by default), which would round a float64 net's logits.

Optimizer: plain SGD written as ``w.assign_sub(lr · grad)`` in the net's dtype, with the
gradients of a ``tf.GradientTape``. Not ``keras.optimizers.SGD`` (the book's): it keeps its
learning rate as a float32 variable by default, so a float64 net would be updated with
lr rounded to float32, a non-BN difference (as gluon's Trainer; see ``mxnet_net``).

Speed: the step is a ``tf.function`` with a fixed input signature (batch dimension None, lr
a scalar tensor), traced once per net and capture flag; the epoch's smaller last batch does
not retrace. ``as_arrays`` puts the whole set on the device once, wrapped in ``Batches`` so
that ``X[idx]`` with a NumPy index array (``train.train``) gathers a batch there
(``tf.gather``; tf tensors have no fancy indexing).

Float32 on the CPU, both variants: TF sums a channel's values (the batch mean and variance in
``tf.nn.moments`` / ``tf.reduce_mean``, and dbeta, dgamma in the backward) by Eigen's
preserved-inner-dimension reduction, row after row in float32 (one accumulator per channel
below 8 channels, as bn1's 6; four interleaved ones above). On Fashion-MNIST, batch 128, bn1's
73,728 values a channel make the batch mean 7.5e-5 off at step 1, past the lockstep tolerance
(``tests/test_lockstep_tf.py`` pins it).

``build`` turns TF32 off (matters on CUDA only: ``equiv.backends.tf.setup``), as the torch net does.
"""
import numpy as np
import tensorflow as tf

from equiv.adapters.tf_scratch import BookLayer
from equiv.backends import tf as tf_backend
from equiv.conventions import DECLARED
from equiv.lenet import CONVENTIONS
from equiv.lenet.layout import activation_to_reference, param_from_channels_last, param_to_channels_last
from reference.lenet import BN_LAYERS, PARAM_NAMES, init_state

keras = tf.keras

FRAMEWORK = "tf"
IMPLS = ("builtin", "scratch")

_DTYPES = {"float64": tf.float64, "float32": tf.float32}


def version():
    return f"{tf.__version__} (keras {keras.__version__})"


def devices():
    return ("cpu", "cuda") if tf.config.list_physical_devices("GPU") else ("cpu",)


def _tf_device(device):
    kind, _, index = str(device).partition(":")
    if kind == "cpu":
        return "/CPU:0"
    if kind == "cuda":
        if not tf.config.list_physical_devices("GPU"):
            raise ValueError("--device cuda asked for, but tensorflow sees no GPU "
                             "(tf.config.list_physical_devices('GPU') is empty)")
        return f"/GPU:{int(index or 0)}"
    raise ValueError(f"device must be cpu or cuda, got {device!r}")


def _bn(impl, name, dtype, synchronized=False):
    if impl == "scratch":
        return BookLayer(dtype=dtype, name=name)
    c = CONVENTIONS["tf.keras"]
    momentum = DECLARED["tf.keras"].momentum_for(c["new_batch_weight"])   # 0.99: the old value's weight
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=c["eps"], dtype=dtype, name=name,
                                           synchronized=synchronized)


class Batches:
    """A tf tensor on the net's device that a NumPy index array can index (``tf.gather``),
    as ``train.train`` does (``X[idx]``); slices and integers index it directly."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __getitem__(self, idx):
        if isinstance(idx, (slice, int, np.integer)):
            return self.tensor[idx]
        return tf.gather(self.tensor, np.asarray(idx))

    def __len__(self):
        return int(self.tensor.shape[0])

    @property
    def shape(self):
        return tuple(self.tensor.shape)


class _Net:
    """Named Keras layers applied in order (``names``), reachable as attributes; the
    traced steps (one per capture flag) are kept in ``_steps``."""

    def __init__(self, layers, impl, dtype, device):
        self.names = [name for name, _ in layers]
        self.layers = dict(layers)
        self.impl, self.dtype_name, self.device = impl, dtype, str(device)
        self.tf_dtype, self.tf_device = _DTYPES[dtype], _tf_device(device)
        self._steps = {}

    def __getattr__(self, name):
        layers = self.__dict__.get("layers", {})
        if name in layers:
            return layers[name]
        raise AttributeError(name)

    def forward(self, x, training, capture=False):
        """(logits, activations): activations name -> tensor (only when capture)."""
        acts = {}
        h = x
        for name in self.names:
            layer = self.layers[name]
            h = layer(h, training=training) if name.startswith("bn") else layer(h)
            if capture:
                acts[name] = h
        return h, acts


def build(impl, dtype="float32", device="cpu", *, synchronized=False):
    """A fresh BN-LeNet (random Keras init; load the shared weights with ``load_params``).
    ``synchronized``: the builtin BN layers' ``synchronized`` argument (under a
    ``tf.distribute`` strategy's scope: ``equiv.lenet.tf_mirrored_net``)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown tf BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    tf_backend.setup()
    tf_device = _tf_device(device)
    L, d = keras.layers, dtype
    with tf.device(tf_device):
        layers = [
            ("conv1", L.Conv2D(6, kernel_size=5, dtype=d, name="conv1")), ("bn1", _bn(impl, "bn1", d, synchronized)),
            ("sig1", L.Activation("sigmoid", dtype=d, name="sig1")),
            ("pool1", L.AvgPool2D(pool_size=2, strides=2, dtype=d, name="pool1")),
            ("conv2", L.Conv2D(16, kernel_size=5, dtype=d, name="conv2")), ("bn2", _bn(impl, "bn2", d, synchronized)),
            ("sig2", L.Activation("sigmoid", dtype=d, name="sig2")),
            ("pool2", L.AvgPool2D(pool_size=2, strides=2, dtype=d, name="pool2")),
            ("flat", L.Flatten(dtype=d, name="flat")),
            ("fc1", L.Dense(120, dtype=d, name="fc1")), ("bn3", _bn(impl, "bn3", d, synchronized)),
            ("sig3", L.Activation("sigmoid", dtype=d, name="sig3")),
            ("fc2", L.Dense(84, dtype=d, name="fc2")), ("bn4", _bn(impl, "bn4", d, synchronized)),
            ("sig4", L.Activation("sigmoid", dtype=d, name="sig4")),
            ("fc3", L.Dense(10, dtype=d, name="fc3")),
        ]
        net = _Net(layers, impl, dtype, device)
        net.forward(tf.zeros((1, 28, 28, 1), dtype=_DTYPES[dtype]), training=False)   # builds every layer
    _set_state(net, init_state())
    return net


def _t(net, a):
    """A tf tensor in the net's dtype on its device (exact: the data are rounded to the dtype)."""
    with tf.device(net.tf_device):
        return tf.cast(tf.constant(np.asarray(a, dtype=np.float64)), net.tf_dtype)


def _numpy(t):
    """Float64 NumPy copy of a tf tensor or Keras variable."""
    return np.array(t.numpy(), dtype=np.float64)


def _variables(net):
    """name of reference.lenet.PARAM_NAMES -> Keras variable."""
    out = {}
    for key in PARAM_NAMES:
        name, kind = key.split(".")
        layer = net.layers[name]
        out[key] = getattr(layer, {"weight": "kernel", "bias": "bias", "gamma": "gamma", "beta": "beta"}[kind])
    return out


def _set_state(net, state):
    for name in BN_LAYERS:
        m = net.layers[name]
        m.moving_mean.assign(_t(net, state[f"{name}.running_mean"]))
        m.moving_variance.assign(_t(net, state[f"{name}.running_var"]))


def load_params(net, params):
    """Copy the reference's parameters into the net, converted to Keras' layouts (conv kernels
    transposed to (kh, kw, in, out), dense kernels to (in, out), fc1's rows permuted to Keras'
    flatten order) and cast to the dtype."""
    targets = _variables(net)
    for key, value in params.items():
        var = targets[key]
        expected = param_from_channels_last(key, np.zeros(tuple(var.shape))).shape   # the reference's
        if np.shape(value) != expected:
            raise ValueError(f"{key}: shape {np.shape(value)} does not fit {expected}")
        var.assign(_t(net, param_to_channels_last(key, value)))


def get_params(net):
    return {key: param_from_channels_last(key, _numpy(var)) for key, var in _variables(net).items()}


def get_state(net):
    out = {}
    for name in BN_LAYERS:
        m = net.layers[name]
        out[f"{name}.running_mean"] = _numpy(m.moving_mean).reshape(-1)
        out[f"{name}.running_var"] = _numpy(m.moving_variance).reshape(-1)
    return out


def _images(net, x):
    """Images as a tf tensor (N, 28, 28, 1) in the net's dtype: NumPy (N, 1, 28, 28) is
    transposed to NHWC; tf tensors (what ``as_arrays`` made) pass unchanged."""
    if isinstance(x, Batches):
        return x.tensor
    if isinstance(x, tf.Tensor):
        return x
    a = np.asarray(x, dtype=np.float64)
    return _t(net, a.reshape(-1, 1, 28, 28).transpose(0, 2, 3, 1))


def _labels(net, y):
    if isinstance(y, Batches):
        return y.tensor
    if isinstance(y, tf.Tensor):
        return y
    with tf.device(net.tf_device):
        return tf.constant(np.asarray(y, dtype=np.int32).reshape(-1))


def as_arrays(net, x, y):
    """Images (N, 1, 28, 28) and labels as ``Batches`` on the net's device: images NHWC in its
    dtype, labels int32. ``X[idx]`` gathers a batch on the device; tf tensors and ``Batches``
    pass through unchanged."""
    X = x if isinstance(x, Batches) else Batches(_images(net, x))
    Y = y if isinstance(y, Batches) else Batches(_labels(net, y))
    return X, Y


def _mean_loss(logits, y):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


def _step_fn(net, capture):
    """The traced training step for this net and capture flag (traced once: fixed signature)."""
    if capture in net._steps:
        return net._steps[capture]
    variables = list(_variables(net).values())
    spec = [tf.TensorSpec([None, 28, 28, 1], net.tf_dtype), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], net.tf_dtype)]

    @tf.function(input_signature=spec)
    def fn(x, y, lr):
        with tf.GradientTape() as tape:
            logits, acts = net.forward(x, training=True, capture=capture)   # running stats move here
            loss = _mean_loss(logits, y)
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads):
            v.assign_sub(lr * g)          # plain SGD in the net's dtype
        acts["fc3"] = logits
        return loss, acts

    net._steps[capture] = fn
    return fn


def step(net, x, y, lr, capture=True):
    """One SGD step in training mode. Returns (loss before the step, activations)."""
    X, Y = _images(net, x), tf.cast(_labels(net, y), tf.int32)
    with tf.device(net.tf_device):
        loss, acts = _step_fn(net, capture)(X, Y, tf.constant(lr, dtype=net.tf_dtype))
    return float(loss), {name: activation_to_reference(name, _numpy(t)) for name, t in acts.items()}


def evaluate(net, x, y, batch=1024):
    """Mean cross-entropy and accuracy in inference mode (running statistics)."""
    X, Y = as_arrays(net, x, y)
    n = len(X)
    total, correct = 0.0, 0
    with tf.device(net.tf_device):
        for i in range(0, n, batch):
            logits, _ = net.forward(X[i:i + batch], training=False)
            yb = tf.cast(Y[i:i + batch], tf.int32)
            total += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)))
            correct += int(tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1, output_type=tf.int32) == yb, tf.int32)))
    return total / n, correct / n
