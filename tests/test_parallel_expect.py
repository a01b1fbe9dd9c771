"""equiv.parallel.expect: the oracle's run from a declaration, and a comparison that can fail."""
import re

import numpy as np
import pytest
from hypothesis import given

from equiv.conventions import DECLARED
from equiv.parallel import ParallelConventions
from equiv.parallel.expect import compare, expected
from equiv.strategies import parallel_cases
from equiv.tolerance import ToleranceError

SYNC = ParallelConventions(synchronized=True, weighting="count", variance="two-pass", running_stats="global",
                           param_grads="mean")
LOCAL = ParallelConventions(synchronized=False, weighting="n/a", variance="n/a", running_stats="own",
                            param_grads="mean")
EQUAL = ParallelConventions(synchronized=True, weighting="equal", variance="fast", running_stats="global",
                            param_grads="sum")
DDP = ParallelConventions(synchronized=False, weighting="n/a", variance="n/a", running_stats="rank0-broadcast",
                          param_grads="mean")


def _run(conv, pc, single="torch.builtin"):
    return expected(conv, DECLARED[single], pc.case.state, pc.steps(), eps=pc.case.eps,
                    new_batch_weight=pc.case.new_batch_weight)


def _compare(conv, got, want, pc):
    return compare(conv, got, want, pc.steps(), pc.case.state, eps=pc.case.eps,
                   new_batch_weight=pc.case.new_batch_weight, dtype="float64")


@given(parallel_cases(dtypes=("float64",)))
def test_a_run_matches_itself(pc):
    for conv in (SYNC, LOCAL, EQUAL, DDP):
        want = _run(conv, pc)
        assert _compare(conv, want, want, pc) == 0.0
        assert len(want.ys) == pc.case.steps and len(want.states) == pc.replicas


def _case(sizes, steps=2, offset=None):
    from equiv.strategies import Case, ParallelCase
    return ParallelCase(Case(dtype="float64", shape=(sum(sizes), 3), seed=7, log10_scale=0.0,
                             log10_offset=offset, constant_channel=False, eps=1e-5,
                             new_batch_weight=0.1, steps=steps), tuple(sizes))


@pytest.mark.parametrize("declared,actual,what", [
    (SYNC, LOCAL, "y (step 1, replica 0)"),
    (LOCAL, DDP, "running mean (replica 1"),
    (EQUAL, SYNC, "y (step 1, replica 0)"),
])
def test_another_convention_fails_naming_what(declared, actual, what):
    pc = _case((2, 6))
    with pytest.raises(ToleranceError, match=re.escape(what)):
        _compare(declared, _run(actual, pc), _run(declared, pc), pc)


def test_equal_and_count_weighting_agree_on_equal_shards():
    pc = _case((4, 4, 4, 4))
    equal = ParallelConventions(**{**EQUAL.as_dict(), "param_grads": "mean"})
    assert _compare(SYNC, _run(equal, pc), _run(SYNC, pc), pc) <= 1.0


def test_ddp_replicas_start_each_step_from_rank_0():
    pc = _case((3, 5), steps=3)
    run = _run(DDP, pc)
    own = _run(LOCAL, pc)
    np.testing.assert_array_equal(run.states[0]["running_mean"], own.states[0]["running_mean"])
    assert not np.allclose(run.states[1]["running_mean"], own.states[1]["running_mean"])


def test_param_grads_sum_is_r_times_mean():
    pc = _case((3, 5))
    s = _run(SYNC, pc)
    t = _run(ParallelConventions(**{**SYNC.as_dict(), "param_grads": "sum"}), pc)
    np.testing.assert_allclose(np.array(t.dgammas[0]), 2 * np.array(s.dgammas[0]), rtol=1e-14)
    local = _run(ParallelConventions(**{**SYNC.as_dict(), "param_grads": "local"}), pc)
    np.testing.assert_allclose(np.sum(local.dgammas[0], axis=0), t.dgammas[0][0], rtol=1e-13)
