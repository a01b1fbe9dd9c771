"""PyTorch's data-parallel BatchNorm on torch.distributed (gloo, processes on 127.0.0.1): the
conventions each adapter declares are the ones its probes measure, and the findings of
``equiv.known`` on their witness runs. The worker pool is started once for the module and
reused by every test and Hypothesis example (``equiv.parallel.torch_ddp.pool``)."""
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="install it with: pip install torch==2.13.0")

from equiv import registry  # noqa: E402
from equiv.known import by_id  # noqa: E402
from equiv.parallel import probes  # noqa: E402
from equiv.parallel.expect import compare, expected  # noqa: E402
from equiv.parallel.torch_ddp import ReplicaError, TorchDDP, TorchDDPLocalBuffers, TorchSyncBN  # noqa: E402

NAMES = ("torch.ddp", "torch.ddp.local_buffers", "torch.syncbn")


@pytest.fixture(scope="module", autouse=True)
def _pool():
    from equiv.parallel import torch_ddp
    yield
    torch_ddp.shutdown()


def _load(name):
    A = registry.load_parallel(name)
    if A.unavailable():
        pytest.skip(A.unavailable())
    return A


@pytest.mark.parametrize("name", NAMES)
def test_declared_conventions_are_measured(name):
    A = _load(name)
    m = probes.check(A)   # every field measured: unequal shards, gradients
    assert m.not_measured == {} and m.conventions == A.conventions, str(m)


def test_probes_tell_the_two_buffer_modes_apart():
    """The running_stats probe can fail: the same layer with and without the broadcast measures
    differently, and a wrong declaration is caught by the generic comparison."""
    assert probes.measure(TorchDDP).conventions.running_stats == "rank0-broadcast"
    assert probes.measure(TorchDDPLocalBuffers).conventions.running_stats == "own"
    state, steps = _witness(2)
    with TorchDDP(2, 2, 2, dtype="float64") as a:
        got = a.run(state, steps)
        wrong = replace(a.conventions, running_stats="own")
        want = expected(wrong, a.single, state, steps, eps=a.eps, new_batch_weight=a.new_batch_weight)
        with pytest.raises(AssertionError, match="running mean"):
            compare(wrong, got, want, steps, state, eps=a.eps, new_batch_weight=a.new_batch_weight, dtype="float64")


# --- the witnesses of equiv.known.PARALLEL_FINDINGS ----------------------------------------------

