"""The data-parallel probes (equiv.parallel.probes) measure what an implementation does, not what it
declares: an implementation that is the oracle under one declaration is measured as that one; and
the worker process (equiv.parallel.worker) answers, raises, and is killed on a timeout."""
import itertools
from dataclasses import replace

import pytest

from equiv.parallel import ParallelAdapter, ParallelConventions
from equiv.parallel.expect import expected
from equiv.parallel.probes import measure
from equiv.parallel.worker import Hung, Worker


def _oracle_adapter(truth, declared):
    class Oracle(ParallelAdapter):
        name, base, engine = "oracle", "torch.builtin", "NumPy"
        conventions = declared
        dtypes = ("float64",)

        def run(self, state, steps):
            return expected(truth, self.single, state, steps, eps=self.eps, new_batch_weight=self.new_batch_weight)
    return Oracle


TRUTHS = [ParallelConventions(synchronized=True, weighting=w, variance="two-pass", running_stats="global",
                              param_grads=g, empty_shard="skip") for w, g in itertools.product(("count", "equal"),
                                                                                             ("local", "sum", "mean"))]
TRUTHS += [ParallelConventions(synchronized=False, weighting="n/a", variance="n/a", running_stats=r, param_grads=g,
                               dx="local", empty_shard="nan")
           for r, g in itertools.product(("own", "rank0-broadcast"), ("local", "mean"))]


@pytest.mark.parametrize("truth", TRUTHS, ids=lambda t: f"{t.synchronized}-{t.weighting}-{t.running_stats}-{t.param_grads}")
def test_probes_measure_what_runs_not_what_is_declared(truth):
    wrong = replace(truth, param_grads="sum" if truth.param_grads != "sum" else "local")
    A = _oracle_adapter(truth, wrong)
    got = measure(A)
    # the oracle itself has no answer for an empty shard (its equal weighting gives it NaN weight,
    # its unsynchronized run raises): empty_shard is measured on the engines, not here
    assert replace(got, empty_shard=truth.empty_shard) == truth and got != A.conventions


def test_worker_answers_raises_and_is_killed_on_timeout():
    w = Worker("tests.worker_target")
    try:
        assert w.call("echo", 30, value={"a": [1, 2]}) == {"a": [1, 2]}
        with pytest.raises(ValueError, match="planted"):
            w.call("fail", 30, message="planted")
        assert w.call("sleep", 30, seconds=0.01) == 0.01
        with pytest.raises(Hung, match="no answer within 0.5 s"):
            w.call("sleep", 0.5, seconds=60)
        assert not w.alive
    finally:
        w.close()
