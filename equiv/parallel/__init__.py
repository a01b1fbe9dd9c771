"""Data-parallel BatchNorm: one layer replicated over R devices or processes, each given a shard
of the batch, on the framework's own distributed engine.

An implementation is a ``ParallelAdapter``: it runs k training steps of R replicas on given shards
in one call and returns what every replica computed and holds (``Run``). What it does across
replicas is declared as data (``ParallelConventions``, one row per name in
``equiv.parallel.conventions.DECLARED``, which the class reads); what it does on one replica is the
single-device row of its base layer (``equiv.conventions.DECLARED[base]``: momentum, running
variance, eps). ``equiv.parallel.expect`` turns both into the oracle's run
(``reference.parallel``) and compares under ``equiv.tolerance``. Frameworks are imported lazily:
nothing here imports one.
"""
from dataclasses import asdict, dataclass, field

from equiv.core import Unsupported, framework_version


@dataclass(frozen=True)
class ParallelConventions:
    """What a data-parallel BatchNorm does across replicas. Field by field:

    synchronized:  True when every replica normalizes with statistics merged over all replicas.
    weighting:     how per-replica statistics are merged: "count" (each value counts once: the
                   global batch), "equal" (each replica's mean counts once, whatever its count);
                   "n/a" when not synchronized.
    variance:      the variance across replicas: "two-pass" (from per-replica moments) or "fast"
                   (E[x²] − E[x]² from all-reduced sums); "n/a" when not synchronized.
    running_stats: what every replica's running statistics hold after k steps: "global" (updated
                   from the merged statistics, equal on all replicas), "own" (each replica's from its
                   own shards), "rank0-broadcast" (replica 0's buffers are copied to all before each
                   step, then each updates from its own shard: DistributedDataParallel's
                   broadcast_buffers).
    param_grads:   the dgamma, dbeta every replica ends with: "local" (Σ over its own shard),
                   "sum" (Σ over all replicas) or "mean" (Σ/R: the wrapper averages gradients).
    dx:            "global" (the gradient of Σ over replicas of Σ y·dy, through the merged
                   statistics) or "local" (of the replica's own Σ y·dy only).
    empty_shard:   what a replica given no values does: "error", "skip" (it weighs nothing), "nan";
                   "n/a" for an implementation that takes equal shards only.
    """

    synchronized: bool
    weighting: str
    variance: str
    running_stats: str
    param_grads: str
    dx: str = "global"
    empty_shard: str = "error"

    def as_dict(self):
        return asdict(self)


@dataclass
class Run:
    """What R replicas computed over k steps: ``ys[step][replica]``, ``dxs`` alike (None without
    gradients), ``dgammas[step][replica]`` and ``dbetas`` (length-C vectors), and ``states[replica]``,
    the dict gamma, beta, running_mean, running_var after the last step. Float64 NumPy, channel-first."""

    ys: list
    dxs: list = None
    dgammas: list = None
    dbetas: list = None
    states: list = field(default_factory=list)
    history: list = None   # the oracle's: running statistics per replica before step 1 and after each