def _witness(R, sizes=None, steps=3, seed=1):
    """float64, 2 channels, shards of 8 rows (or ``sizes``) with means 0, 5, −3, 2, std 1."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [8] * R
    means = [0.0, 5.0, -3.0, 2.0][:R]
    state = dict(gamma=np.ones(2), beta=np.zeros(2), running_mean=np.zeros(2), running_var=np.ones(2))
    run = [([m + rng.standard_normal((n, 2)) for m, n in zip(means, sizes)],
            [rng.standard_normal((n, 2)) for n in sizes]) for _ in range(steps)]
    return state, run


def _expected(a, state, steps, **conv):
    return expected(replace(a.conventions, **conv), a.single, state, steps, eps=a.eps,
                    new_batch_weight=a.new_batch_weight)


GLOBAL = dict(synchronized=True, weighting="count", variance="two-pass", running_stats="global", dx="global")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=by_id("torch-ddp-rank0-broadcast").reason)
def test_ddp_replica_stats_are_not_their_own_chain():
    state, steps = _witness(2)
    with TorchDDP(2, 2, 2, dtype="float64") as a:
        got = a.run(state, steps)
        own = _expected(a, state, steps, running_stats="own")
    np.testing.assert_allclose(got.states[1]["running_mean"], own.states[1]["running_mean"], rtol=1e-6)


def test_ddp_replica_stats_are_rank0s_chain_plus_one_own_step():
    """The witness's numbers: replica 1 holds rank 0's state after step 2 updated from its own third
    shard (0.449), its own chain would be 1.332."""
    state, steps = _witness(2)
    with TorchDDP(2, 2, 2, dtype="float64") as a:
        got = a.run(state, steps)
        own = _expected(a, state, steps, running_stats="own")
        head = _expected(a, state, steps[:2], running_stats="own").states[0]
        one = _expected(a, dict(state, **{k: head[k] for k in ("running_mean", "running_var")}), steps[2:],
                        running_stats="own").states[1]
    for k in ("running_mean", "running_var"):
        np.testing.assert_allclose(got.states[1][k], one[k], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got.states[1]["running_mean"][0], 0.449, atol=5e-4)
    np.testing.assert_allclose(own.states[1]["running_mean"][0], 1.332, atol=5e-4)


@pytest.mark.parametrize("R,mean,var,global_mean,global_var", [
    (2, (-0.049, 0.003), (0.834, 0.905), (0.641, 0.646), (2.817, 2.551)),
    (4, (-0.068, -0.027), (0.841, 0.887), (0.212, 0.281), (3.225, 3.285)),
])
@pytest.mark.parametrize("A", [TorchDDP, TorchDDPLocalBuffers], ids=lambda A: A.name)
def test_ddp_checkpoint_is_rank0_shard_not_global_batch(A, R, mean, var, global_mean, global_var):
    """Rank 0's checkpoint is rank 0's own chain exactly (measured), the global batch's statistics
    are far from it (the strict xfail below)."""
    state, steps = _witness(R)
    with A(2, 2, R, dtype="float64") as a:
        got = a.run(state, steps)
        ckpt = a.checkpoints[0]
        rank0 = _expected(a, state, steps, running_stats="own").states[0]
        glob = _expected(a, state, steps, **GLOBAL).states[0]
    assert ckpt["num_batches_tracked"] == len(steps)
    for k in ("running_mean", "running_var"):
        assert np.array_equal(ckpt[k], got.states[0][k])
        np.testing.assert_allclose(ckpt[k], rank0[k], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ckpt["running_mean"], mean, atol=5e-4)
    np.testing.assert_allclose(ckpt["running_var"], var, atol=5e-4)
    np.testing.assert_allclose(glob["running_mean"], global_mean, atol=5e-4)
    np.testing.assert_allclose(glob["running_var"], global_var, atol=5e-4)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=by_id("torch-ddp-checkpoint-rank0-shard").reason)
@pytest.mark.parametrize("R", [2, 4])
def test_ddp_checkpoint_holds_the_global_batch_statistics(R):
    state, steps = _witness(R)
    with TorchDDP(2, 2, R, dtype="float64") as a:
        a.run(state, steps)
        glob = _expected(a, state, steps, **GLOBAL).states[0]
    for k in ("running_mean", "running_var"):
        np.testing.assert_allclose(a.checkpoints[0][k], glob[k], rtol=1e-3)


@pytest.mark.parametrize("R", [2, 4])
@pytest.mark.parametrize("sizes", ["equal", "unequal"])
def test_ddp_averages_gradients(R, sizes):
    state, steps = _witness(R, sizes=None if sizes == "equal" else [2, 7, 3, 5][:R], steps=1)
    with TorchDDP(2, 2, R, dtype="float64") as a:
        got = a.run(state, steps)
        local = _expected(a, state, steps, param_grads="local")
    total_g, total_b = np.sum(local.dgammas[0], axis=0), np.sum(local.dbetas[0], axis=0)
    for r in range(R):
        np.testing.assert_allclose(got.dgammas[0][r], total_g / R, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(got.dbetas[0][r], total_b / R, rtol=1e-13, atol=1e-15)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=by_id("torch-ddp-grad-mean").reason)
def test_ddp_sums_gradients():
    state, steps = _witness(2, steps=1)
    with TorchDDP(2, 2, 2, dtype="float64") as a:
        got = a.run(state, steps)
        local = _expected(a, state, steps, param_grads="local")
    np.testing.assert_allclose(got.dgammas[0][0], np.sum(local.dgammas[0], axis=0), rtol=1e-6)


@pytest.mark.parametrize("ndim", [2, 4])
def test_ddp_empty_shard_on_rank0_freezes_the_checkpoint(ndim):
    rng = np.random.default_rng(4)
    tail = () if ndim == 2 else (2, 2)
    state = dict(gamma=rng.uniform(0.5, 2, 2), beta=rng.standard_normal(2), running_mean=rng.standard_normal(2),
                 running_var=rng.uniform(0.5, 2, 2))
    steps = [([np.zeros((0, 2) + tail), 3 + rng.standard_normal((5, 2) + tail)],
              [np.zeros((0, 2) + tail), rng.standard_normal((5, 2) + tail)]) for _ in range(2)]
    with TorchDDP(2, ndim, 2, dtype="float64") as a:
        got = a.run(state, steps)
        want = _expected(a, state, steps)
        compare(a.conventions, got, want, steps, state, eps=a.eps, new_batch_weight=a.new_batch_weight,
                dtype="float64")
        ckpt = a.checkpoints[0]
    assert got.ys[0][0].shape == (0, 2) + tail
    for k in ("running_mean", "running_var"):
        np.testing.assert_array_equal(ckpt[k], state[k])
    # replica 1 updated once from rank 0's frozen state, its own first-step update overwritten
    assert not np.allclose(got.states[1]["running_mean"], state["running_mean"])


def test_syncbn_refuses_the_cpu():
    class CpuSync(TorchSyncBN):
        device = "cpu"

    class CpuSyncAlone(CpuSync):
        ddp = False

    state, steps = _witness(2, steps=1)
    assert torch.__version__.startswith("2.13.0")
    with pytest.raises(ReplicaError, match="SyncBatchNorm layers only work with GPU modules") as e:
        with CpuSync(2, 2, 2, dtype="float64") as a:
            a.run(state, steps)
    assert e.value.kind == "ValueError"
    with pytest.raises(ReplicaError, match="SyncBatchNorm expected input tensor to be on GPU or XPU or privateuseone"):
        with CpuSyncAlone(2, 2, 2, dtype="float64") as a:
            a.run(state, steps)
    # the autograd Function's kernels have no CPU implementation
    x = torch.randn(4, 2, dtype=torch.float64)
    mean, invstd = x.mean(0), 1 / (x.var(0, unbiased=False) + 1e-5).sqrt()
    calls = {
        "batch_norm_stats": lambda: torch.batch_norm_stats(x, 1e-5),
        "batch_norm_gather_stats_with_counts": lambda: torch.batch_norm_gather_stats_with_counts(
            x, mean[None], invstd[None], None, None, 0.1, 1e-5, torch.tensor([4.0], dtype=torch.float64)),
        "batch_norm_elemt": lambda: torch.batch_norm_elemt(x, None, None, mean, invstd, 1e-5),
        "batch_norm_backward_reduce": lambda: torch.batch_norm_backward_reduce(x, x, mean, invstd, None,
                                                                               True, True, True),
        "batch_norm_backward_elemt": lambda: torch.batch_norm_backward_elemt(
            x, x, mean, invstd, None, mean, mean, torch.tensor([4], dtype=torch.int32)),
    }
    for op, call in calls.items():
        with pytest.raises(NotImplementedError,
                           match=f"Could not run 'aten::{op}' with arguments from the 'CPU' backend"):
            call()
    from torch.nn.modules._functions import SyncBatchNorm as SyncFunction
    with pytest.raises(NotImplementedError, match="aten::batch_norm_stats"):
        SyncFunction.apply(x, None, None, None, None, 1e-5, 0.1, None, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SyncBatchNorm runs on CUDA only; no GPU here")
@pytest.mark.parametrize("R", [2, 4])
def test_syncbn_on_cuda_is_the_global_batch(R):
    state, steps = _witness(R, sizes=[2, 7, 3, 5][:R])
    with TorchSyncBN(2, 2, R, dtype="float64") as a:
        got = a.run(state, steps)
        want = _expected(a, state, steps)
        compare(a.conventions, got, want, steps, state, eps=a.eps, new_batch_weight=a.new_batch_weight,
                dtype="float64")


def test_a_job_that_never_completes_times_out_and_ends_the_pool():
    """Every wait is bounded: a 2-replica job sent to rank 0 alone waits in DDP's first collective;
    the parent gives up after the timeout and ends the pool (the next job starts a fresh one).
    Last in the module: nothing after it needs the pool."""
    import time

    from equiv.parallel import torch_ddp
    state, steps = _witness(2, steps=1)
    a = TorchDDP(2, 2, 2, dtype="float64")
    p = torch_ddp.pool()
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="replica 0 did not answer within 2 s"):
        p.run(a.jobs(state, steps)[:1], timeout=2)
    assert time.monotonic() - start < 30
    assert torch_ddp._POOL is None and not p.procs
