"""PyTorch data parallelism on its own engine: ``torch.distributed`` with the gloo backend, one
process per replica on the loopback interface.

- ``torch.ddp``: ``DistributedDataParallel`` around a plain ``BatchNorm1d`` / ``BatchNorm2d`` with
  its default ``broadcast_buffers`` (= ``forward_sync_buffers=True``): rank 0's buffers are broadcast
  to every replica before each forward (torch/nn/parallel/distributed.py:1782, ``_pre_forward`` calls
  ``_sync_buffers``; :2417 "The process with rank 0 is considered the authoritative copy"), gradients
  are all-reduced and divided by the world size (default_hooks.py:26, ``tensor.div_(group_to_use.size())``).
- ``torch.ddp.local_buffers``: the same with ``forward_sync_buffers=False`` (torch 2.13's name for
  ``broadcast_buffers=False``): each replica keeps its own running statistics.
- ``torch.syncbn``: ``SyncBatchNorm.convert_sync_batchnorm`` of the same module inside DDP, on CUDA
  (gloo moves CUDA tensors through the host): SyncBatchNorm refuses CPU input
  (torch/nn/modules/batchnorm.py:851) and its kernels have no CPU implementation.

The replicas live in one pool of worker processes (``Pool``), started on first use and kept for
the whole Python process (Hypothesis examples reuse it), with every wait bounded by a timeout; a
job that fails or times out ends the pool, the next one starts a fresh pool. A job with a
``target`` runs that function instead of the layer's (the data-parallel BN-LeNet's steps).
"""
import atexit
import multiprocessing
import os
import socket
import traceback
from datetime import timedelta

import numpy as np

from equiv.parallel import ParallelAdapter, Run

WORLD = 4             # one pool of 4 processes; a 2-replica job runs on the group of ranks 0 and 1
JOB_TIMEOUT = 120.0   # seconds a job may take before the pool is ended
COLLECTIVE_TIMEOUT = timedelta(seconds=30)   # gloo's own bound on a collective that never completes


class ReplicaError(RuntimeError):
    """A replica raised: ``kind`` is the exception's class name, ``message`` its text."""

    def __init__(self, rank, kind, message):
        super().__init__(f"replica {rank}: {kind}: {message}")
        self.rank, self.kind, self.message = rank, kind, message


# --- the worker side ---------------------------------------------------------------------------

def _worker(rank, port, conn):
    import torch
    import torch.distributed as dist
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=COLLECTIVE_TIMEOUT)
    groups = {2: dist.new_group([0, 1]), WORLD: dist.group.WORLD}
    conn.send(("ready", None))
    while True:
        job = conn.recv()
        if job is None:
            break
        try:
            conn.send(("ok", _dispatch(job)(job, groups[job["replicas"]], rank)))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
            conn.send(("error", (type(e).__name__, str(e), traceback.format_exc())))
    dist.destroy_process_group()


def _dispatch(job):
    """The function that runs ``job`` in a worker: ``_run_job`` (one BN layer), or the one named by
    ``job["target"]`` ("module:function", e.g. the data-parallel BN-LeNet of equiv.lenet.torch_ddp_net)."""
    if "target" not in job:
        return _run_job
    import importlib
    module, _, name = job["target"].partition(":")
    return getattr(importlib.import_module(module), name)


def _run_job(job, group, rank):
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from equiv.backends import torch as torch_backend
    from equiv.backends.torch import DTYPES, numpy, tensor
    torch_backend.setup()
    device = job["device"]
    cls = torch.nn.BatchNorm1d if job["ndim"] == 2 else torch.nn.BatchNorm2d
    bn = cls(job["channels"], eps=job["eps"], momentum=job["momentum"], dtype=DTYPES[job["dtype"]])
    if job["sync"]:
        bn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(bn, process_group=group)
    bn = bn.to(device)
    with torch.no_grad():
        for p, v in ((bn.weight, "gamma"), (bn.bias, "beta"), (bn.running_mean, "running_mean"),
                     (bn.running_var, "running_var")):
            p.copy_(tensor(job["state"][v], job["dtype"], device))
    model = bn if not job.get("ddp", True) else DDP(
        bn, process_group=group, forward_sync_buffers=job["forward_sync_buffers"],
        device_ids=[0] if device == "cuda" else None)
    out = dict(ys=[], dxs=[], dgammas=[], dbetas=[])
    for x, dy in job["steps"]:
        bn.zero_grad(set_to_none=True)
        xt = tensor(x, job["dtype"], device, requires_grad=True)
        y = model(xt)
        y.backward(tensor(dy, job["dtype"], device))
        zeros = np.zeros(job["channels"])
        out["ys"].append(numpy(y))
        out["dxs"].append(numpy(xt.grad) if xt.grad is not None else np.zeros(np.shape(x)))
        out["dgammas"].append(numpy(bn.weight.grad) if bn.weight.grad is not None else zeros)
        out["dbetas"].append(numpy(bn.bias.grad) if bn.bias.grad is not None else zeros)
    out["state"] = dict(gamma=numpy(bn.weight), beta=numpy(bn.bias), running_mean=numpy(bn.running_mean),
                        running_var=numpy(bn.running_var))
    out["checkpoint"] = {k: numpy(v) for k, v in bn.state_dict().items()}   # DDP's model.module
    return out


