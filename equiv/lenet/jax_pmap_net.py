"""BN-LeNet under ``jax.pmap`` with ``flax.linen.BatchNorm(axis_name=...)``: R = 4 replicas (CPU
devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``), behind the protocol of
``equiv.lenet`` (``DATA_PARALLEL``: 4 replicas, BN synchronized).

The net is ``equiv.lenet.jax_net``'s ``LeNet`` with its BN layers given ``axis_name``: Flax
``lax.pmean``s every replica's E[x] and E[x²] (its default fast variance; flax/linen/
normalization.py ``_compute_stats``), so each replica normalizes its 32 with the global batch's
statistics, and every replica's running statistics are the same. The training step is Flax's
data-parallel recipe: parameters and statistics replicated per device (as
``flax.jax_utils.replicate``), each replica's gradient of its own mean loss, then ``lax.pmean``
of the gradients (and the loss) over the axis: the gradient of the global mean loss. So the
step is the single-device step on the global batch of 128
(``reference.lenet.data_parallel_loss_and_grads(synchronized=True)``).

``step`` cuts the global batch into the replicas' shards (replica r: the r-th consecutive 32);
``get_params`` and ``get_state`` are replica 0's (``spread``: the largest difference of any
parameter or statistic between replicas after the last step, 0 when they stay replicated).
Float64 is on through ``equiv.backends.jax.setup()`` (``equiv.registry.load_lenet``; ``build``).
"""
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from equiv.conventions import DECLARED
from equiv.lenet import CONVENTIONS, jax_net
from equiv.lenet.layout import activation_to_reference
from reference.lenet import ACTIVATIONS, init_state, shards

FRAMEWORK = "jax"
IMPLS = ("pmap",)
REPLICAS = 4
DATA_PARALLEL = (REPLICAS, True)
AXIS = "replicas"
DEVICES_FLAG = "XLA_FLAGS=--xla_force_host_platform_device_count=4"

version = jax_net.version


def devices():
    return ("cpu",)


class SyncLeNet(jax_net.LeNet):
    """jax_net's BN-LeNet, its BN layers synchronized over ``AXIS``."""

    def bn(self, name, channels, ndim):
        c = CONVENTIONS["jax.pmap"]
        momentum = DECLARED["flax.linen"].momentum_for(c["new_batch_weight"])
        return nn.BatchNorm(use_running_average=not self.training, momentum=momentum, epsilon=c["eps"],
                            dtype=self.dtype, param_dtype=self.dtype, axis_name=AXIS, name=name)


@lru_cache(maxsize=None)
def _pmapped(module, capture):
    def replica(params, stats, X, Y, lr):
        def loss_fn(params):
            out, updated = module.apply({"params": params, "batch_stats": stats}, X, capture=capture,
                                        mutable=["batch_stats"])
            logits, acts = out if capture else (out, {})
            return jax_net._loss(logits, Y), (updated["batch_stats"], logits, acts)
        (loss, (stats, logits, acts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        grads = jax.lax.pmean(grads, AXIS)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        return params, stats, jax.lax.pmean(loss, AXIS), logits, acts
    return jax.pmap(replica, axis_name=AXIS, in_axes=(0, 0, 0, 0, None))


def _stack(tree):
    """Replicated per device, as host arrays (pmap places them; arrays committed to one device it refuses)."""
    return jax.tree_util.tree_map(lambda a: np.stack([np.asarray(a)] * REPLICAS), tree)


def _first(tree):
    return jax.tree_util.tree_map(lambda a: a[0], tree)


def _spread(tree):
    """The largest difference between a replica's copy and replica 0's, computed on the host: as an
    eager JAX op on the 4 devices' arrays it is one more program with an all-reduce, and on 2 cores
    with a cold compilation cache one device's thread at times never reached that all-reduce and
    XLA aborted the process after 40 s ("Termination timeout for `all reduce ...`: Expected 4
    threads to join the rendezvous, but only 3 of them arrived on time"; 3 of 10 runs of
    tests/test_lockstep_parallel.py and tests/test_parallel_jax.py, two at a time, jaxlib 0.10.2; on the
    host: 0 of 8)."""
    return max(float(np.max(np.abs(a - a[0]))) for a in map(np.asarray, jax.tree_util.tree_leaves(tree)))


def build(impl, dtype="float32", device="cpu"):
    if impl not in IMPLS:
        raise ValueError(f"unknown data-parallel jax BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    if str(device) != "cpu":
        raise ValueError(f"jax.pmap runs on {REPLICAS} CPU devices here, not on {device!r}")
    jax_net.jax_backend.setup()
    if jax.device_count() < REPLICAS:
        raise ValueError(f"jax.pmap needs {REPLICAS} devices, this process has {jax.device_count()}: "
                         f"start it with {DEVICES_FLAG}")
    net = jax_net.Net.__new__(jax_net.Net)
    net.impl, net.dtype_name, net.device = "builtin", dtype, jax.devices("cpu")[0]
    net.dtype = jax_net.DTYPES[dtype]
    net.module = SyncLeNet("builtin", net.dtype, training=True)
    net.predict_module = SyncLeNet("builtin", net.dtype, training=False)   # no pmean: runs on one device
    variables = jax_net._init(net.predict_module, jnp.zeros((1, 28, 28, 1), net.dtype))
    net.params = jax_net._plain(variables["params"])
    jax_net._set_state(net, init_state())
    net.spread = 0.0
    return net


load_params, get_params, get_state, evaluate = (jax_net.load_params, jax_net.get_params, jax_net.get_state,
                                                jax_net.evaluate)


def step(net, x, y, lr, capture=True):
    """One pmapped step on the global batch (cut into the replicas' shards): (the global mean loss,
    every layer's output for the global batch, in the reference's layout)."""
    shards(np.asarray(y), REPLICAS)                     # ValueError unless R equal shards
    X, Y = jax_net.as_arrays(net, x, y)
    X = np.asarray(X).reshape((REPLICAS, -1) + X.shape[1:])
    Y = np.asarray(Y).reshape((REPLICAS, -1))
    params, stats, loss, logits, acts = _pmapped(net.module, bool(capture))(
        _stack(net.params), _stack(net.stats), X, Y, np.asarray(lr, net.dtype_name))
    net.spread = max(_spread(params), _spread(stats))
    net.params, net.stats = _first(params), _first(stats)
    out = {name: acts[name] for name in ACTIVATIONS if name in acts}
    out["fc3"] = logits
    glob = lambda a: np.asarray(a).reshape((-1,) + a.shape[2:])   # noqa: E731  (R, n, ...) -> (R·n, ...)
    return float(loss[0]), {k: activation_to_reference(k, glob(v)) for k, v in out.items()}
