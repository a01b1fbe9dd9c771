"""BN-LeNet in MXNet 1.9.1 Gluon over R = 4 CPU contexts mx.cpu(0..3), one replica each, behind
the protocol of ``equiv.lenet`` (``DATA_PARALLEL``: per variant). Float32 only (below).

- ``mxnet.sync``: ``equiv.lenet.mxnet_net``'s builtin net with every BN layer a
  ``mxnet.gluon.contrib.nn.SyncBatchNorm(num_devices=4)`` (gluon's defaults eps 1e-5, momentum
  0.9). In ``SyncBatchNorm<cpu>::Forward`` (src/operator/contrib/sync_batch_norm-inl.h:307-327)
  each replica computes E[x] and E[x²] of its shard (``scale`` = C / size, :272), ``SharedND::
  MeanReady`` averages them over the devices (:153-156, ``mean_ = data_[0] * 1.0f / num_devices_``):
  every replica counts once whatever its count (equal weighting; for 4 equal shards of 32 it is
  the global batch's count weighting) and var = E[x²] − E[x]² (:327, the fast variance; bn1's
  inputs here have |mean|/std up to ~2, see ``equiv.known`` mxnet-sync-fast-variance-offset),
  all in ``real_t`` (float32; float64 input is refused, tests/test_parallel_mxnet.py). Backward
  (:402-441) averages Σdy and Σdy·(x − mean) the same way and scales by the replica's own 1/n:
  the gradient of the global batch's statistics for equal shards; dgamma and dbeta are each
  replica's own sums (:429-441), summed over the contexts by the Trainer. The moving statistics
  move in backward (:397-398) from the merged mean and (biased) var, alike on every context.
  Compared with the single-device step on the 128 (``synchronized=True``). Not bit-reproducible:
  a replica's rank is its arrival order at the layer (``GlobalSharedRank::Register``, :194-205,
  taken at :300) and the slots are summed in rank order (:153-154), so the float32 sums' order
  changes from run to run (four 30-step Fashion-MNIST runs: 0.10 … 0.16 of the tolerance).
- ``mxnet.contexts``: the same net with plain ``gluon.nn.BatchNorm``, gluon's multi-device recipe
  as most users run it (``gluon.utils.split_and_load`` cuts the same consecutive shards, measured
  in tests/test_parallel_mxnet.py): each context normalizes its own 32 and keeps its own running
  statistics (``synchronized=False``, the per-shard reference), except that the Trainer's first
  step copies context 0's to every context (``equiv.known`` gluon-trainer-first-step-broadcast);
  ``get_state`` is context 0's, as the reference's rank 0.

The step, for both: every replica's forward inside one ``autograd.record()``, ``autograd.backward``
of the replicas' losses, then ``gluon.Trainer('sgd').step(1)``, whose kvstore sums the gradients
over the contexts and updates every copy. A replica's loss is Σ of its shard's cross-entropies /
the global batch size, so the summed gradient is the gradient of the global mean loss. The
Trainer keeps lr as a C++ float (``equiv.lenet.mxnet_net``): the same arithmetic in float32, a
non-BN difference in float64, hence float32 only for ``mxnet.contexts`` too.
``SyncBatchNorm`` is a legacy operator that takes no ``mxnet.np`` arrays (the net runs under
``npx.set_np()``), so the layer hands it legacy views (``as_nd_ndarray``, the same memory and
autograd entry) and returns ``as_np_ndarray``.

Why the whole net hung (finding mxnet-sync-temp-space-deadlock, ``equiv.known``): the
operator's Backward requests the engine's temporary workspace (``BackwardResource`` kTempSpace,
sync_batch_norm-inl.h:553-556, taken at :392-393) and then blocks in ``Barrier::Wait`` (:415)
until all 4 replicas of the layer have arrived. Every CPU context draws that workspace from one
shared pool of ``MXNET_CPU_TEMP_COPY`` copies (default 4, src/resource.cc:90, 101-102, 132),
handed out round-robin at push time (``ResourceTempSpace::GetNext``, resource.cc:283-292), and
each copy is an engine variable its op holds as mutable (resource.cc:264): two ops that draw the
same copy run one after the other. When replica r's BN backward holds copy k in the barrier and
replica r''s BN backward (or an op before it on r', a conv's backward) drew copy k too, r' waits
for r, which waits for r' forever. Which ops collide depends on how many temp-space requests lie
between them, so single layers pass, conv + SyncBatchNorm passes, and conv, BN, sigmoid, conv, BN
hangs on 2 contexts; with ``MXNET_CPU_TEMP_COPY=1`` even conv + one SyncBatchNorm hangs on 4
(measured). This net's step on 4 contexts hangs with 4, 16, 32, 64 and 96 copies and runs with
128 and more (tests/test_parallel_mxnet.py holds the default to the hang): one step pushes some
100-128 temp-space requests, and with more copies than that no two ops of a step share one (the
steps do not overlap: each returns its outputs, which waits for them). More engine threads do not
help (MXNET_CPU_WORKER_NTHREADS=32 hangs alike: each CPU context has a pool of its own,
src/engine/threaded_engine_perdevice.cc:110-120, and the blocked op waits on a variable, not a
thread), nor turning off the backward bulking (MXNET_EXEC_BULK_EXEC_TRAIN=0). The worker process
therefore starts with ``MXNET_CPU_TEMP_COPY=TEMP_COPIES`` (256: twice what a step needs; a copy
allocates only what the ops it serves ask for: the worker's RSS is 197 MB with 128, 256 or 1024).

The replicas run in a worker process (``equiv.parallel.worker``): the variable must be set before
MXNet initializes, and a barrier that waits for a replica that never comes is killed after
``TIMEOUT`` s (``Hung``) instead of hanging. A call that raised may leave a replica in the barrier,
so the worker is then killed and the next call starts a fresh one.
"""
import importlib.util
import itertools

