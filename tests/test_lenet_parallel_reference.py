"""The NumPy BN-LeNet on R data-parallel replicas (reference.lenet.data_parallel_loss_and_grads):
synchronized = the single-device step on the global batch; per shard = each replica's BN on its
own shard, the parameter gradients averaged over the replicas (= the gradient of the mean shard
loss, checked by finite differences), each replica's running statistics from its own shard."""
import numpy as np
import pytest

from reference import lenet
from tests.test_lenet_reference import batch, perturbed_params

R = 4


def test_synchronized_is_the_single_device_step_on_the_global_batch():
    x, y = batch(8)
    p, s = perturbed_params(), lenet.init_state()
    loss, grads, states, cache = lenet.data_parallel_loss_and_grads(p, s, x, y, replicas=R, synchronized=True)
    loss1, grads1, state1, cache1 = lenet.loss_and_grads(p, s, x, y)
    assert loss == loss1 and len(states) == R
    for k in grads1:
        np.testing.assert_array_equal(grads[k], grads1[k])
    for st in states:
        for k in state1:
            np.testing.assert_array_equal(st[k], state1[k])
    for k in lenet.ACTIVATIONS:
        np.testing.assert_array_equal(cache[k], cache1[k])


def test_one_replica_per_shard_is_the_single_device_step():
    x, y = batch(4)
    p, s = perturbed_params(), lenet.init_state()
    loss, grads, (state,), _ = lenet.data_parallel_loss_and_grads(p, s, x, y, replicas=1, synchronized=False)
    loss1, grads1, state1, _ = lenet.loss_and_grads(p, s, x, y)
    assert loss == loss1
    for k in grads1:
        np.testing.assert_array_equal(grads[k], grads1[k])


def test_per_shard_gradients_are_those_of_the_mean_shard_loss():
    """Finite differences of L(θ) = (1/R) Σ_r loss(θ; shard r), every shard normalized alone."""
    x, y = batch(8)
    p, s = perturbed_params(), lenet.init_state()
    loss, grads, _, _ = lenet.data_parallel_loss_and_grads(p, s, x, y, replicas=R, synchronized=False)

    def mean_loss(q):
        return np.mean([lenet.loss_and_grads(q, s, xs, ys)[0]
                        for xs, ys in zip(lenet.shards(x, R), lenet.shards(y, R))])
    assert loss == pytest.approx(mean_loss(p), rel=1e-15)
    rng, h = np.random.default_rng(3), 1e-6
    for name, value in p.items():
        for flat in rng.choice(value.size, size=min(2, value.size), replace=False):
            idx = np.unravel_index(flat, value.shape)
            losses = []
            for sign in (1, -1):
                q = dict(p)
                q[name] = value.copy()
                q[name][idx] += sign * h
                losses.append(mean_loss(q))
            assert grads[name][idx] == pytest.approx((losses[0] - losses[1]) / (2 * h), rel=1e-5, abs=1e-8), name
    # not the global batch's step: the shards' statistics differ from the batch's
    _, grads1, _, _ = lenet.loss_and_grads(p, s, x, y)
    assert np.abs(grads["conv1.weight"] - grads1["conv1.weight"]).max() > 1e-3 * np.abs(grads1["conv1.weight"]).max()


def test_per_shard_state_and_cache_are_each_replicas_own():
    x, y = batch(8)
    p, s = perturbed_params(), lenet.init_state()
    _, _, states, cache = lenet.data_parallel_loss_and_grads(p, s, x, y, replicas=R, synchronized=False,
                                                             new_batch_weight=0.3, unbiased=False)
    for r, (xs, ys) in enumerate(zip(lenet.shards(x, R), lenet.shards(y, R))):
        _, _, state_r, cache_r = lenet.loss_and_grads(p, s, xs, ys, new_batch_weight=0.3, unbiased=False)
        for k in state_r:
            np.testing.assert_array_equal(states[r][k], state_r[k])
        for k in lenet.ACTIVATIONS:
            np.testing.assert_array_equal(lenet.shards(cache[k], R)[r], cache_r[k])
        fc1 = cache["fc1"][2 * r:2 * r + 2]           # replica r's running mean of bn3: 0.3 · its shard's mean
        np.testing.assert_allclose(states[r]["bn3.running_mean"], 0.3 * fc1.mean(axis=0), rtol=1e-13)
    assert np.abs(states[0]["bn1.running_mean"] - states[1]["bn1.running_mean"]).max() > 1e-6


def test_unequal_shards_are_refused():
    x, y = batch(6)
    with pytest.raises(ValueError, match="6 cannot be cut into 4 equal shards"):
        lenet.data_parallel_loss_and_grads(lenet.init_params(0), lenet.init_state(), x, y, replicas=4,
                                           synchronized=False)
