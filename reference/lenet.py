"""The book's BN-LeNet in NumPy float64: the reference for lockstep comparisons.

Dive into Deep Learning, "LeNet with Batch Normalization" (``BNLeNetScratch``)::

    x (N, 1, 28, 28)
    conv1  Conv(6, 5x5, no padding)   -> (N, 6, 24, 24)
    bn1    BN(6)    sig1 sigmoid    pool1 AvgPool(2, 2) -> (N, 6, 12, 12)
    conv2  Conv(16, 5x5)              -> (N, 16, 8, 8)
    bn2    BN(16)   sig2 sigmoid    pool2 AvgPool(2, 2) -> (N, 16, 4, 4)
    flat   Flatten                    -> (N, 256)
    fc1    Dense(120)  bn3 BN(120)  sig3 sigmoid
    fc2    Dense(84)   bn4 BN(84)   sig4 sigmoid
    fc3    Dense(10)                  -> logits (N, 10)

Loss: softmax cross-entropy, mean over the batch. Optimizer: plain SGD.

Layout and parameter shapes follow PyTorch: NCHW; conv weights (out, in, kh, kw);
dense weights (out, in) with y = x W^T + b; BN layers carry ``gamma`` / ``beta`` and
the state ``running_mean`` / ``running_var``. All four BN layers use the oracle
(``reference.batch_norm``); nothing about BN is re-derived here. The BN conventions
(eps, weight of the new batch in the running statistics, unbiased running variance)
are arguments, so that any framework's convention can be reproduced; the defaults are
PyTorch's.

Initialisation (``init_params``) is the book's ``d2l.init_cnn``: Xavier (Glorot)
uniform conv and dense weights, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)); biases
as PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); gamma = 1, beta = 0.

NumPy only.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reference.batch_norm import (
    batch_norm_backward,
    batch_norm_infer,
    batch_norm_train,
    channel_sum,
    update_running_stats,
)

# true for a type checker only, as typing.TYPE_CHECKING: the oracle imports NumPy alone (tests/test_oracle.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    Float64Array = NDArray[np.float64]
    # name -> float64 array: parameters ("conv1.weight", ...), gradients, BN state ("bn1.running_mean", ...)
    # or the cached activations ("conv1", ...)
    Arrays = dict[str, Float64Array]

NUM_CLASSES = 10

# Conv and dense layer name -> weight shape (PyTorch layout); BN layer name -> channels.
LAYERS = {
    "conv1": (6, 1, 5, 5),
    "conv2": (16, 6, 5, 5),
    "fc1": (120, 256),
    "fc2": (84, 120),
    "fc3": (NUM_CLASSES, 84),
}
BN_LAYERS = {"bn1": 6, "bn2": 16, "bn3": 120, "bn4": 84}

# Order of the cached activations (the keys of ``cache``), input to output.
ACTIVATIONS = ("conv1", "bn1", "sig1", "pool1", "conv2", "bn2", "sig2", "pool2", "flat",
               "fc1", "bn3", "sig3", "fc2", "bn4", "sig4", "fc3")

# Parameter names in network order.
PARAM_NAMES = ("conv1.weight", "conv1.bias", "bn1.gamma", "bn1.beta",
               "conv2.weight", "conv2.bias", "bn2.gamma", "bn2.beta",
               "fc1.weight", "fc1.bias", "bn3.gamma", "bn3.beta",
               "fc2.weight", "fc2.bias", "bn4.gamma", "bn4.beta",
               "fc3.weight", "fc3.bias")


def init_params(seed: "int | None") -> "Arrays":
    """Fresh parameters: dict name -> float64 array (see the module docstring for the init)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in LAYERS.items():
        out_, in_ = shape[0], shape[1]
        receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        fan_in, fan_out = in_ * receptive, out_ * receptive
        a = np.sqrt(6.0 / (fan_in + fan_out))
        params[f"{name}.weight"] = rng.uniform(-a, a, size=shape)
        b = 1.0 / np.sqrt(fan_in)
        params[f"{name}.bias"] = rng.uniform(-b, b, size=out_)
    for name, c in BN_LAYERS.items():
        params[f"{name}.gamma"] = np.ones(c)
        params[f"{name}.beta"] = np.zeros(c)
    return {k: params[k] for k in PARAM_NAMES}


def init_state() -> "Arrays":
    """Fresh BN state: running means 0, running variances 1."""
    state = {}
    for name, c in BN_LAYERS.items():
        state[f"{name}.running_mean"] = np.zeros(c)
        state[f"{name}.running_var"] = np.ones(c)
    return state


# --- layers ---------------------------------------------------------------------------

def _conv_forward(x, w, b):
    """Valid cross-correlation, stride 1: (N, C, H, W) * (O, C, kh, kw) -> (N, O, H', W')."""
    kh, kw = w.shape[2:]
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))          # (N, C, H', W', kh, kw)
    out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))      # (N, H', W', O)
    return out.transpose(0, 3, 1, 2) + b.reshape(1, -1, 1, 1)


