"""The NumPy float64 BN-LeNet (reference/lenet.py): gradients, shapes, BN state, SGD."""

import numpy as np
import pytest

from reference import batch_norm_infer, batch_norm_train, lenet

EXPECTED_SHAPES = {  # for a batch of N = 3
    "conv1": (3, 6, 24, 24), "bn1": (3, 6, 24, 24), "sig1": (3, 6, 24, 24), "pool1": (3, 6, 12, 12),
    "conv2": (3, 16, 8, 8), "bn2": (3, 16, 8, 8), "sig2": (3, 16, 8, 8), "pool2": (3, 16, 4, 4),
    "flat": (3, 256), "fc1": (3, 120), "bn3": (3, 120), "sig3": (3, 120),
    "fc2": (3, 84), "bn4": (3, 84), "sig4": (3, 84), "fc3": (3, 10),
}
PARAM_SHAPES = {
    "conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,), "bn1.gamma": (6,), "bn1.beta": (6,),
    "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,), "bn2.gamma": (16,), "bn2.beta": (16,),
    "fc1.weight": (120, 256), "fc1.bias": (120,), "bn3.gamma": (120,), "bn3.beta": (120,),
    "fc2.weight": (84, 120), "fc2.bias": (84,), "bn4.gamma": (84,), "bn4.beta": (84,),
    "fc3.weight": (10, 84), "fc3.bias": (10,),
}
BN_INPUTS = {"bn1": "conv1", "bn2": "conv2", "bn3": "fc1", "bn4": "fc2"}


def batch(n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)), rng.integers(0, 10, size=n)


def perturbed_params(seed=0):
    """Parameters with gamma/beta away from 1/0, so that their gradients are exercised."""
    rng = np.random.default_rng(seed + 100)
    p = lenet.init_params(seed)
    for k in p:
        if k.endswith(".gamma"):
            p[k] = rng.uniform(0.5, 1.5, p[k].shape)
        elif k.endswith(".beta"):
            p[k] = rng.uniform(-0.5, 0.5, p[k].shape)
    return p


def random_state(seed=3):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(0.5, 2.0, v.shape) if k.endswith("var") else rng.normal(0, 0.3, v.shape)
            for k, v in lenet.init_state().items()}


def test_init_shapes_and_determinism():
    p = lenet.init_params(0)
    assert list(p) == list(PARAM_SHAPES)
    assert {k: v.shape for k, v in p.items()} == PARAM_SHAPES
    assert all(v.dtype == np.float64 for v in p.values())
    for k, v in lenet.init_params(0).items():
        np.testing.assert_array_equal(v, p[k])
    assert not np.array_equal(lenet.init_params(1)["fc1.weight"], p["fc1.weight"])
    # Xavier uniform bound for fc1: sqrt(6 / (256 + 120))
    assert np.abs(p["fc1.weight"]).max() <= np.sqrt(6 / 376) and p["fc1.weight"].std() > 0.05
    s = lenet.init_state()
    assert set(s) == {f"bn{i}.running_{m}" for i in range(1, 5) for m in ("mean", "var")}
    assert all((v == 0).all() for k, v in s.items() if k.endswith("mean"))
    assert all((v == 1).all() for k, v in s.items() if k.endswith("var"))


def test_cached_activations():
    x, _ = batch(3)
    p = perturbed_params()
    logits, _, cache = lenet.forward(p, lenet.init_state(), x, training=True)
    assert list(cache) == list(lenet.ACTIVATIONS) == list(EXPECTED_SHAPES)
    assert {k: v.shape for k, v in cache.items()} == EXPECTED_SHAPES
    assert logits is cache["fc3"]
    # conv1 against a direct loop (cross-correlation, PyTorch convention)
    w, b = p["conv1.weight"], p["conv1.bias"]
    for (n, o, i, j) in [(0, 0, 0, 0), (2, 5, 23, 23), (1, 3, 7, 19)]:
        expect = (x[n, 0, i:i + 5, j:j + 5] * w[o, 0]).sum() + b[o]
        assert cache["conv1"][n, o, i, j] == pytest.approx(expect, rel=1e-12)
    # BN layers are the oracle's; pooling averages 2x2 blocks; sigmoid is 1/(1+e^-z)
    y, _, _ = batch_norm_train(cache["conv2"], p["bn2.gamma"], p["bn2.beta"], eps=1e-5)
    np.testing.assert_array_equal(cache["bn2"], y)
    np.testing.assert_allclose(cache["sig3"], 1 / (1 + np.exp(-cache["bn3"])), rtol=1e-14)
    assert cache["pool1"][1, 2, 3, 4] == pytest.approx(cache["sig1"][1, 2, 6:8, 8:10].mean(), rel=1e-14)
    np.testing.assert_array_equal(cache["flat"], cache["pool2"].reshape(3, -1))


