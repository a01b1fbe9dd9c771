"""BN-LeNet under ``torch.nn.parallel.DistributedDataParallel``: R = 4 gloo processes on the CPU,
behind the protocol of ``equiv.lenet`` (``DATA_PARALLEL``: 4 replicas, BN not synchronized).

Every replica is ``equiv.lenet.torch_net``'s builtin net (plain ``BatchNorm2d`` / ``BatchNorm1d``,
torch's defaults) wrapped in DDP with its defaults: rank 0's buffers (the running statistics) are
broadcast before each forward (``broadcast_buffers``, torch/nn/parallel/distributed.py
``_pre_forward`` -> ``_sync_buffers``), gradients are all-reduced and divided by the world size.
So each replica's BN normalizes its own 32 of the global batch of 128, the step is on the mean of
the replicas' mean losses, and the checkpoint's running statistics (rank 0's) are updated from
rank 0's shard alone: ``reference.lenet.data_parallel_loss_and_grads(synchronized=False)``.

The replicas run in ``equiv.parallel.torch_ddp``'s pool of worker processes (started once per
Python process, every wait bounded by its timeouts); a job names ``_job`` as its target. ``step``
cuts the global batch into the replicas' shards (replica r: the r-th consecutive 32) and returns
the global mean loss and every layer's output for the global batch (the shards' concatenated);
``get_params`` and ``get_state`` are rank 0's (``replica_states``: every rank's).
"""
import itertools

import numpy as np
import torch  # noqa: F401  (the framework: where it is missing, equiv.registry.load_lenet says how to install it)

from equiv.parallel import torch_ddp
from reference.lenet import init_state, shards

FRAMEWORK = "torch"
IMPLS = ("ddp",)
REPLICAS = torch_ddp.WORLD
DATA_PARALLEL = (REPLICAS, False)
TARGET = "equiv.lenet.torch_ddp_net:_job"
_IDS = itertools.count(1)


def version():
    return f"{torch.__version__} (DDP, gloo, {REPLICAS} processes)"


def devices():
    return ("cpu",)


# --- the worker side ------------------------------------------------------------------------------

_NETS = {}   # in a worker: net id -> (net, DDP(net)); one net at a time


def _job(job, group, rank):
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from equiv.lenet import torch_net
    op = job["op"]
    if op == "build":
        _NETS.clear()
        net = torch_net.build("builtin", job["dtype"], "cpu")
        torch_net.load_params(net, job["params"])
        torch_net._set_state(net, job["state"])
        _NETS[job["id"]] = (net, DDP(net, process_group=group))
        return dict(params=torch_net.get_params(net), state=torch_net.get_state(net))
    net, ddp = _NETS[job["id"]]
    if op == "evaluate":
        return torch_net.evaluate(net, job["x"], job["y"], job["batch"])
    X, Y = torch_net.as_arrays(net, job["x"], job["y"])
    net.train()
    acts = {}
    hooks = [m.register_forward_hook(lambda m, i, out, name=name: acts.__setitem__(name, out.detach()))
             for name, m in net.named_children()] if job["capture"] else []
    try:
        logits = ddp(X)                      # DDP's forward: buffers broadcast, reducer prepared
    finally:
        for h in hooks:
            h.remove()
    loss = torch.nn.functional.cross_entropy(logits, Y)
    net.optimizer.zero_grad(set_to_none=True)
    loss.backward()                          # gradients all-reduced and divided by the world size
    for g in net.optimizer.param_groups:
        g["lr"] = job["lr"]
    net.optimizer.step()
    acts["fc3"] = logits.detach()
    return dict(loss=float(loss.detach()), acts={k: torch_net._numpy(v) for k, v in acts.items()},
                params=torch_net.get_params(net), state=torch_net.get_state(net))


# --- the parent side ------------------------------------------------------------------------------

class Net:
    """The parent's handle: the replicas' net id, dtype, and rank 0's parameters and state."""

    def __init__(self, dtype):
        self.dtype_name, self.id, self.params, self.state = dtype, None, None, init_state()
        self.replica_states, self.replica_params = None, None

    def __repr__(self):
        return f"<torch_ddp_net.Net {REPLICAS} replicas {self.dtype_name}>"


def _run(net, jobs):
    for j in jobs:
        j.update(target=TARGET, replicas=REPLICAS, id=net.id)
    return torch_ddp.pool().run(jobs)


def build(impl, dtype="float32", device="cpu"):
    if impl not in IMPLS:
        raise ValueError(f"unknown data-parallel torch BN-LeNet variant {impl!r}; choose one of {', '.join(IMPLS)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    if str(device) != "cpu":
        raise ValueError(f"torch.ddp runs its {REPLICAS} gloo processes on the CPU, not on {device!r}")
    return Net(dtype)


def load_params(net, params):
    """Build the replicas (every rank the same parameters, rank 0's running statistics)."""
    net.id = next(_IDS)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    results = _run(net, [dict(op="build", dtype=net.dtype_name, params=params, state=net.state)
                         for _ in range(REPLICAS)])
    _keep(net, results)


def _keep(net, results):
    net.params, net.state = results[0]["params"], results[0]["state"]
    net.replica_params = [r["params"] for r in results]
    net.replica_states = [r["state"] for r in results]


def get_params(net):
    return {k: v.copy() for k, v in net.params.items()}


def get_state(net):
    return {k: v.copy() for k, v in net.state.items()}


def step(net, x, y, lr, capture=True):
    """One DDP step on the global batch (cut into the replicas' shards): (the global mean loss,
    every layer's output for the global batch)."""
    xs, ys = shards(np.asarray(x, dtype=np.float64), REPLICAS), shards(np.asarray(y, dtype=np.int64), REPLICAS)
    results = _run(net, [dict(op="step", x=xr, y=yr, lr=float(lr), capture=bool(capture)) for xr, yr in zip(xs, ys)])
    _keep(net, results)
    loss = float(np.mean([r["loss"] for r in results]))
    acts = {k: np.concatenate([r["acts"][k] for r in results], axis=0) for k in results[0]["acts"]}
    return loss, acts


def evaluate(net, x, y, batch=1024):
    """Inference mode on rank 0 (its running statistics: the checkpoint's)."""
    (res,) = _run(net, [dict(op="evaluate", x=np.asarray(x, dtype=np.float64), y=np.asarray(y), batch=batch)])
    return res
