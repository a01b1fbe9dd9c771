"""BN-LeNet under ``tf.distribute.MirroredStrategy``: R = 4 replicas on 4 logical CPUs, behind the
protocol of ``equiv.lenet`` (``DATA_PARALLEL``: per variant).

- ``tf.mirrored``: ``equiv.lenet.tf_net``'s builtin net (``keras.layers.BatchNormalization``,
  Keras' defaults) built in the strategy's scope: each replica normalizes its own 32 of the global
  batch of 128 (``reference.lenet.data_parallel_loss_and_grads(synchronized=False)``).
- ``tf.mirrored.sync``: the same net with ``BatchNormalization(synchronized=True)``: every BN layer
  all-reduces Σx, Σx² and the count (keras/src/backend/tensorflow/nn.py ``_compute_moments_sync``,
  var = E[x²] − E[x]²), so each replica normalizes with the global batch's statistics: the
  single-device step on the 128 (``synchronized=True``).

The step is MirroredStrategy's recipe: ``strategy.run`` of a replica function under a
``GradientTape``, then ``keras.optimizers.SGD.apply_gradients`` in the replica context, which
all-reduces the replicas' gradients by SUM (keras/src/backend/tensorflow/optimizer.py
``_all_reduce_sum_gradients``) and updates every mirrored copy. The loss scaling is explicit: a
replica's loss is Σ of its shard's cross-entropies / the global batch size, so the summed gradient
is the gradient of the global mean loss (per shard: the mean of the shards' mean losses, the same
for equal shards), and the SUM of the replicas' losses is the loss returned. The learning rate is a
callable returning a variable in the net's dtype (Keras' own learning-rate variable is float32,
``backend.floatx()``, which would round a float64 net's lr). The moving statistics are
MirroredVariables with aggregation NONE: each replica assigns its own copy, ``get_state`` is
replica 0's (updated from its own shard alone without synchronization), ``replica_states`` every
replica's.

Logical devices must be configured before TensorFlow initializes, so the replicas run in a worker
process of their own (``equiv.parallel.worker``, as ``equiv.parallel.tf``), started once per
Python process and reused, every call under a timeout. There the net of each (dtype,
synchronized) is built and its step traced once; a later ``load_params`` loads new weights and
statistics into it (one net at a time: a newer handle makes the older one invalid). ``step`` cuts
the global batch into the replicas' shards (replica r: the r-th consecutive 32) and returns every layer's output for the
global batch (the shards' concatenated).
"""
import importlib.util
import itertools

import numpy as np

from equiv.lenet._replicas import get_params, get_state  # noqa: F401 (the protocol)
from equiv.lenet._replicas import keep as _keep
from reference.lenet import init_state, shards

# TensorFlow runs in the worker process only; without it the module cannot work: an ImportError
# here is what equiv.registry.load_lenet turns into its "not installed" message
if importlib.util.find_spec("tensorflow") is None:
    raise ImportError("No module named 'tensorflow'", name="tensorflow")

FRAMEWORK = "tf"
IMPLS = ("mirrored", "mirrored.sync")
REPLICAS = 4
DATA_PARALLEL = {"mirrored": (REPLICAS, False), "mirrored.sync": (REPLICAS, True)}
TIMEOUT = 300        # seconds for one call (a first trace of the step included)
_IDS = itertools.count(1)


def _worker():
    from equiv.parallel.worker import worker
    return worker(__name__, ("_setup", dict(devices=REPLICAS)), env={"TF_CPP_MIN_LOG_LEVEL": "2"})


def version():
    return _worker().call("_version", TIMEOUT)


def devices():
    return ("cpu",)


# --- the worker side ------------------------------------------------------------------------------

_NETS = {}    # in the worker: net id -> the key of _BUILT it uses
_BUILT = {}   # (dtype, synchronized) -> (net, optimizer, lr variable, traced steps): built and traced once,
              # reloaded by every later _build (a trace of the 4 replicas' step takes seconds)


def _setup(devices):
    from equiv.parallel import tf as ptf
    ptf._setup(devices)


def _version():
    import tensorflow as tf
    return f"{tf.__version__} (keras {tf.keras.__version__}; MirroredStrategy, {REPLICAS} logical CPUs)"


def _states(net):
    from equiv.parallel.tf import per_replica
    from reference.lenet import BN_LAYERS
    out = [{} for _ in range(REPLICAS)]
    for name in BN_LAYERS:
        m = net.layers[name]
        for key, var in ((f"{name}.running_mean", m.moving_mean), (f"{name}.running_var", m.moving_variance)):
            for r, v in enumerate(per_replica(var)):
                out[r][key] = v.reshape(-1)
    return out


def _params(net):
    from equiv.lenet import tf_net
    from equiv.lenet.layout import param_from_channels_last
    from equiv.parallel.tf import per_replica
    out = [{} for _ in range(REPLICAS)]
    for key, var in tf_net._variables(net).items():
        for r, v in enumerate(per_replica(var)):
            out[r][key] = param_from_channels_last(key, v)
    return out


def _report(net):
    return dict(params=_params(net), states=_states(net))