@pytest.mark.parametrize("bn_kwargs", [{}, {"eps": 0.5, "new_batch_weight": 0.3, "unbiased": False}])
def test_gradients_match_finite_differences(bn_kwargs):
    x, y = batch(3)
    p = perturbed_params()
    state = random_state()
    loss, grads, _, _ = lenet.loss_and_grads(p, state, x, y, **bn_kwargs)
    assert list(grads) == list(p)
    rng = np.random.default_rng(7)
    h = 1e-6
    for name, value in p.items():
        assert grads[name].shape == value.shape
        for flat in rng.choice(value.size, size=min(4, value.size), replace=False):
            idx = np.unravel_index(flat, value.shape)
            losses = []
            for sign in (1, -1):
                q = dict(p)
                q[name] = value.copy()
                q[name][idx] += sign * h
                losses.append(lenet.loss_and_grads(q, state, x, y, **bn_kwargs)[0])
            numeric = (losses[0] - losses[1]) / (2 * h)
            assert grads[name][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, idx)
    # a bias right before a training-mode BN has no effect on the loss
    for name in ("conv1.bias", "conv2.bias", "fc1.bias", "fc2.bias"):
        np.testing.assert_allclose(grads[name], 0, atol=1e-12)
    assert np.abs(grads["conv1.weight"]).max() > 1e-4  # the check above is not vacuous


@pytest.mark.parametrize("w, unbiased", [(0.1, True), (0.3, False), (1.0, True)])
def test_running_stats_update(w, unbiased):
    x, _ = batch(3)
    p, state = perturbed_params(), random_state()
    before = {k: v.copy() for k, v in state.items()}
    _, new_state, cache = lenet.forward(p, state, x, training=True, new_batch_weight=w, unbiased=unbiased)
    for k in state:  # the input state is not modified
        np.testing.assert_array_equal(state[k], before[k])
    for bn, inp in BN_INPUTS.items():
        a = cache[inp]
        axes = (0, 2, 3) if a.ndim == 4 else (0,)
        mean, var = a.mean(axis=axes), a.var(axis=axes, ddof=1 if unbiased else 0)
        np.testing.assert_allclose(new_state[f"{bn}.running_mean"],
                                   (1 - w) * state[f"{bn}.running_mean"] + w * mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(new_state[f"{bn}.running_var"],
                                   (1 - w) * state[f"{bn}.running_var"] + w * var, rtol=1e-12)


def test_inference_uses_running_stats():
    x, _ = batch(5)
    p, state = perturbed_params(), random_state()
    logits, new_state, cache = lenet.forward(p, state, x, training=False, eps=1e-3)
    for k in state:
        np.testing.assert_array_equal(new_state[k], state[k])
    for bn, inp in BN_INPUTS.items():
        expect = batch_norm_infer(cache[inp], p[f"{bn}.gamma"], p[f"{bn}.beta"],
                                  state[f"{bn}.running_mean"], state[f"{bn}.running_var"], eps=1e-3)
        np.testing.assert_array_equal(cache[bn], expect)
    # inference is per example: one row alone gives the same logits
    one, _, _ = lenet.forward(p, state, x[2:3], training=False, eps=1e-3)
    np.testing.assert_allclose(one[0], logits[2], rtol=1e-12, atol=1e-12)
    train_logits, _, _ = lenet.forward(p, state, x, training=True, eps=1e-3)
    assert not np.allclose(train_logits, logits)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        lenet.forward(lenet.init_params(0), lenet.init_state(), np.zeros((2, 28, 28)), training=True)


def test_sgd_reduces_loss():
    x, y = batch(16, seed=5)
    p, state = lenet.init_params(0), lenet.init_state()
    p0 = {k: v.copy() for k, v in p.items()}
    losses = []
    for _ in range(15):
        loss, grads, state, _ = lenet.loss_and_grads(p, state, x, y)
        new_p = lenet.sgd_step(p, grads, lr=0.5)
        np.testing.assert_allclose(new_p["fc3.bias"], p["fc3.bias"] - 0.5 * grads["fc3.bias"], rtol=0, atol=0)
        p = new_p
        losses.append(loss)
    for k in p0:  # sgd_step returns new arrays; the initial parameters are untouched
        np.testing.assert_array_equal(lenet.init_params(0)[k], p0[k])
    assert losses[0] == pytest.approx(np.log(10), rel=0.2)
    assert losses[-1] < 0.5 * losses[0], losses
