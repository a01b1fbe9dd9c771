"""flax.nnx: ``flax.nnx.BatchNorm(axis_name=...)`` replicated by each JAX engine
(``equiv.parallel._jax``). Inside the mapped function the layer is built with the traced momentum
and eps, given the replica's parameters and running statistics (``set_value``, as restoring a
checkpoint does), and called in training mode (its default); ``jax.vjp`` of the replica's own
Σ y·dy gives dx and the parameter gradients.

nnx's ``_compute_stats`` (flax/nnx/nn/normalization.py:101-130) is linen's: ``lax.pmean`` of the
per-replica means of x and x² (or of x, then (x − mean)²) over ``axis_name``.
"""
from functools import lru_cache

import jax
from flax import nnx

from equiv.backends.jax import DTYPES
from equiv.parallel._jax import JaxParallel


@lru_cache(maxsize=None)
def replica_fn(dtype, use_fast_variance, axis_name, axis_index_groups, masked):
    """One replica's training step of flax.nnx.BatchNorm: (y, dx, dscale, dbias, mean, var)."""
    dt = DTYPES[dtype]
    groups = axis_index_groups and [list(g) for g in axis_index_groups]

    def replica(consts, params, stats, x, dy, mask):
        def f(x, params):
            m = nnx.BatchNorm(x.shape[-1], momentum=consts[0], epsilon=consts[1], dtype=dt, param_dtype=dt,
                              use_fast_variance=use_fast_variance, axis_name=axis_name,
                              axis_index_groups=groups, rngs=nnx.Rngs(0))
            m.scale.set_value(params["scale"]), m.bias.set_value(params["bias"])
            m.mean.set_value(stats["mean"]), m.var.set_value(stats["var"])
            y = m(x, mask=mask)
            return y, (m.mean[...], m.var[...])
        y, vjp, (mean, var) = jax.vjp(f, x, params, has_aux=True)
        dx, dp = vjp(dy)
        return y, dx, dp["scale"], dp["bias"], mean, var
    return replica


class NNXPmap(JaxParallel):
    name, engine_name = "flax.nnx.pmap", "pmap"
    replica_fn = staticmethod(replica_fn)


class NNXShardMap(NNXPmap):
    name, engine_name = "flax.nnx.shard_map", "shard_map"


class NNXVmap(NNXPmap):
    name, engine_name = "flax.nnx.vmap", "vmap"


class NNXJit(NNXPmap):
    name, engine_name = "flax.nnx.jit", "jit"