import numpy as np

from equiv.lenet._replicas import get_params, get_state  # noqa: F401 (the protocol)
from equiv.lenet._replicas import keep as _keep
from reference.lenet import init_state, shards

# MXNet runs in the worker process only; without it the module cannot work: an ImportError here is
# what equiv.registry.load_lenet turns into its "not installed" message
if importlib.util.find_spec("mxnet") is None:
    raise ImportError("No module named 'mxnet'", name="mxnet")

FRAMEWORK = "mxnet"
IMPLS = ("sync", "contexts")
REPLICAS = 4
DATA_PARALLEL = {"sync": (REPLICAS, True), "contexts": (REPLICAS, False)}
DTYPES = ("float32",)
TIMEOUT = 60           # seconds for one call (a step takes well under one)
TEMP_COPIES = 256      # MXNET_CPU_TEMP_COPY in the worker (MXNet's default, 4, deadlocks the net)
_IDS = itertools.count(1)


def _worker(temp_copies=TEMP_COPIES):
    """The worker whose MXNet has ``temp_copies`` temp-space copies (one worker per value)."""
    from equiv.parallel.worker import worker
    return worker(__name__, ("_setup", dict(temp_copies=temp_copies)), env={"MXNET_CPU_TEMP_COPY": str(temp_copies)})


def _call(fn, timeout=TIMEOUT, temp_copies=TEMP_COPIES, **kwargs):
    from equiv.parallel.worker import Hung
    w = _worker(temp_copies)
    try:
        return w.call(fn, timeout, **kwargs)
    except Hung:
        raise
    except Exception:
        w.kill()
        raise


def version():
    return _call("_version")


def devices():
    return ("cpu",)


# --- the worker side ------------------------------------------------------------------------------

_NETS = {}   # net id -> (net, trainer, contexts); one net at a time


def _setup(temp_copies):
    import os
    if os.environ.get("MXNET_CPU_TEMP_COPY") != str(temp_copies):
        raise RuntimeError(f"MXNET_CPU_TEMP_COPY is {os.environ.get('MXNET_CPU_TEMP_COPY')!r}, not {temp_copies}")


def _version():
    import mxnet as mx
    return f"{mx.__version__} ({REPLICAS} CPU contexts)"


def _sync_bn_class():
    import mxnet as mx
    from mxnet.gluon.contrib.nn import SyncBatchNorm

    class LegacySyncBatchNorm(SyncBatchNorm):
        """SyncBatchNorm on mxnet.np arrays: the operator on legacy views of them (the same memory)."""

        def forward(self, x):
            ctx = x.ctx
            args = [p.data(ctx).as_nd_ndarray() for p in (self.gamma, self.beta, self.running_mean, self.running_var)]
            return mx.nd.contrib.SyncBatchNorm(x.as_nd_ndarray(), *args, **self._kwargs).as_np_ndarray()

    return LegacySyncBatchNorm


def _report(net, ctxs):
    from equiv.lenet import mxnet_net
    from reference.lenet import BN_LAYERS
    f64 = lambda a: np.array(a.asnumpy(), dtype=np.float64)   # noqa: E731
    params = [{k: (f64(p.data(c)).reshape(-1) if k.endswith((".gamma", ".beta")) else f64(p.data(c)))
               for k, p in mxnet_net._parameters(net).items()} for c in ctxs]
    states = [{f"{n}.{s}": f64(getattr(getattr(net, n), s).data(c)).reshape(-1)
               for n in BN_LAYERS for s in ("running_mean", "running_var")} for c in ctxs]
    return dict(params=params, states=states)


