"""The data-parallel probes (equiv.parallel.probes) measure what an implementation does, not what it
declares: an implementation that is the oracle under one declaration is measured as that one; and
the worker process (equiv.parallel.worker) answers, raises, and is killed on a timeout."""
import itertools
from dataclasses import replace

import numpy as np
import pytest

from equiv.core import Unsupported
from equiv.parallel import ParallelAdapter, ParallelConventions
from equiv.parallel.expect import expected
from equiv.parallel.probes import ProbeError, check, measure
from equiv.parallel.worker import Hung, Worker


def _oracle_adapter(truth, declared, equal_only=False, fast=False):
    """An implementation that is the oracle under ``truth`` but declares ``declared``; ``equal_only``:
    it refuses unequal shards (as the JAX engines without a mask do); ``fast``: its running variance
    carries the fast formula's error, u·(|mean|/std)² of the global batch, relatively."""
    class Oracle(ParallelAdapter):
        name, base, engine = "oracle", "torch.builtin", "NumPy"
        conventions = declared
        dtypes = ("float64",)
        unequal_shards = not equal_only

        def run(self, state, steps):
            if equal_only and len({len(s) for shards, _ in steps for s in shards}) > 1:
                raise Unsupported("equal shards only")
            got = expected(truth, self.single, state, steps, eps=self.eps, new_batch_weight=self.new_batch_weight)
            if fast:
                x = np.concatenate(steps[-1][0])
                axes = (0,) + tuple(range(2, x.ndim))
                ratio = np.abs(x.mean(axis=axes)) / x.std(axis=axes)
                for s in got.states:
                    s["running_var"] = s["running_var"] * (1 + 2.0 ** -53 * ratio ** 2)
            return got
    return Oracle


TRUTHS = [ParallelConventions(synchronized=True, weighting=w, variance="two-pass", running_stats="global",
                              param_grads=g, empty_shard="skip") for w, g in itertools.product(("count", "equal"),
                                                                                             ("local", "sum", "mean"))]
TRUTHS += [ParallelConventions(synchronized=False, weighting="n/a", variance="n/a", running_stats=r, param_grads=g,
                               dx="local", empty_shard="nan")
           for r, g in itertools.product(("own", "rank0-broadcast"), ("local", "mean"))]
IDS = lambda t: f"{t.synchronized}-{t.weighting}-{t.running_stats}-{t.param_grads}"  # noqa: E731


def _wrong(truth):
    return replace(truth, param_grads="sum" if truth.param_grads != "sum" else "local")


@pytest.mark.parametrize("truth", TRUTHS, ids=IDS)
def test_probes_measure_what_runs_not_what_is_declared(truth):
    A = _oracle_adapter(truth, _wrong(truth))
    m = measure(A)
    # the oracle itself has no answer for an empty shard (its equal weighting gives it NaN weight,
    # its unsynchronized run raises): empty_shard is measured on the engines, not here
    assert replace(m.conventions, empty_shard=truth.empty_shard) == truth and m.not_measured == {}
    assert ("param_grads", A.conventions.param_grads, truth.param_grads) in m.differences(A.conventions)
    with pytest.raises(ProbeError, match="param_grads declared"):
        check(A)


@pytest.mark.parametrize("truth", [t for t in TRUTHS if t.param_grads != "sum"], ids=IDS)
def test_equal_shards_measure_all_but_weighting_and_empty_shard(truth):
    """With equal shards only, a wrong weighting cannot be seen: it is named as not measured (and
    check passes on the rest); a wrong measured field still fails."""
    other = {"count": "equal", "equal": "count"}.get(truth.weighting, truth.weighting)
    A = _oracle_adapter(truth, replace(truth, weighting=other), equal_only=True)
    m = check(A)
    blind = {"weighting", "empty_shard"} if truth.synchronized else {"empty_shard"}
    assert set(m.not_measured) == blind, m.not_measured
    assert m.conventions == replace(truth, empty_shard=None, **({"weighting": None} if truth.synchronized else {}))
    assert "not measured: " in str(m)
    with pytest.raises(ProbeError, match="param_grads declared .* not measured: "):
        check(_oracle_adapter(truth, _wrong(truth), equal_only=True))


def test_the_variance_probe_tells_fast_from_two_pass():
    truth = TRUTHS[0]
    m = measure(_oracle_adapter(truth, truth, fast=True))
    assert m.conventions.variance == "fast" and m.numbers["variance_relative_error"] > 1e-9
    with pytest.raises(ProbeError, match="variance declared 'two-pass', measured 'fast'"):
        check(_oracle_adapter(truth, truth, fast=True))
    assert measure(_oracle_adapter(truth, truth)).numbers["variance_relative_error"] < 1e-11


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
