"""MXNet 1.9.1 gluon.contrib.nn.SyncBatchNorm over CPU contexts (mxnet.sync): the declared
conventions against the probes, num_devices (its default on a CPU, one too many), float64, the
shards gluon.utils.split_and_load cuts, and the fast variance turning negative. Every run goes
through a worker process under a timeout (equiv.parallel.worker): a barrier that waits for a
replica that never comes is killed, not waited on."""
import numpy as np
import pytest

from equiv import registry

mx = pytest.importorskip("mxnet", reason="install it with: pip install mxnet==1.9.1 'numpy<1.24'")

from equiv.parallel import mxnet as pmx  # noqa: E402
from equiv.parallel.probes import check  # noqa: E402
from equiv.parallel.worker import Hung  # noqa: E402
from equiv.strategies import Case, ParallelCase  # noqa: E402

A = registry.load_parallel("mxnet.sync")
EPS = 1e-5


def _state(c=2):
    return dict(gamma=np.ones(c), beta=np.zeros(c), running_mean=np.zeros(c), running_var=np.ones(c))


def _shards(sizes=(4, 4), c=2, seed=0):
    rng = np.random.default_rng(seed)
    xs = [(rng.standard_normal((n, c)) + 3 * r).astype(np.float32).astype(np.float64) for r, n in enumerate(sizes)]
    return xs, [rng.standard_normal((n, c)).astype(np.float32).astype(np.float64) for n in sizes]


def _call(num_devices, xs, dys, timeout=60, dtype="float32"):
    return pmx.call(timeout, replicas=len(xs), channels=xs[0].shape[1], num_devices=num_devices, momentum=0.0,
        eps=EPS, state=_state(xs[0].shape[1]), steps=[(xs, dys)], dtype=dtype)


def test_declared_conventions_are_measured():
    m = check(A)   # every field measured: unequal shards, gradients
    assert m.not_measured == {} and m.conventions == A.conventions, str(m)


def test_num_devices_1_on_two_contexts_is_unsynchronized():
    """Finding: num_devices defaults to the number of GPUs, 1 when there are none
    (gluon/contrib/nn/basic_layers.py:237-243, _get_num_devices, with a UserWarning), and with
    num_devices=1 every replica's barrier is passed at once and SharedND has one slot: each CPU
    context normalizes with its own shard's statistics and keeps them as its moving statistics
    (measured: replica 0's moving mean is its shard's mean exactly, replica 1's its own)."""
    xs, dys = _shards()
    run = _call(1, xs, dys)
    for r, x in enumerate(xs):
        np.testing.assert_allclose(run["states"][r]["running_mean"], x.mean(0), rtol=1e-6)
    assert not np.allclose(run["states"][0]["running_mean"], run["states"][1]["running_mean"])


def test_num_devices_above_the_contexts_hangs_in_the_barrier():
    """Finding: with num_devices=3 and 2 contexts the forward's Barrier::Wait
    (sync_batch_norm-inl.h, class Barrier) waits for a third replica forever: no error, no timeout.
    The worker is killed after 10 s."""
    xs, dys = _shards()
    with pytest.raises(Hung, match="no answer within 10 s"):
        _call(3, xs, dys, timeout=10)


def test_float64_is_refused():
    """The operator is written for real_t (float32): float64 input fails in the engine with
    'TBlob.get_with_shape: data type do not match specified type. Expected: double v.s. given float'."""
    xs, dys = _shards()
    with pytest.raises(Exception, match="data type do not match"):
        _call(2, xs, dys, dtype="float64")


def test_split_and_load_uneven_gives_the_shards_the_adapter_takes():
    """gluon.utils.split_and_load(even_split=False) cuts 10 rows over 4 contexts into consecutive
    pieces of 3, 3, 2, 2 (measured): unequal shards, the ones mxnet.sync is run on, and equal
    weighting then weighs each value of the last two replicas 3/2 as much as one of the first two."""
    from mxnet import gluon
    # NumPy semantics are process-wide: once another test (the mxnet BN-LeNet) has turned them on,
    # split_and_load takes mxnet.np arrays only
    x = (mx.np if mx.util.is_np_array() else mx.nd).arange(20).reshape((10, 2))
    parts = gluon.utils.split_and_load(x, [mx.cpu(i) for i in range(4)], even_split=False)
    assert [p.shape[0] for p in parts] == [3, 3, 2, 2]
    np.testing.assert_array_equal(np.concatenate([p.asnumpy() for p in parts]), x.asnumpy())