def _build(id, impl, params, state):
    import mxnet as mx
    from mxnet import gluon

    from equiv.conventions import DECLARED
    from equiv.lenet import CONVENTIONS, mxnet_net
    _NETS.clear()
    ctxs = [mx.cpu(i) for i in range(REPLICAS)]
    bn = None                                   # plain gluon.nn.BatchNorm (mxnet_net's builtin)
    if impl == "sync":
        c = CONVENTIONS["mxnet.sync"]
        momentum = DECLARED["mxnet.gluon"].momentum_for(c["new_batch_weight"])   # 0.9: the old value's weight
        layer = _sync_bn_class()
        bn = lambda channels, ndim: layer(in_channels=channels, num_devices=REPLICAS,   # noqa: E731
                                          momentum=momentum, epsilon=c["eps"])
    net = mxnet_net.build("builtin", "float32", "cpu", contexts=ctxs, bn=bn)
    mxnet_net.load_params(net, params)          # set_data: the same values on every context
    mxnet_net._set_state(net, state)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    _NETS[id] = (net, trainer, ctxs)
    return _report(net, ctxs)


def _net(id):
    if id not in _NETS:
        raise ValueError(f"net {id} was replaced by a newer one: the worker holds one net at a time")
    return _NETS[id]


def _step(id, xs, ys, lr, capture):
    from mxnet import autograd
    from mxnet import np as mnp
    net, trainer, ctxs = _net(id)
    total = sum(len(y) for y in ys)
    X = [mnp.array(np.asarray(x, dtype=np.float32), dtype="float32", ctx=c) for x, c in zip(xs, ctxs)]
    Y = [mnp.array(np.asarray(y, dtype=np.int32), dtype="int32", ctx=c) for y, c in zip(ys, ctxs)]
    acts, losses = [], []
    with autograd.record():                                    # training mode
        for x, y in zip(X, Y):
            a, h = {}, x
            for name in net.names:
                h = getattr(net, name)(h)
                if capture or name == "fc3":
                    a[name] = h
            acts.append(a)
            losses.append(net.loss_fn(h, y).sum() / total)     # Σ over replicas = the global mean
    autograd.backward(losses)                                  # BN's running statistics move here
    trainer.set_learning_rate(lr)
    trainer.step(1)                                            # kvstore: gradients summed over contexts
    loss = float(sum(float(v.item()) for v in losses))
    out = {k: np.concatenate([np.asarray(a[k].asnumpy(), dtype=np.float64) for a in acts], axis=0) for k in acts[0]}
    return dict(loss=loss, acts=out, **_report(net, ctxs))


def _evaluate(id, x, y, batch):
    from equiv.lenet import mxnet_net
    return mxnet_net.evaluate(_net(id)[0], x, y, batch)        # prediction mode on cpu(0): no barrier


# --- the parent side ------------------------------------------------------------------------------

class Net:
    """The parent's handle: the worker's net id, variant, and context 0's parameters and state."""

    def __init__(self, impl):
        self.impl, self.dtype_name, self.id = impl, "float32", None
        self.params, self.state = None, init_state()
        self.replica_params, self.replica_states = None, None

    def __repr__(self):
        return f"<mxnet_sync_net.Net {self.impl} {REPLICAS} contexts float32>"


def build(impl, dtype="float32", device="cpu"):
    if impl not in IMPLS:
        raise ValueError(f"unknown data-parallel mxnet BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in DTYPES:
        raise ValueError(f"mxnet.{impl} computes in float32 only (SyncBatchNorm refuses float64; the Trainer "
                         f"keeps lr as a C++ float), not {dtype!r}")
    if str(device) != "cpu":
        raise ValueError(f"mxnet.{impl} runs on {REPLICAS} CPU contexts here, not on {device!r}")
    return Net(impl)


def load_params(net, params):
    """Build the net on the 4 contexts (the same parameters and ``net.state`` on every one)."""
    net.id = next(_IDS)
    _keep(net, _call("_build", id=net.id, impl=net.impl,
                     params={k: np.asarray(v, dtype=np.float64) for k, v in params.items()},
                     state={k: np.asarray(v, dtype=np.float64) for k, v in net.state.items()}))


def step(net, x, y, lr, capture=True):
    """One step on the global batch (cut into the contexts' shards): (the global mean loss, every
    layer's output for the global batch, in the reference's layout)."""
    xs, ys = shards(np.asarray(x, dtype=np.float64), REPLICAS), shards(np.asarray(y, dtype=np.int64), REPLICAS)
    res = _call("_step", id=net.id, xs=xs, ys=ys, lr=float(lr), capture=bool(capture))
    _keep(net, res)
    return res["loss"], res["acts"]


def evaluate(net, x, y, batch=1024):
    """Prediction mode (running statistics) on cpu(0)."""
    return _call("_evaluate", id=net.id, x=np.asarray(x, dtype=np.float64), y=np.asarray(y), batch=batch)