# --- the parent side ---------------------------------------------------------------------------

class Pool:
    """WORLD worker processes in one gloo process group, fed jobs through pipes."""

    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        port = _free_port()
        self.conns, self.procs = [], []
        for rank in range(WORLD):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(rank, port, child), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        for rank in range(WORLD):
            self._receive(rank, JOB_TIMEOUT)

    def _receive(self, rank, timeout):
        conn = self.conns[rank]
        if not conn.poll(timeout):
            self.close(grace=1.0)
            raise TimeoutError(f"replica {rank} did not answer within {timeout:.0f} s")
        try:
            return conn.recv()
        except EOFError:
            code = self.procs[rank].exitcode
            self.close()
            raise RuntimeError(f"replica {rank} exited (code {code})") from None

    def run(self, jobs, timeout=JOB_TIMEOUT):
        """Send ``jobs[r]`` to rank r (r < len(jobs)); their results, or ReplicaError of the first
        replica that raised. When only some raised, their peers went on alone (a collective
        may have timed out): the pool is ended and the next job starts a fresh one."""
        for conn, job in zip(self.conns, jobs):
            conn.send(job)
        answers = [self._receive(r, timeout) for r in range(len(jobs))]
        failed = [r for r, (status, _) in enumerate(answers) if status != "ok"]
        if failed:
            if len(failed) < len(answers):
                self.close(grace=1.0)
            raise ReplicaError(failed[0], *answers[failed[0]][1][:2])
        return [value for _, value in answers]

    def alive(self):
        return all(p.is_alive() for p in self.procs)

    def close(self, grace=5.0):
        """End the workers: each is asked to leave and waited for ``grace`` seconds, then killed."""
        global _POOL
        for conn in self.conns:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(grace)
            if p.is_alive():
                p.kill()
                p.join(5)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        if _POOL is self:
            _POOL = None


_POOL = None


def pool():
    """The shared pool, started on first use (and again after a failed job)."""
    global _POOL
    if _POOL is None or not _POOL.alive():
        if _POOL is not None:
            _POOL.close()
        _POOL = Pool()
    return _POOL


def shutdown():
    if _POOL is not None:
        _POOL.close()


atexit.register(shutdown)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the adapters -------------------------------------------------------------------------------

class TorchDDP(ParallelAdapter):
    name, framework = "torch.ddp", "torch"
    forward_sync_buffers = True
    sync = False
    ddp = True            # False: the layer alone in the process group, no DistributedDataParallel
    device = "cpu"
    max_examples = 8

    def build(self, momentum, eps):
        self.momentum = momentum

    def jobs(self, state, steps):
        R = self.replica_count
        return [dict(replicas=R, channels=self.num_features, ndim=self.ndim, dtype=self.dtype,
                     momentum=self.momentum, eps=self.eps, sync=self.sync, device=self.device,
                     forward_sync_buffers=self.forward_sync_buffers, ddp=self.ddp,
                     state={k: np.asarray(v, dtype=np.float64) for k, v in state.items()},
                     steps=[(np.asarray(xs[r], dtype=np.float64), np.asarray(dys[r], dtype=np.float64))
                            for xs, dys in steps])
                for r in range(R)]

    def run(self, state, steps):
        results = pool().run(self.jobs(state, steps))
        self.checkpoints = [res["checkpoint"] for res in results]
        k = len(steps)
        per_step = lambda key: [[res[key][i] for res in results] for i in range(k)]  # noqa: E731
        return Run(ys=per_step("ys"), dxs=per_step("dxs"), dgammas=per_step("dgammas"),
                   dbetas=per_step("dbetas"), states=[res["state"] for res in results])


class TorchDDPLocalBuffers(TorchDDP):
    name = "torch.ddp.local_buffers"
    forward_sync_buffers = False


class TorchSyncBN(TorchDDP):
    name = "torch.syncbn"
    sync = True
    device = "cuda"

    @classmethod
    def unavailable(cls):
        import torch
        if not torch.cuda.is_available():
            return ("torch.syncbn needs CUDA: SyncBatchNorm raises for CPU input and its kernels "
                    "(batch_norm_stats, batch_norm_elemt, ...) have no CPU implementation")
        return None
