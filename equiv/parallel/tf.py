"""tf.mirrored, tf.mirrored.sync: Keras 3 ``keras.layers.BatchNormalization`` (TensorFlow backend)
replicated by ``tf.distribute.MirroredStrategy`` over logical CPU devices, one replica each.

Logical devices must be configured before TensorFlow initializes, so the replicas run in a worker
process of their own (``equiv.parallel.worker``) with R logical CPUs, started once per R (a
TensorFlow import, ~5-10 s) and reused: one process per replica count, because a second
MirroredStrategy over another number of devices in the same process reuses the collective group
key of the first (``CollectiveReduceV2`` aborts: "Device CPU:0 is joining a group with size4, but
that group has size 2 (group_key=1)"; TensorFlow 2.21). A step is ``strategy.run`` of the layer under a
``GradientTape`` per replica, with each replica's shard and upstream gradient given by
``experimental_distribute_values_from_function`` (unequal shards too): the gradients are what the
layer leaves, before any optimizer; ``model.fit`` all-reduces them (tests/test_parallel_tf.py).

``synchronized=True`` all-reduces Σx, Σx² and the count (keras/src/backend/tensorflow/nn.py:1515-1544,
``_compute_moments_sync``) and takes var = max(E[x²] − E[x]², 0): count-weighted, the fast variance;
``synchronized=False`` is ``tf.nn.moments`` on the replica's shard. The moving statistics are
MirroredVariables with aggregation NONE (batch_normalization.py:262-275, layers/layer.py:534): an
``assign`` inside ``strategy.run`` writes each replica's own copy; ``get_weights()`` returns
replica 0's.
"""
import numpy as np

from equiv.conventions import DECLARED
from equiv.parallel import ParallelAdapter, Run

TIMEOUT = 120   # seconds for one run of k steps, a strategy built included


class KerasMirrored(ParallelAdapter):
    name, framework = "tf.mirrored", "tensorflow"
    synchronized = False
    dtypes = ("float64", "float32")
    replicas = (2, 4)

    def build(self, momentum, eps):
        self.momentum = momentum
        self.new_batch_weight = DECLARED[self.base].new_batch_weight(momentum)   # 1 − momentum, as Keras computes it

    def run(self, state, steps):
        from equiv.parallel.worker import worker
        w = worker(__name__, ("_setup", dict(devices=self.replica_count)), env={"TF_CPP_MIN_LOG_LEVEL": "2"})
        out = w.call("_run", TIMEOUT, synchronized=self.synchronized, replicas=self.replica_count,
                     channels=self.num_features, ndim=self.ndim, dtype=self.dtype, momentum=self.momentum,
                     eps=self.eps, state={k: np.asarray(v, dtype=np.float64) for k, v in state.items()},
                     steps=[([np.asarray(s) for s in xs], [np.asarray(d) for d in ds]) for xs, ds in steps])
        return Run(**out)


class KerasMirroredSync(KerasMirrored):
    name = "tf.mirrored.sync"
    synchronized = True


# --- in the worker process ---------------------------------------------------------------------

_STRATEGIES = {}
_LAST = {}   # what the last _run's layer returned from get_weights()


def _setup(devices):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def strategy(replicas):
    import tensorflow as tf
    if replicas not in _STRATEGIES:
        _STRATEGIES[replicas] = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    return _STRATEGIES[replicas]


def _nhwc(a):
    a = np.asarray(a, dtype=np.float64)
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def _nchw(a):
    a = np.asarray(a).astype(np.float64)
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def layer(strat, synchronized, channels, ndim, dtype, momentum, eps, state):
    """A built layer under ``strat`` holding ``state`` on every replica."""
    import keras
    with strat.scope():
        bn = keras.layers.BatchNormalization(momentum=momentum, epsilon=eps, synchronized=synchronized, dtype=dtype)
        bn.build((None, channels) if ndim == 2 else (None, None, None, channels))
    for v, k in ((bn.gamma, "gamma"), (bn.beta, "beta"), (bn.moving_mean, "running_mean"),
                 (bn.moving_variance, "running_var")):
        v.assign(np.asarray(state[k], dtype=dtype))
    return bn


def per_replica(var):
    """Every replica's copy of a Keras variable, as float64 NumPy."""
    return [np.asarray(v.numpy(), dtype=np.float64) for v in var.value.values]


def _run(synchronized, replicas, channels, ndim, dtype, momentum, eps, state, steps):
    import tensorflow as tf
    strat = strategy(replicas)
    bn = layer(strat, synchronized, channels, ndim, dtype, momentum, eps, state)

    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
        dx, dg, db = tape.gradient(y, [x, bn.gamma.value, bn.beta.value], output_gradients=dy)
        return y, dx, dg, db

    def values(arrays):
        return strat.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(_nhwc(arrays[ctx.replica_id_in_sync_group]), dtype=dtype))

    run = dict(ys=[], dxs=[], dgammas=[], dbetas=[])
    for xs, dys in steps:
        out = strat.run(step, args=(values(xs), values(dys)))
        for key, o in zip(("ys", "dxs", "dgammas", "dbetas"), out):
            run[key].append([_nchw(t.numpy()) for t in strat.experimental_local_results(o)])
    vs = [per_replica(v) for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)]
    run["states"] = [dict(zip(("gamma", "beta", "running_mean", "running_var"), r)) for r in zip(*vs)]
    _LAST["get_weights"] = [np.asarray(w, dtype=np.float64) for w in bn.get_weights()]
    return run


def _fit(synchronized, replicas, x, dy, *, lr, reduction, momentum, eps, dtype="float64"):
    """One ``model.fit`` step of a model that is just the layer (2-D input), on the global batch x,
    with the loss Σ y·dy reduced by ``reduction`` and SGD(lr): what each replica holds after it and
    what ``get_weights()`` returns."""
    import keras
    strat = strategy(replicas)

    class Dot(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return keras.ops.sum(y_true * y_pred, axis=-1)

    with strat.scope():
        model = keras.Sequential([keras.Input((x.shape[1],), dtype=dtype), keras.layers.BatchNormalization(
            momentum=momentum, epsilon=eps, synchronized=synchronized, dtype=dtype)])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss=Dot(reduction=reduction, dtype=dtype))
    model.fit(np.asarray(x, dtype=dtype), np.asarray(dy, dtype=dtype), batch_size=len(x), epochs=1,
              shuffle=False, verbose=0)
    bn = model.layers[0]
    vs = [per_replica(v) for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)]
    return dict(states=[dict(zip(("gamma", "beta", "running_mean", "running_var"), r)) for r in zip(*vs)],
                get_weights=[np.asarray(w, dtype=np.float64) for w in bn.get_weights()])


def _last_get_weights():
    """What ``get_weights()`` returned on the layer of the last ``_run``."""
    return _LAST["get_weights"]