class ParallelAdapter:
    """A data-parallel BatchNorm behind one protocol. Subclasses set the class attributes and
    implement ``run`` (and ``close`` if they hold processes or devices)."""

    name = ""            # "torch.ddp"
    framework = ""       # distribution name, for the version
    install = ""         # set by equiv.registry.load_parallel
    # the next three from equiv.parallel.conventions (BASE, ENGINE, DECLARED [name])
    base = ""            # the single-device row in equiv.conventions.DECLARED
    engine = ""          # one line: what runs the replicas ("torch.distributed, gloo, a process per replica")
    conventions: ParallelConventions = None
    dtypes = ("float64", "float32")
    replicas = (2, 4)
    ndims = (2, 4)
    unequal_shards = True
    has_gradients = True

    def __init_subclass__(cls, **kwargs):
        """A subclass that names itself after a row of the one table (equiv/parallel/conventions.py)
        reads base, engine and conventions from it, unless its body sets them (a test's variant)."""
        super().__init_subclass__(**kwargs)
        from equiv.parallel.conventions import BASE, DECLARED, ENGINE
        if "name" in cls.__dict__ and cls.name in DECLARED:
            for attr, table in (("base", BASE), ("engine", ENGINE), ("conventions", DECLARED)):
                if attr not in cls.__dict__:
                    setattr(cls, attr, table[cls.name])

    def __init__(self, num_features, ndim, replicas, *, dtype="float32", new_batch_weight=None, eps=None):
        from equiv.conventions import DECLARED
        if dtype not in self.dtypes:
            raise Unsupported(f"{self.name} does not support dtype {dtype}")
        if replicas not in self.replicas:
            raise Unsupported(f"{self.name} runs {', '.join(map(str, self.replicas))} replicas, not {replicas}")
        if ndim not in self.ndims:
            raise Unsupported(f"{self.name} does not support {ndim}-D input")
        conv = self.single = DECLARED[self.base]
        self.num_features, self.ndim, self.replica_count, self.dtype = num_features, ndim, replicas, dtype
        self.new_batch_weight = conv.default_new_batch_weight if new_batch_weight is None else float(new_batch_weight)
        self.eps = conv.default_eps if eps is None else float(eps)
        self.build(conv.momentum_for(self.new_batch_weight), self.eps)

    def build(self, momentum, eps):
        """Prepare the replicated layer with the framework's own momentum and eps."""

    def run(self, state, steps):
        """Load ``state`` (gamma, beta, running_mean, running_var: length-C vectors) into every
        replica, then run one training step per entry of ``steps`` — a pair (shards, dy shards), one
        array per replica — forward and backward of Σ y·dy; return a ``Run``."""
        raise NotImplementedError

    def close(self):
        """Release processes or devices."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @classmethod
    def unavailable(cls):
        """Why this implementation cannot run here (e.g. it needs a GPU), or None."""
        return None

    @classmethod
    def version(cls):
        return framework_version(cls.framework)


# name -> (module, class, framework import name): data only, resolved by equiv.registry (load_parallel)
IMPLEMENTATIONS = {
    "torch.ddp": ("equiv.parallel.torch_ddp", "TorchDDP", "torch"),
    "torch.ddp.local_buffers": ("equiv.parallel.torch_ddp", "TorchDDPLocalBuffers", "torch"),
    "torch.syncbn": ("equiv.parallel.torch_ddp", "TorchSyncBN", "torch"),
    "tf.mirrored": ("equiv.parallel.tf", "KerasMirrored", "tensorflow"),
    "tf.mirrored.sync": ("equiv.parallel.tf", "KerasMirroredSync", "tensorflow"),
    "mxnet.sync": ("equiv.parallel.mxnet", "MXNetSyncBatchNorm", "mxnet"),
}
# JAX/Flax: the layer under each engine (equiv/parallel/_jax.py); .mask: unequal shards through mask=
IMPLEMENTATIONS.update({n: ("equiv.parallel.flax_linen", c, "flax") for n, c in (
    ("flax.linen.pmap", "LinenPmap"), ("flax.linen.pmap.two_pass", "LinenPmapTwoPass"),
    ("flax.linen.pmap.mask", "LinenPmapMask"), ("flax.linen.shard_map", "LinenShardMap"),
    ("flax.linen.vmap", "LinenVmap"), ("flax.linen.jit", "LinenJit"), ("flax.linen.jit.mask", "LinenJitMask"))})
IMPLEMENTATIONS.update({n: ("equiv.parallel.flax_nnx", c, "flax") for n, c in (
    ("flax.nnx.pmap", "NNXPmap"), ("flax.nnx.shard_map", "NNXShardMap"), ("flax.nnx.vmap", "NNXVmap"),
    ("flax.nnx.jit", "NNXJit"))})
