"""Equinox BN-LeNet (equiv.lenet.equinox_net): what is particular to it. mode="ema" normalizes a
training batch with mixed statistics (NET_FINDINGS equinox-ema-normalizes-with-moving-averages),
measured at bn1; a fresh "ema" layer's first step; a planted difference named at its layer. The
generic tests (agreement, weight transfer, evaluate, the CLI) live in tests/test_lenet_nets.py."""
import numpy as np
import pytest

pytest.importorskip("equinox", reason="install it with: pip install jax equinox")

import jax  # noqa: E402

from equiv.lenet import equinox_net, lockstep, synthetic  # noqa: E402
from reference import lenet as ref  # noqa: E402
from tests.lenet_helpers import assert_named_at, patched  # noqa: E402

BATCH = 16


def test_ema_normalizes_bn1_with_the_mixed_statistics():
    """Finding equinox-ema-normalizes-with-moving-averages at its layer: in a training step bn1's
    output is conv1's normalized with 0.01·batch + 0.99·running (running = the reference's (0, 1)),
    to 1e-12, and those mixed statistics are the new running statistics; mode="batch" normalizes
    with the batch's."""
    x, y = synthetic(BATCH, 3)
    params = ref.init_params(3)
    out = {}
    for mode in ("ema", "batch"):
        net = equinox_net.build(mode, "float64", "cpu")
        equinox_net.load_params(net, params)
        _, acts = equinox_net.step(net, x, y, 0.1)
        out[mode] = acts, equinox_net.get_state(net)
    c = out["ema"][0]["conv1"]
    mean, var = c.mean(axis=(0, 2, 3)), c.var(axis=(0, 2, 3))
    g, b = params["bn1.gamma"][None, :, None, None], params["bn1.beta"][None, :, None, None]

    def bn(m, v):
        return g * (c - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 1e-5) + b
    mixed_mean, mixed_var = 0.01 * mean, 0.01 * var + 0.99
    np.testing.assert_allclose(out["ema"][0]["bn1"], bn(mixed_mean, mixed_var), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["ema"][1]["bn1.running_mean"], mixed_mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["ema"][1]["bn1.running_var"], mixed_var, rtol=1e-12)
    np.testing.assert_allclose(out["batch"][0]["bn1"], bn(mean, var), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out["batch"][0]["conv1"], c)                      # the same input to bn1
    assert np.abs(out["ema"][0]["bn1"] - out["batch"][0]["bn1"]).max() > 0.5


def test_a_fresh_ema_layer_starts_with_the_batch_statistics():
    """A freshly built "ema" layer (ema_first_time_index True, _batch_norm.py:238-239) normalizes
    its first training batch with the batch's statistics and stores them as the running ones:
    step 1's activations agree with the reference, its running statistics do not (the batch's
    mean instead of 0.01 of it: bn1.running_mean off by 99 relative, measured); step 2 then
    diverges in bn1 as the loaded net does at step 1."""
    def build(impl, dtype, device):
        net = equinox_net.build(impl, dtype, device)
        for name in ref.BN_LAYERS:
            net.state = net.state.set(getattr(net.model, name).ema_first_time_index, jax.numpy.asarray(True))
        return net
    r = lockstep.run(patched(equinox_net, build=build), "ema", steps=2, dtype="float64", seed=3, batch=BATCH)
    assert_named_at(r, (1, "state", "bn1.running_mean"))
    first = r["per_step"][0]["rel_error"]
    assert max(v for k, v in first.items() if k.startswith(("act:", "param:")) or k == "loss") <= r["tolerance"]
    assert 98.9 < first["state:bn1.running_mean"] < 99.1
    second = r["per_step"][1]
    act_over = [k for k in ref.ACTIVATIONS if second["rel_error"][f"act:{k}"] > second["tolerance"]]
    assert act_over[0] == "bn1"


def test_planted_weight_scale_is_named_at_its_layer():
    """fc2's weight scaled by 1 + 1e-4 after loading (batch, float64): step 1, layer fc2."""
    def load_params(net, params):
        equinox_net.load_params(net, params)
        net.model = equinox_net.eqx.tree_at(lambda m: m.fc2.weight, net.model, net.model.fc2.weight * (1 + 1e-4))
    r = lockstep.run(patched(equinox_net, load_params=load_params), "batch", steps=1, dtype="float64", seed=3,
                     batch=BATCH)
    assert_named_at(r, (1, "act", "fc2"))
    assert r["per_step"][0]["rel_error"]["act:fc1"] <= lockstep.tolerance("float64", BATCH)


def test_inference_reads_the_loaded_statistics():
    """The reference's (0, 1) are loaded as a trained checkpoint is: counter 2^62, so inference
    reads hidden/(1 − 0.99^counter) = the values, and after a step their moving average."""
    net = equinox_net.build("batch", "float64", "cpu")
    state = equinox_net.get_state(net)
    for k, v in ref.init_state().items():
        np.testing.assert_array_equal(state[k], v, err_msg=k)
    assert int(net.state.get(net.model.bn1.batch_counter)) == equinox_net.COUNTER