def test_unequal_shards_merge_equal_weighted_not_the_global_batch():
    """Finding (a convention, declared weighting="equal"): with shards of 2 and 6 values the moving
    mean is the mean of the two shard means, not the global batch's (measured 1.347 and 1.421
    against the global 1.83 and 2.14 on these shards)."""
    xs, dys = _shards((2, 6))
    run = _call(2, xs, dys)
    equal, count = np.mean([x.mean(0) for x in xs], axis=0), np.concatenate(xs).mean(0)
    for st in run["states"]:
        np.testing.assert_allclose(st["running_mean"], equal, rtol=1e-6)
        assert not np.allclose(st["running_mean"], count, rtol=1e-2)


def test_fast_variance_goes_negative_at_large_offsets():
    """Finding mxnet-sync-fast-variance-offset: at |mean|/std ~ 1e4 (float32) the merged variance
    E[x²] − E[x]² comes out negative (no clip): running variance −32 where the data's is 6.9,
    and NaN outputs where var + eps < 0."""
    pc = ParallelCase(Case(dtype="float32", shape=(16, 2), seed=4, log10_scale=0.0, log10_offset=4.0,
                           constant_channel=False, eps=EPS, new_batch_weight=1.0), (8, 8))
    with A(2, 2, 2, dtype="float32", new_batch_weight=1.0, eps=EPS) as a:
        got = a.run(pc.case.state, pc.steps())
    assert got.states[0]["running_var"].min() < 0 < pc.case.x.var(axis=0).min()
    assert np.isnan(got.ys[0][0]).any()


def test_default_temp_space_copies_deadlock_the_net():
    """Finding mxnet-sync-temp-space-deadlock: BN-LeNet with SyncBatchNorm on 4 CPU contexts, with
    MXNet's default of 4 temporary-workspace copies shared by every CPU context
    (src/resource.cc:90), does not finish its first step: two replicas' backward ops draw the
    same copy while one of them waits in the layer's barrier. The worker is killed after 10 s;
    with equiv.lenet.mxnet_sync_net.TEMP_COPIES (256) the same step returns."""
    from equiv import lenet
    from equiv.lenet import mxnet_sync_net as m
    from reference import lenet as ref
    x, y = lenet.synthetic(128, 0)
    params = {k: v.astype(np.float32) for k, v in ref.init_params(0).items()}
    step = dict(xs=ref.shards(x, 4), ys=ref.shards(y, 4), lr=0.1, capture=False)
    m._call("_build", temp_copies=4, id=-1, impl="sync", params=params, state=ref.init_state())
    with pytest.raises(Hung, match="_step: no answer within 10 s"):
        m._call("_step", timeout=10, temp_copies=4, id=-1, **step)
    m._call("_build", id=-1, impl="sync", params=params, state=ref.init_state())
    assert np.isfinite(m._call("_step", id=-1, **step)["loss"])


def test_trainer_first_step_broadcasts_context0_running_stats():
    """Finding gluon-trainer-first-step-broadcast: plain gluon BatchNorm on 4 CPU contexts
    (mxnet.contexts); after the first Trainer step every context holds context 0's running
    statistics bit for bit (its kvstore's first broadcast), after the second each its own again."""
    from equiv import lenet
    from equiv.dtypes import round_to
    from equiv.lenet import lockstep
    from equiv.lenet import mxnet_sync_net as m
    from reference import lenet as ref
    x, y = lenet.synthetic(256, 5)
    x = round_to(x, "float32")
    params = {k: round_to(v, "float32") for k, v in ref.init_params(5).items()}
    n = m.build("contexts")
    m.load_params(n, params)
    m.step(n, x[:128], y[:128], 0.1)
    _, _, own, _ = ref.data_parallel_loss_and_grads(params, ref.init_state(), x[:128], y[:128], replicas=4,
                                                    synchronized=False, **lenet.CONVENTIONS["mxnet.contexts"])
    for r in range(1, 4):
        assert all(np.array_equal(n.replica_states[r][k], n.replica_states[0][k]) for k in own[0])
        assert max(lockstep.rel_error(own[r][k], own[0][k]) for k in own[0]) > 0.03    # their own differ
    m.step(n, x[128:], y[128:], 0.1)
    assert not any(np.array_equal(n.replica_states[r]["bn1.running_mean"], n.replica_states[0]["bn1.running_mean"])
                   for r in range(1, 4))
