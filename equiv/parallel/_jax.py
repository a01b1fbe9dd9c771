"""The JAX engines that replicate a Flax BatchNorm over R devices (shared backend code, not an adapter).

One replica's training step is the same layer call for every engine (``replica``: forward with
``axis_name``, ``jax.vjp`` of the replica's own Σ y·dy); the engines differ only in how that
function is mapped over the R shards:

- ``pmap``:      ``jax.pmap(replica, axis_name)``, one device per replica; parameters stacked per
                 replica, as ``flax.jax_utils.replicate`` does.
- ``shard_map``: ``jax.jit(jax.shard_map(...))`` over a 1-D mesh of R devices; the batch and the
                 running statistics ``P(axis)``, the parameters replicated ``P()``, as a
                 data-parallel training step passes them.
- ``vmap``:      ``jax.jit(jax.vmap(replica, axis_name))`` on one device, the parameters broadcast
                 (``in_axes=None``).
- ``jit``:       no ``axis_name``: the layer is called on the global batch, placed with
                 ``NamedSharding(mesh, P(axis))``, inside ``jax.jit``; XLA's SPMD partitioner inserts
                 the collectives (Flax's docstring: "For SPMD jit, you do not need to manually
                 synchronize"). One program, one set of statistics and of gradients.

``pmap``, ``shard_map`` and ``jit`` need R devices: on the CPU, start the process with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the jax tox env sets it).

Shards of unequal size cannot be mapped (every replica's leading dimension is the same). A masked
engine pads each shard to the largest with zeros and passes ``mask`` (True on the shard's own
rows) to the layer, which reduces with ``mean(..., where=mask)``: unequal valid counts per replica.

Momentum and eps are runtime scalars (as in ``equiv.backends.jax``), so a new setting does not
compile again; the mapped functions are cached per layer setting, engine and replica count.
"""
from functools import lru_cache

import numpy as np

from equiv.backends import jax as jax_backend
from equiv.backends.jax import DTYPES, stats_dtype
from equiv.core import Unsupported
from equiv.parallel import ParallelAdapter, Run

# after equiv.backends.jax, whose setup() (run by equiv.registry first) turns on float64
# isort: split
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

AXIS = "replicas"
ENGINES = ("pmap", "shard_map", "vmap", "jit")
DEVICES_FLAG = "XLA_FLAGS=--xla_force_host_platform_device_count=4"


def mesh(replicas):
    return Mesh(np.array(jax.devices()[:replicas]), (AXIS,))


@lru_cache(maxsize=None)
def mapped(engine, replica, replicas, masked):
    """``replica(consts, params, stats, x, dy, mask)`` (one replica's arrays, channel-last) mapped
    over a leading replica axis of x, dy, mask and stats; returns (y, dx, dscale, dbias, mean, var),
    each with the leading replica axis (``jit``: the global batch instead, one set of the rest)."""
    m = 0 if masked else None
    if engine == "pmap":
        return jax.pmap(replica, axis_name=AXIS, in_axes=(None, 0, 0, 0, 0, m))
    if engine == "vmap":
        return jax.jit(jax.vmap(replica, axis_name=AXIS, in_axes=(None, None, 0, 0, 0, m)))
    if engine == "shard_map":
        def body(consts, params, stats, x, dy, mask):
            first = lambda a: None if a is None else a[0]   # noqa: E731  the (1, ...) block of this replica
            out = replica(consts, params, jax.tree.map(first, stats), x[0], dy[0], first(mask))
            return jax.tree.map(lambda a: a[None], out)
        return jax.jit(jax.shard_map(body, mesh=mesh(replicas),
                                     in_specs=(P(), P(), P(AXIS), P(AXIS), P(AXIS), P(AXIS) if masked else P()),
                                     out_specs=P(AXIS)))
    if engine == "jit":
        return jax.jit(replica)
    raise ValueError(f"engine is one of {', '.join(ENGINES)}, not {engine!r}")


