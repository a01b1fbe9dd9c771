"""Data-parallel implementations of one's own, given as ``package.module:Class`` (``equiv distributed
--impls tests.planted_parallel:Correct``): the oracle of synchronized batch norm in NumPy under its
own declaration, and two planted bugs, each caught by what it breaks."""
from dataclasses import replace

from equiv.parallel import ParallelAdapter, ParallelConventions
from equiv.parallel.expect import expected

SYNC = ParallelConventions(synchronized=True, weighting="count", variance="two-pass", running_stats="global",
                           param_grads="local", empty_shard="skip")


class Correct(ParallelAdapter):
    """Synchronized batch norm over the global batch, count-weighted, in NumPy."""
    base, engine, conventions = "torch.builtin", "NumPy, in process", SYNC
    dtypes = ("float64",)
    truth = SYNC

    def run(self, state, steps):
        return expected(self.truth, self.single, state, steps, eps=self.eps, new_batch_weight=self.new_batch_weight)


class WrongDeclaration(Correct):
    """Leaves dgamma and dbeta local but declares them summed over replicas: the probes say so in
    words, and the property's gradients are off."""
    conventions = replace(SYNC, param_grads="sum")


class EqualWeighting(Correct):
    """Declares count weighting but averages the replicas' statistics equally: off on unequal shards."""
    truth = replace(SYNC, weighting="equal")
