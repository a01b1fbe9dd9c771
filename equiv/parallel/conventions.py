"""The declared conventions of every data-parallel implementation, as data: what it does across
replicas (``DECLARED``: name -> ``ParallelConventions``), its single-device base layer (``BASE``:
the row in ``equiv.conventions.DECLARED``) and what runs its replicas (``ENGINE``: one line).

Each declaration is read from the framework's source (the adapter module's docstring cites file and
line) and measured by ``equiv.parallel.probes`` in the framework's tests; the adapter classes read
their row from here (``conventions = DECLARED[name]``), and ``equiv findings``, ``equiv list`` and
``equiv readme`` render it without importing any framework. Like ``equiv.conventions`` for one
device; the names are those of ``equiv.parallel.IMPLEMENTATIONS``.
"""
from equiv.parallel import ParallelConventions

_TORCH_ENGINE = ("DistributedDataParallel(BatchNorm1d/2d) on torch.distributed, gloo, one process per replica "
                 "on 127.0.0.1")
_TF_ENGINE = "tf.distribute.MirroredStrategy over R logical CPU devices in a worker process, strategy.run"

# what runs the replicas under each JAX engine (equiv/parallel/_jax.py)
JAX_ENGINE_TEXT = {
    "pmap": "jax.pmap(axis_name=...), one CPU device per replica (XLA host platform devices)",
    "shard_map": "jax.jit(jax.shard_map(...)) over a 1-D mesh, batch P(axis), parameters replicated P()",
    "vmap": "jax.jit(jax.vmap(axis_name=...)) on one device, parameters broadcast",
    "jit": "jax.jit of the layer without axis_name on a batch placed with NamedSharding(mesh, P(axis))",
}
JAX_MASKED_TEXT = "; unequal shards zero-padded, the layer's mask= marks the valid rows"


def flax_conventions(engine, variance):
    """Flax's conventions under a JAX engine. With axis_name the replicas pmean their means:
    equal-weighted (the global batch when counts are equal); a replica with no valid value makes its
    mean, and so every replica's, NaN. Under ``jit`` the layer sees the global batch: count-weighted,
    an empty shard weighs nothing. dx is the gradient of the global loss (the transpose of pmean is a
    pmean of cotangents); dscale, dbias are each replica's own under pmap and vmap (mapped
    parameters), summed under shard_map (replicated parameters: their cotangent is psummed) and jit
    (one global gradient)."""
    spmd = engine == "jit"
    return ParallelConventions(synchronized=True, weighting="count" if spmd else "equal", variance=variance,
                               running_stats="global", param_grads="sum" if engine in ("shard_map", "jit") else "local",
                               dx="global", empty_shard="skip" if spmd else "nan")


# name -> (base, engine, ParallelConventions)
TABLE = {
    "torch.ddp": ("torch.builtin", _TORCH_ENGINE + "; forward_sync_buffers=True (the default: rank 0's buffers "
                  "broadcast before every forward)",
                  ParallelConventions(synchronized=False, weighting="n/a", variance="n/a",
                                      running_stats="rank0-broadcast", param_grads="mean", dx="local",
                                      empty_shard="skip")),
    "torch.ddp.local_buffers": ("torch.builtin", _TORCH_ENGINE + "; forward_sync_buffers=False (each replica keeps "
                                "its own buffers)",
                                ParallelConventions(synchronized=False, weighting="n/a", variance="n/a",
                                                    running_stats="own", param_grads="mean", dx="local",
                                                    empty_shard="skip")),
    "torch.syncbn": ("torch.builtin", "DistributedDataParallel(SyncBatchNorm.convert_sync_batchnorm(BatchNorm1d/2d)) "
                     "on CUDA, gloo, one process per replica on one GPU",
                     ParallelConventions(synchronized=True, weighting="count", variance="two-pass",
                                         running_stats="global", param_grads="mean", dx="global", empty_shard="skip")),
    "tf.mirrored": ("tf.keras", _TF_ENGINE,
                    ParallelConventions(synchronized=False, weighting="n/a", variance="n/a", running_stats="own",
                                        param_grads="local", dx="local", empty_shard="nan")),
    "tf.mirrored.sync": ("tf.keras", _TF_ENGINE,
                         ParallelConventions(synchronized=True, weighting="count", variance="fast",
                                             running_stats="global", param_grads="local", dx="global",
                                             empty_shard="skip")),
    "mxnet.sync": ("mxnet.gluon", "gluon.contrib.nn.SyncBatchNorm over R CPU contexts (num_devices=R) in a worker "
                   "process",
                   ParallelConventions(synchronized=True, weighting="equal", variance="fast", running_stats="global",
                                       param_grads="local", dx="global", empty_shard="error")),
}
for _layer, _base in (("flax.linen", "flax.linen"), ("flax.nnx", "flax.nnx")):
    for _engine in ("pmap", "shard_map", "vmap", "jit"):
        TABLE[f"{_layer}.{_engine}"] = (_base, JAX_ENGINE_TEXT[_engine], flax_conventions(_engine, "fast"))
TABLE.update({
    "flax.linen.pmap.two_pass": ("flax.linen.two_pass", JAX_ENGINE_TEXT["pmap"], flax_conventions("pmap", "two-pass")),
    "flax.linen.pmap.mask": ("flax.linen", JAX_ENGINE_TEXT["pmap"] + JAX_MASKED_TEXT, flax_conventions("pmap", "fast")),
    "flax.linen.jit.mask": ("flax.linen", JAX_ENGINE_TEXT["jit"] + JAX_MASKED_TEXT, flax_conventions("jit", "fast")),
})

DECLARED = {name: row[2] for name, row in sorted(TABLE.items())}
BASE = {name: row[0] for name, row in sorted(TABLE.items())}
ENGINE = {name: row[1] for name, row in sorted(TABLE.items())}