class JaxParallel(ParallelAdapter):
    """R replicas of a Flax BatchNorm on one of ``ENGINES``. A subclass gives ``replica_fn``: the
    per-replica step of its layer, a cached function of (layer setting, axis name)."""

    framework = "flax"
    engine_name = "pmap"
    masked = False
    use_fast_variance = True
    axis_index_groups = None
    unequal_shards = False
    max_examples = 6

    def build(self, momentum, eps):
        jax_backend.setup()   # float64 (equiv.registry.load_parallel ran it before the import too)
        if self.engine_name != "vmap" and jax.device_count() < self.replica_count:
            raise Unsupported(f"{self.name} needs {self.replica_count} devices, this process has "
                              f"{jax.device_count()}: start it with {DEVICES_FLAG}")
        # Flax weighs the batch by 1 − momentum (as equiv.adapters.flax_linen says)
        self.new_batch_weight = self.single.new_batch_weight(momentum)
        self.consts = (jnp.asarray(momentum), jnp.asarray(eps))
        groups = None if self.axis_index_groups is None else tuple(map(tuple, self.axis_index_groups))
        axis = None if self.engine_name == "jit" else AXIS
        self.fn = mapped(self.engine_name, self.replica_fn(self.dtype, self.use_fast_variance, axis, groups,
                                                           self.masked), self.replica_count, self.masked)

    def _stack(self, shards):
        """(R, n_max, ...) channel-last in the dtype, zero-padded, and the (R, n_max, 1...) mask."""
        n = max(len(s) for s in shards)
        arrays, masks = [], []
        for s in shards:
            s = np.asarray(s, dtype=np.float64)
            s = s.transpose(0, 2, 3, 1) if s.ndim == 4 else s
            arrays.append(np.concatenate([s, np.zeros((n - len(s),) + s.shape[1:])]))
            masks.append((np.arange(n) < len(s)).reshape((n,) + (1,) * (s.ndim - 1)))
        return np.stack(arrays).astype(DTYPES[self.dtype]), np.stack(masks)

    def run(self, state, steps):
        R, dt, sdt = self.replica_count, DTYPES[self.dtype], stats_dtype(self.dtype)
        params = {k: np.asarray(state[v], dtype=dt) for k, v in (("scale", "gamma"), ("bias", "beta"))}
        stats = {k: np.stack([np.asarray(state[v], dtype=sdt)] * R)
                 for k, v in (("mean", "running_mean"), ("var", "running_var"))}
        if self.engine_name == "pmap":
            params = {k: np.stack([v] * R) for k, v in params.items()}
        run = Run(ys=[], dxs=[], dgammas=[], dbetas=[])
        for shards, dys in steps:
            sizes = [len(s) for s in shards]
            if len(set(sizes)) > 1 and not self.masked:
                raise Unsupported(f"{self.name} maps equal shards only (sizes {sizes}); the masked engine "
                                  "takes unequal ones")
            x, mask = self._stack(shards)
            dy, _ = self._stack(dys)
            mask = mask if self.masked else None
            if self.engine_name == "jit":
                y, dx, ds, db, mean, var = self._global(params, stats, x, dy, mask)
            else:
                y, dx, ds, db, mean, var = map(np.asarray, self.fn(self.consts, params, stats, x, dy, mask))
            stats = {"mean": mean, "var": var}
            back = lambda a, r: _channel_first(np.asarray(a[r][:sizes[r]], dtype=np.float64))  # noqa: E731, B023
            run.ys.append([back(y, r) for r in range(R)])
            run.dxs.append([back(dx, r) for r in range(R)])
            run.dgammas.append([np.asarray(ds[r], dtype=np.float64) for r in range(R)])
            run.dbetas.append([np.asarray(db[r], dtype=np.float64) for r in range(R)])
        g, b = (np.asarray(state[k], dtype=np.float64) for k in ("gamma", "beta"))
        run.states = [dict(gamma=g, beta=b, running_mean=np.asarray(stats["mean"][r], dtype=np.float64),
                           running_var=np.asarray(stats["var"][r], dtype=np.float64)) for r in range(R)]
        return run

    def _global(self, params, stats, x, dy, mask):
        """The ``jit`` engine: the global batch (the shards concatenated) placed with NamedSharding
        along the batch axis, one call of the layer without axis_name; every replica is given the
        one result (the output cut back into shards)."""
        R = self.replica_count
        sharded = NamedSharding(mesh(R), P(AXIS))
        place = lambda a: None if a is None else jax.device_put(a.reshape((-1,) + a.shape[2:]), sharded)  # noqa: E731
        self.placed = place(x)
        out = self.fn(self.consts, params, {k: v[0] for k, v in stats.items()}, self.placed, place(dy), place(mask))
        self.out_sharding = out[0].sharding
        y, dx, ds, db, mean, var = map(np.asarray, out)
        cut = lambda a: a.reshape((R, -1) + a.shape[1:])  # noqa: E731
        every = lambda a: np.stack([a] * R)  # noqa: E731
        return cut(y), cut(dx), every(ds), every(db), every(mean), every(var)


def _channel_first(a):
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a
