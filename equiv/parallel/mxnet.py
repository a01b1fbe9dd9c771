"""mxnet.sync: ``mxnet.gluon.contrib.nn.SyncBatchNorm`` (MXNet 1.9.1) over R CPU contexts
mx.cpu(0..R-1), one replica each, ``num_devices=R``: forward of every shard inside one
``autograd.record()``, then ``autograd.backward`` of all outputs with the upstream gradients.

The operator (src/operator/contrib/sync_batch_norm-inl.h, ``SyncBatchNorm<xpu>::Forward``) has each
replica compute E[x] and E[x²] of its shard (``scale = C / size``), and ``SharedND::MeanReady``
averages them over the devices (``mean_ = data_[0] * 1.0f / num_devices_``): every replica's
moments count once, whatever its count (equal weighting), and var = E[x²] − E[x]² (the fast
variance, not clipped at 0), in ``real_t`` (float32): float64 input is refused. Backward averages Σdy
and Σdy·(x − mean) the same way and scales by the replica's own 1/n: the gradient of the
equal-weighted statistics. dgamma and dbeta are each replica's own sums (a gluon Trainer sums them
across contexts). The moving statistics are updated in backward from the merged mean and var, alike on
every context. A barrier (``Barrier::Wait``, one per layer key) waits for ``num_devices`` replicas:
with more than run it never returns, so every run goes through a worker process with a timeout
(``equiv.parallel.worker``).
"""
import numpy as np

from equiv.parallel import ParallelAdapter, Run

TIMEOUT = 60


class MXNetSyncBatchNorm(ParallelAdapter):
    name, framework = "mxnet.sync", "mxnet"
    dtypes = ("float32",)
    replicas = (2, 4)
    num_devices = None   # None: R

    def build(self, momentum, eps):
        self.momentum = momentum

    def run(self, state, steps, timeout=TIMEOUT):
        out = call(timeout, replicas=self.replica_count, channels=self.num_features,
                     num_devices=self.num_devices or self.replica_count, momentum=self.momentum, eps=self.eps,
                     state={k: np.asarray(v, dtype=np.float64) for k, v in state.items()},
                     steps=[([np.asarray(s) for s in xs], [np.asarray(d) for d in ds]) for xs, ds in steps])
        return Run(**out)


def call(timeout, **kwargs):
    """``_run(**kwargs)`` in the worker. A run that raised may leave a replica waiting in the barrier
    on one of the engine's CPU threads (later runs on that context then wait behind it): the worker
    is killed, and the next run starts a fresh one."""
    from equiv.parallel.worker import Hung, worker
    w = worker(__name__)
    try:
        return w.call("_run", timeout, **kwargs)
    except Hung:
        raise
    except Exception:
        w.kill()
        raise


# --- in the worker process ---------------------------------------------------------------------

def _run(replicas, channels, num_devices, momentum, eps, state, steps, dtype="float32"):
    import mxnet as mx
    from mxnet import autograd
    from mxnet.gluon.contrib.nn import SyncBatchNorm
    ctxs = [mx.cpu(i) for i in range(replicas)]
    bn = SyncBatchNorm(in_channels=channels, num_devices=num_devices, momentum=momentum, epsilon=eps)
    bn.initialize(ctx=ctxs)
    if dtype != "float32":
        bn.cast(dtype)
    params = dict(gamma=bn.gamma, beta=bn.beta, running_mean=bn.running_mean, running_var=bn.running_var)
    for k, p in params.items():
        p.set_data(mx.nd.array(state[k], dtype=dtype))
    run = dict(ys=[], dxs=[], dgammas=[], dbetas=[])
    for shards, dys in steps:
        xs = [mx.nd.array(s, ctx=c, dtype=dtype) for s, c in zip(shards, ctxs)]
        for x in xs:
            x.attach_grad()
        with autograd.record():
            ys = [bn(x) for x in xs]
        autograd.backward(ys, [mx.nd.array(d, ctx=c, dtype=dtype) for d, c in zip(dys, ctxs)])
        f64 = lambda a: a.asnumpy().astype(np.float64)  # noqa: E731
        run["ys"].append([f64(y) for y in ys])
        run["dxs"].append([f64(x.grad) for x in xs])
        run["dgammas"].append([f64(bn.gamma.grad(c)) for c in ctxs])
        run["dbetas"].append([f64(bn.beta.grad(c)) for c in ctxs])
    run["states"] = [{k: p.data(c).asnumpy().astype(np.float64) for k, p in params.items()} for c in ctxs]
    return run