def _conv_backward(x, w, dout, need_dx):
    """Gradients (dx or None, dw, db) of ``_conv_forward`` for upstream gradient dout."""
    kh, kw = w.shape[2:]
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))          # (N, C, H', W', kh, kw)
    dw = np.tensordot(dout, win, axes=([0, 2, 3], [0, 2, 3]))    # (O, C, kh, kw)
    db = channel_sum(dout, (0, 2, 3), (dout.shape[1],))
    dx = None
    if need_dx:
        ho, wo = dout.shape[2:]
        dcols = np.tensordot(dout, w, axes=([1], [0]))           # (N, H', W', C, kh, kw)
        dx = np.zeros_like(x)
        for i in range(kh):
            for j in range(kw):
                dx[:, :, i:i + ho, j:j + wo] += dcols[..., i, j].transpose(0, 3, 1, 2)
    return dx, dw, db


def _pool_forward(x):
    """2x2 average pooling, stride 2 (H and W even)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def _pool_backward(dout):
    return np.repeat(np.repeat(dout, 2, axis=2), 2, axis=3) / 4.0


def _sigmoid(z):
    # exp(-|z|) never overflows; the two branches are the same function.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _bn_forward(name, x, params, state, new_state, training, eps, new_batch_weight, unbiased):
    gamma, beta = params[f"{name}.gamma"], params[f"{name}.beta"]
    rm, rv = state[f"{name}.running_mean"], state[f"{name}.running_var"]
    if not training:
        return batch_norm_infer(x, gamma, beta, rm, rv, eps=eps, axis=1)
    y, mean, var = batch_norm_train(x, gamma, beta, eps=eps, axis=1)
    count = x.size // x.shape[1]                                   # N·H·W values per channel
    rm, rv = update_running_stats(rm, rv, mean, var, count,
                                  new_batch_weight=new_batch_weight, unbiased=unbiased)
    new_state[f"{name}.running_mean"], new_state[f"{name}.running_var"] = rm, rv
    return y


# --- network --------------------------------------------------------------------------

def forward(params: "Arrays", state: "Arrays", x: "ArrayLike", *, training: bool,
            eps: float = 1e-5, new_batch_weight: float = 0.1,
            unbiased: bool = True) -> "tuple[Float64Array, Arrays, Arrays]":
    """Forward pass. Returns (logits, new_state, cache).

    ``training=True`` normalizes with batch statistics and returns the updated running
    statistics in ``new_state``; ``training=False`` normalizes with the running statistics
    and returns ``state`` unchanged (a copy). ``state`` and ``params`` are not modified.
    ``cache`` maps every layer name of ``ACTIVATIONS`` to its output, in network order.
    ``x`` is (N, 1, 28, 28), cast to float64 (scale pixel values yourself, e.g. /255).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
        raise ValueError(f"BN-LeNet expects input of shape (N, 1, 28, 28), got {x.shape}")
    p = params
    bn = dict(params=params, state=state, training=training, eps=eps,
              new_batch_weight=new_batch_weight, unbiased=unbiased)
    new_state = {k: np.array(v, dtype=np.float64) for k, v in state.items()}
    bn["new_state"] = new_state
    c = {}
    c["conv1"] = _conv_forward(x, p["conv1.weight"], p["conv1.bias"])
    c["bn1"] = _bn_forward("bn1", c["conv1"], **bn)
    c["sig1"] = _sigmoid(c["bn1"])
    c["pool1"] = _pool_forward(c["sig1"])
    c["conv2"] = _conv_forward(c["pool1"], p["conv2.weight"], p["conv2.bias"])
    c["bn2"] = _bn_forward("bn2", c["conv2"], **bn)
    c["sig2"] = _sigmoid(c["bn2"])
    c["pool2"] = _pool_forward(c["sig2"])
    c["flat"] = c["pool2"].reshape(x.shape[0], -1)
    c["fc1"] = c["flat"] @ p["fc1.weight"].T + p["fc1.bias"]
    c["bn3"] = _bn_forward("bn3", c["fc1"], **bn)
    c["sig3"] = _sigmoid(c["bn3"])
    c["fc2"] = c["sig3"] @ p["fc2.weight"].T + p["fc2.bias"]
    c["bn4"] = _bn_forward("bn4", c["fc2"], **bn)
    c["sig4"] = _sigmoid(c["bn4"])
    c["fc3"] = c["sig4"] @ p["fc3.weight"].T + p["fc3.bias"]
    return c["fc3"], new_state, c


def cross_entropy(logits: "Float64Array", y: "ArrayLike") -> "tuple[float, Float64Array]":
    """Mean softmax cross-entropy and its gradient w.r.t. the logits."""
    y = np.asarray(y).astype(np.intp).reshape(-1)
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(n), y].mean()
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), y] -= 1.0
    return float(loss), dlogits / n