def _build(id, dtype, synchronized, params, state):
    import keras
    import tensorflow as tf

    from equiv.lenet import tf_net
    from equiv.parallel.tf import strategy
    key = (dtype, bool(synchronized))
    if key not in _BUILT:
        with strategy(REPLICAS).scope():
            net = tf_net.build("builtin", dtype, "cpu", synchronized=synchronized)
            lr = tf.Variable(0.0, dtype=net.tf_dtype, trainable=False, name="lr")
            opt = keras.optimizers.SGD(learning_rate=lambda: lr)   # no momentum: the step keeps no state
            opt.build(list(tf_net._variables(net).values()))
        _BUILT[key] = (net, opt, lr, {})
    net = _BUILT[key][0]
    tf_net.load_params(net, params)
    tf_net._set_state(net, state)
    _NETS.clear()                       # one net at a time: an older handle is refused
    _NETS[id] = key
    return _report(net)


def _built(id):
    if id not in _NETS:
        raise ValueError(f"net {id} was replaced by a newer one: the worker holds one net at a time")
    return _BUILT[_NETS[id]]


def _step_fn(net, opt, steps, capture):
    import tensorflow as tf

    from equiv.lenet import tf_net
    from equiv.parallel.tf import strategy
    if capture in steps:
        return steps[capture]
    strat = strategy(REPLICAS)
    variables = list(tf_net._variables(net).values())

    def replica(x, y, global_batch):
        with tf.GradientTape() as tape:
            logits, acts = net.forward(x, training=True, capture=capture)     # BN: moments, moving stats
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            loss = tf.reduce_sum(ce) / tf.cast(global_batch, net.tf_dtype)    # Σ over replicas = the global mean
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))                            # all-reduce SUM, then SGD
        acts["fc3"] = logits
        return loss, acts

    @tf.function
    def fn(xs, ys, global_batch):
        return strat.run(replica, args=(xs, ys, global_batch))

    steps[capture] = fn
    return fn


def _step(id, xs, ys, lr, capture):
    import tensorflow as tf

    from equiv.lenet.layout import activation_to_reference
    from equiv.parallel.tf import strategy
    net, opt, lr_var, steps = _built(id)
    strat = strategy(REPLICAS)
    lr_var.assign(lr)

    def values(arrays, dtype):
        return strat.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(arrays[ctx.replica_id_in_sync_group], dtype=dtype))

    X = values([np.asarray(x, dtype=np.float64).transpose(0, 2, 3, 1) for x in xs], net.tf_dtype)
    Y = values([np.asarray(y, dtype=np.int32) for y in ys], tf.int32)
    loss, acts = _step_fn(net, opt, steps, capture)(X, Y, tf.constant(sum(len(y) for y in ys)))
    loss = float(strat.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None).numpy())
    out = {name: activation_to_reference(name, np.concatenate(
        [np.asarray(t.numpy(), dtype=np.float64) for t in strat.experimental_local_results(t)], axis=0))
        for name, t in acts.items()}
    return dict(loss=loss, acts=out, **_report(net))


def _evaluate(id, x, y, batch):
    from equiv.lenet import tf_net
    net = _built(id)[0]
    return tf_net.evaluate(net, x, y, batch)


# --- the parent side ------------------------------------------------------------------------------

class Net:
    """The parent's handle: the worker's net id, variant, dtype, and replica 0's parameters and state."""

    def __init__(self, impl, dtype):
        self.impl, self.dtype_name, self.id = impl, dtype, None
        self.params, self.state = None, init_state()
        self.replica_params, self.replica_states = None, None

    def __repr__(self):
        return f"<tf_mirrored_net.Net {self.impl} {REPLICAS} replicas {self.dtype_name}>"


def build(impl, dtype="float32", device="cpu"):
    if impl not in IMPLS:
        raise ValueError(f"unknown data-parallel tf BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    if str(device) != "cpu":
        raise ValueError(f"tf.{impl} runs on {REPLICAS} logical CPUs here, not on {device!r}")
    return Net(impl, dtype)


def load_params(net, params):
    """Build the replicas in the strategy's scope (the same parameters and ``net.state`` on every one)."""
    net.id = next(_IDS)
    _keep(net, _worker().call("_build", TIMEOUT, id=net.id, dtype=net.dtype_name,
                              synchronized=DATA_PARALLEL[net.impl][1],
                              params={k: np.asarray(v, dtype=np.float64) for k, v in params.items()},
                              state={k: np.asarray(v, dtype=np.float64) for k, v in net.state.items()}))


def step(net, x, y, lr, capture=True):
    """One MirroredStrategy step on the global batch (cut into the replicas' shards): (the global
    mean loss, every layer's output for the global batch, in the reference's layout)."""
    xs, ys = shards(np.asarray(x, dtype=np.float64), REPLICAS), shards(np.asarray(y, dtype=np.int64), REPLICAS)
    res = _worker().call("_step", TIMEOUT, id=net.id, xs=xs, ys=ys, lr=float(lr), capture=bool(capture))
    _keep(net, res)
    return res["loss"], res["acts"]


def evaluate(net, x, y, batch=1024):
    """Inference mode on the strategy's default device (the variables' primary copies: replica 0's)."""
    return _worker().call("_evaluate", TIMEOUT, id=net.id, x=np.asarray(x, dtype=np.float64), y=np.asarray(y),
                          batch=batch)
