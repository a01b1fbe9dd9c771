"""flax.linen: ``flax.linen.BatchNorm(axis_name=...)`` replicated by each JAX engine
(``equiv.parallel._jax``): ``pmap``, ``shard_map``, ``vmap``, and ``jit`` over a batch placed with
``NamedSharding`` (no axis_name). The layer call is the one of ``equiv.adapters.flax_linen``: a
``module.apply`` with ``use_running_average=False``, ``mutable=['batch_stats']``, ``mask`` when
masked, and ``jax.vjp`` of the replica's own Σ y·dy with respect to x and the parameters.

What crosses replicas is Flax's ``_compute_stats`` (flax/linen/normalization.py:119-151): every
replica takes ``x.mean(axes, where=mask)`` of x and x² (fast variance) or of x, then of
(x − mean)² (``use_fast_variance=False``), and ``lax.pmean``s them over ``axis_name``
(``axis_index_groups``: within a group): each replica's mean counts once, whatever its number of
valid values.
"""
from functools import lru_cache

import flax.linen as nn
import jax

from equiv.backends.jax import DTYPES
from equiv.parallel._jax import JaxParallel


@lru_cache(maxsize=None)
def replica_fn(dtype, use_fast_variance, axis_name, axis_index_groups, masked):
    """One replica's training step of flax.linen.BatchNorm: (y, dx, dscale, dbias, mean, var)."""
    dt = DTYPES[dtype]
    module = nn.BatchNorm(dtype=dt, param_dtype=dt, use_fast_variance=use_fast_variance, axis_name=axis_name,
                          axis_index_groups=axis_index_groups and [list(g) for g in axis_index_groups])

    def replica(consts, params, stats, x, dy, mask):
        m = module.clone(momentum=consts[0], epsilon=consts[1])

        def f(x, params):
            y, new = m.apply({"params": params, "batch_stats": stats}, x, use_running_average=False,
                             mask=mask, mutable=["batch_stats"])
            return y, new["batch_stats"]
        y, vjp, new = jax.vjp(f, x, params, has_aux=True)
        dx, dp = vjp(dy)
        return y, dx, dp["scale"], dp["bias"], new["mean"], new["var"]
    return replica


class LinenPmap(JaxParallel):
    name, engine_name = "flax.linen.pmap", "pmap"
    replica_fn = staticmethod(replica_fn)


class LinenPmapTwoPass(LinenPmap):
    name = "flax.linen.pmap.two_pass"
    use_fast_variance = False


class LinenShardMap(LinenPmap):
    name, engine_name = "flax.linen.shard_map", "shard_map"


class LinenVmap(LinenPmap):
    name, engine_name = "flax.linen.vmap", "vmap"


class LinenJit(LinenPmap):
    name, engine_name = "flax.linen.jit", "jit"


class LinenPmapMask(LinenPmap):
    name = "flax.linen.pmap.mask"
    masked, unequal_shards = True, True


class LinenJitMask(LinenJit):
    name = "flax.linen.jit.mask"
    masked, unequal_shards = True, True