def loss_and_grads(params: "Arrays", state: "Arrays", x: "ArrayLike", y: "ArrayLike",
                   **bn_kwargs) -> "tuple[float, Arrays, Arrays, Arrays]":
    """Training-mode forward, loss and analytic backward.

    Returns (loss, grads, new_state, cache); ``grads`` has the keys of ``params``.
    ``bn_kwargs``: eps, new_batch_weight, unbiased (as in ``forward``). BN always
    normalizes with batch statistics here, as in a training step of every framework.
    """
    eps = bn_kwargs.get("eps", 1e-5)
    x = np.asarray(x, dtype=np.float64)
    logits, new_state, c = forward(params, state, x, training=True, **bn_kwargs)
    loss, d = cross_entropy(logits, y)
    p, g = params, {}

    def dense(name, inp, dout):
        g[f"{name}.weight"] = dout.T @ inp
        g[f"{name}.bias"] = dout.sum(axis=0)
        return dout @ p[f"{name}.weight"]

    def bn_sig(bn_name, pre, sig, dout):
        """Backward through sigmoid then BN; returns the gradient w.r.t. the BN input."""
        dz = dout * sig * (1.0 - sig)
        dx, g[f"{bn_name}.gamma"], g[f"{bn_name}.beta"] = batch_norm_backward(
            pre, p[f"{bn_name}.gamma"], dz, eps=eps, axis=1)
        return dx

    d = dense("fc3", c["sig4"], d)
    d = bn_sig("bn4", c["fc2"], c["sig4"], d)
    d = dense("fc2", c["sig3"], d)
    d = bn_sig("bn3", c["fc1"], c["sig3"], d)
    d = dense("fc1", c["flat"], d)
    d = _pool_backward(d.reshape(c["pool2"].shape))
    d = bn_sig("bn2", c["conv2"], c["sig2"], d)
    d, g["conv2.weight"], g["conv2.bias"] = _conv_backward(c["pool1"], p["conv2.weight"], d, True)
    d = _pool_backward(d)
    d = bn_sig("bn1", c["conv1"], c["sig1"], d)
    _, g["conv1.weight"], g["conv1.bias"] = _conv_backward(x, p["conv1.weight"], d, False)
    return loss, {k: g[k] for k in params}, new_state, c


def sgd_step(params: "Arrays", grads: "Arrays", lr: float) -> "Arrays":
    """Plain SGD: returns a new dict, p - lr * grad for every parameter."""
    return {k: v - lr * grads[k] for k, v in params.items()}


# --- data parallelism -------------------------------------------------------------------

def shards(a: "ArrayLike", replicas: int) -> "list[np.ndarray]":
    """``a`` cut along the batch axis into ``replicas`` equal consecutive shards (replica r: the r-th)."""
    a = np.asarray(a)
    if replicas < 1 or len(a) % replicas:
        raise ValueError(f"a batch of {len(a)} cannot be cut into {replicas} equal shards")
    return np.split(a, replicas)


def data_parallel_loss_and_grads(params: "Arrays", state: "Arrays", x: "ArrayLike",
                                 y: "ArrayLike", *, replicas: int, synchronized: bool,
                                 **bn_kwargs) -> "tuple[float, Arrays, list[Arrays], Arrays]":
    """One data-parallel training step on R = ``replicas`` replicas of the global batch ``x``.

    Every replica holds the same parameters and starts the step from the running statistics
    ``state`` (an engine that broadcasts rank 0's buffers before each forward, as DDP does,
    or one whose statistics are synchronized). Replica r sees ``shards(x, R)[r]``.

    - ``synchronized=True``: every BN layer normalizes with the global batch's statistics; the
      step on the global mean loss is exactly the single-device step on the global batch,
      ``loss_and_grads(params, state, x, y)`` (every replica ends with the same state).
    - ``synchronized=False``: each replica's BN layers normalize its own shard; its loss is its
      shard's mean and the parameter gradients are averaged over the replicas (DDP's all-reduce
      divided by the world size), which is the gradient of the mean of the shard losses, the
      loss returned. Replica r's running statistics are updated with its own shard's.

    Returns (loss, grads, states, cache): ``states`` the running statistics of each replica
    after the step (rank 0's first), ``cache`` every layer's output for the global batch (the
    shards' outputs concatenated, replica order).
    """
    if synchronized:
        loss, grads, new_state, cache = loss_and_grads(params, state, x, y, **bn_kwargs)
        return loss, grads, [new_state] * replicas, cache
    steps = [loss_and_grads(params, state, xs, ys, **bn_kwargs)
             for xs, ys in zip(shards(x, replicas), shards(y, replicas))]
    loss = float(np.mean([s[0] for s in steps]))
    # steps holds one step per replica (shards raises for replicas < 1): sum() never returns its start, 0
    grads = {k: sum(s[1][k] for s in steps) / replicas for k in params}  # type: ignore[misc]
    cache = {k: np.concatenate([s[3][k] for s in steps], axis=0) for k in ACTIVATIONS}
    return loss, grads, [s[2] for s in steps], cache
