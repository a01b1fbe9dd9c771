"""BN-LeNet data-parallel (equiv.lenet.PARALLEL) against the NumPy reference's data-parallel step,
in lockstep: 4 replicas × 32 images of a global batch of 128, from the shared initialization.

- torch.ddp (DDP, gloo, 4 processes, plain BatchNorm): each replica normalizes its own 32; the
  reference in per-shard mode, the parameter gradients averaged, rank 0's running statistics.
- jax.pmap (flax.linen.BatchNorm(axis_name) under jax.pmap): synchronized; the reference on
  the global batch of 128 (the single-device step).
- tf.mirrored / tf.mirrored.sync (Keras BatchNormalization under MirroredStrategy, 4 logical
  CPUs in a worker process; synchronized=False / True): per shard / the global batch; the
  replicas' loss scaled by the global batch, their gradients summed by the optimizer.
- mxnet.contexts / mxnet.sync (gluon.nn.BatchNorm / gluon.contrib.nn.SyncBatchNorm on 4 CPU
  contexts in a worker process, float32 only): per shard / the global batch; the losses scaled
  by the global batch, the gradients summed by gluon.Trainer's kvstore.

Each net stays within the lockstep tolerance at every step, or diverges exactly where an
``equiv.known.NET_FINDINGS`` entry says. Each one also matches only its own truth: after one
step, its outputs are over the tolerance against the other mode's reference.
"""
import json

import numpy as np
import pytest

from equiv import lenet, registry
from equiv.dtypes import round_to
from equiv.lenet import lockstep
from reference import lenet as ref
from tests.lenet_helpers import assert_lockstep  # noqa: E402

STEPS, BATCH = 3, 128           # synthetic (seed 3), 4 replicas × 32
REAL_STEPS = 3                  # Fashion-MNIST (seed 0)
QUANTITIES = len(ref.ACTIVATIONS) + 1 + len(ref.PARAM_NAMES) + 2 * len(ref.BN_LAYERS)
BN_MODE = {"torch.ddp": "per-shard", "jax.pmap": "global", "tf.mirrored": "per-shard", "tf.mirrored.sync": "global",
           "mxnet.contexts": "per-shard", "mxnet.sync": "global"}


def _dtypes(mod):
    """The dtypes a net computes in (``DTYPES``; mxnet's: float32 only)."""
    return getattr(mod, "DTYPES", ("float64", "float32"))


def _needs(mod, dtype):
    if dtype not in _dtypes(mod):
        pytest.skip(f"{mod.__name__} computes in {', '.join(_dtypes(mod))} only")


@pytest.fixture(params=sorted(lenet.PARALLEL))
def net(request):
    label = request.param
    try:
        mod, impl = registry.load_lenet(label)
        mod.build(impl, _dtypes(mod)[0], "cpu")
    except ValueError as e:
        if "not installed" in str(e) or "devices" in str(e):
            pytest.skip(str(e))
        raise
    return label, mod, impl


def _check(r, label, dtype, data):
    assert (r["replicas"], r["bn"]) == (4, BN_MODE[label])
    assert_lockstep(r, label, dtype, data, QUANTITIES)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lockstep_synthetic(net, dtype):
    label, mod, impl = net
    _needs(mod, dtype)
    r = lockstep.run(mod, impl, steps=STEPS, dtype=dtype, seed=3, batch=BATCH)
    _check(r, label, dtype, "synthetic")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lockstep_fashion_mnist(net, dtype, fashion_mnist):
    label, mod, impl = net
    _needs(mod, dtype)
    r = lockstep.run(mod, impl, steps=REAL_STEPS, dtype=dtype, seed=0, batch=BATCH, dataset=fashion_mnist)
    _check(r, label, dtype, "fashion-mnist")


def test_each_net_matches_its_own_truth_only(net):
    """One float64 step (float32 for a float32-only net): within the tolerance of its own mode's reference, far over
    it against the other mode's (the shards' BN statistics are not the global batch's), and the replicas
    keep what the engine promises (DDP, MirroredStrategy: replica r's statistics from its own
    shard, or the global batch's when synchronized, parameters equal on every replica; gluon's
    Trainer: every context context 0's statistics after the first step; pmap: every replica the same)."""
    label, mod, impl = net
    dtype = _dtypes(mod)[0]
    x, y = lenet.synthetic(BATCH, 5)
    x = round_to(x, dtype)
    params, state = {k: round_to(v, dtype) for k, v in ref.init_params(5).items()}, ref.init_state()
    n = mod.build(impl, dtype, "cpu")
    mod.load_params(n, params)
    _, acts = mod.step(n, x, y, 0.1)
    conv, tol = lenet.CONVENTIONS[label], lockstep.tolerance(dtype, BATCH)
    truth = {}
    for sync in (False, True):
        _, grads, states, cache = ref.data_parallel_loss_and_grads(params, state, x, y, replicas=4,
                                                                   synchronized=sync, **conv)
        truth[sync] = max(lockstep.rel_error(acts[k], cache[k]) for k in ref.ACTIVATIONS)
        if sync == (BN_MODE[label] == "global"):
            got = mod.get_params(n)
            assert max(lockstep.rel_error(got[k], v - 0.1 * grads[k]) for k, v in params.items()) <= tol
            own_states = states
    own = BN_MODE[label] == "global"
    assert truth[own] <= tol and truth[not own] > 1e3 * tol, truth
    if getattr(n, "replica_states", None) is not None:
        assert len(n.replica_states) == 4
        for r, st in enumerate(n.replica_states):
            # gluon's Trainer broadcasts context 0's at its first step (gluon-trainer-first-step-broadcast)
            expect = own_states[0] if label == "mxnet.contexts" else own_states[r]
            assert max(lockstep.rel_error(st[k], expect[k]) for k in st) <= tol, r
        for p in n.replica_params[1:]:
            assert all(np.array_equal(p[k], n.replica_params[0][k]) for k in p)
    else:
        assert n.spread == 0.0


def test_cli_lockstep_runs_a_data_parallel_net(net, tmp_path, capsys):
    from argparse import ArgumentParser

    from equiv.cli import lenet as cli_glue
    label, _, _ = net
    out = tmp_path / "ls.json"
    code = cli_glue.lockstep_main(cli_glue.add_lockstep_args(ArgumentParser()).parse_args(
        ["--impls", label, "--steps", "1", "--dtype", "float32", "--out", str(out), "--quiet"]))
    (res,) = json.loads(out.read_text())
    assert code == 0 and res["label"] == label and res["bn"] == BN_MODE[label]
    assert label in capsys.readouterr().out


def test_uneven_global_batch_is_refused(net):
    label, mod, impl = net
    n = mod.build(impl, "float32", "cpu")
    mod.load_params(n, {k: round_to(v, "float32") for k, v in ref.init_params(0).items()})
    x, y = lenet.synthetic(6, 0)
    with pytest.raises(ValueError, match="4 equal shards"):
        mod.step(n, x, y, 0.1)
