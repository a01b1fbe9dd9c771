"""MXNet BN-LeNet (equiv.lenet.mxnet_net) in lockstep with the NumPy reference, planted
differences, the float32 momentum of gluon seen in a whole net, the training loop."""
import json

import numpy as np
import pytest

mx = pytest.importorskip("mxnet", reason="install it with: pip install mxnet==1.9.1 'numpy<1.24'")

from equiv.lenet import CONVENTIONS, lockstep, mxnet_net  # noqa: E402
from reference import lenet as ref  # noqa: E402
from tests.lenet_helpers import assert_named_at, patched  # noqa: E402

STEPS, BATCH = 5, 16
# gluon's momentum 0.9 as the C++ float the operator keeps (equiv.known: gluon-momentum-float32)
GLUON_WEIGHT = 1.0 - float(np.float32(0.9))          # 0.10000002384185791, not 0.1


def _check_agrees(r, dtype):
    assert r["first_divergence"] is None, r["first_divergence"]
    assert r["passed"] and len(r["per_step"]) == STEPS
    tol = lockstep.tolerance(dtype, BATCH)
    assert tol < (1e-12 if dtype == "float64" else 1e-4)
    assert max(r["max_rel_error"].values()) <= tol
    # every quantity was compared: 16 activations, the loss, 18 parameters, 8 running stats
    assert len(r["max_rel_error"]) == len(ref.ACTIVATIONS) + 1 + len(ref.PARAM_NAMES) + 8
    json.dumps(r, allow_nan=False)                       # JSON-able, no NaN/inf


def test_gluon_float64_running_stats_are_float32_accurate():
    """Finding gluon-momentum-float32 in the net: in float64 everything agrees except the running
    statistics, first named at step 1 in bn1.running_mean, whose error is exactly the error of the
    new-batch weight (the running mean starts at 0, so it is weight·mean)."""
    r = lockstep.run(mxnet_net, "builtin", steps=STEPS, dtype="float64", seed=3, batch=BATCH)
    assert_named_at(r, (1, "state", "bn1.running_mean"))
    assert r["first_divergence"]["rel_error"] == pytest.approx(abs(GLUON_WEIGHT - 0.1) / 0.1, rel=1e-6)   # 2.38e-7
    tol = lockstep.tolerance("float64", BATCH)
    assert all(v <= tol for k, v in r["max_rel_error"].items() if not k.startswith("state:"))


def test_gluon_float64_agrees_with_its_float32_momentum():
    """The same run against the reference given gluon's actual weight 1 − fl32(0.9): every
    quantity, running statistics included, is within the float64 tolerance, so the float32
    momentum is the whole difference."""
    conv = dict(CONVENTIONS["mxnet.gluon"], new_batch_weight=GLUON_WEIGHT)
    r = lockstep.run(mxnet_net, "builtin", steps=STEPS, dtype="float64", seed=3, batch=BATCH, conventions=conv)
    _check_agrees(r, "float64")


def test_planted_eps_is_named_at_its_layer():
    """bn2's eps 1e-5 -> 1e-3 in the gluon net: step 1, layer bn2 (not conv1, not the output)."""
    def build(impl, dtype, device):
        net = mxnet_net.build(impl, dtype, device)
        net.bn2._kwargs["eps"] = 1e-3
        return net
    r = lockstep.run(patched(mxnet_net, build=build), "builtin", steps=2, dtype="float32", batch=BATCH)
    assert_named_at(r, (1, "act", "bn2"), ratio=10)


def test_planted_weight_scale_is_named_at_its_layer():
    """fc2.weight scaled by 1 + 1e-4 after loading (scratch, float64): step 1, layer fc2."""
    def load_params(net, params):
        mxnet_net.load_params(net, params)
        net.fc2.weight.set_data(net.fc2.weight.data() * (1 + 1e-4))
    r = lockstep.run(patched(mxnet_net, load_params=load_params), "scratch", steps=2, dtype="float64", batch=BATCH)
    assert_named_at(r, (1, "act", "fc2"))


def test_wrong_running_var_convention_is_named_in_the_state():
    """mxnet.scratch (biased running var) checked against an unbiased convention: the
    activations and parameters agree; bn1's running variance differs at step 1."""
    conv = dict(CONVENTIONS["mxnet.scratch"], unbiased=True)
    r = lockstep.run(mxnet_net, "scratch", steps=2, dtype="float64", batch=BATCH, conventions=conv)
    assert_named_at(r, (1, "state", "bn1.running_var"))
    tol = lockstep.tolerance("float64", BATCH)
    assert all(v <= tol for k, v in r["max_rel_error"].items() if not k.startswith("state:"))


def test_gluon_layouts_are_pytorch_layouts():
    """Conv2D weights (out, in, kh, kw) and Dense weights (out, in): the reference's shapes."""
    net = mxnet_net.build("builtin", "float32", "cpu")
    for name, shape in ref.LAYERS.items():
        assert getattr(net, name).weight.shape == shape, name


def test_trainer_sgd_rounds_the_learning_rate_to_float32():
    """Why mxnet_net writes its SGD step by hand: gluon.Trainer('sgd') (the book's) updates a
    float64 weight with lr as a C++ float, w − fl32(0.1)·g, not w − 0.1·g."""
    from mxnet import autograd, gluon
    from mxnet import np as mnp
    p = gluon.Parameter("w", shape=(1,))
    p.initialize()
    p.cast("float64")
    p.set_data(mnp.array([1.0], dtype="float64"))
    trainer = gluon.Trainer([p], "sgd", {"learning_rate": 0.1})
    with autograd.record():
        loss = p.data().sum()                 # gradient 1
    loss.backward()
    trainer.step(1)
    assert float(p.data().item()) == 1.0 - float(np.float32(0.1)) != 1.0 - 0.1


def test_gluon_float32_sums_a_channel_sequentially():
    """Gluon's CPU kernel adds a channel's values one by one in a float32 accumulator
    (BatchNormBackwardImpl: sumGradOut += *gradOut_data, AccReal = float for float32), so its
    sums lose what a pairwise or float64 sum keeps: dbeta of dy = [1e8, 1 ×1000, −1e8] is 0,
    not 1000. On Fashion-MNIST (bn1: 128·24·24 values a channel) this takes gluon's float32
    lockstep past the tolerance (the bound assumes no sqrt(m)·u32 term)."""
    from mxnet import autograd
    from mxnet import np as mnp
    from mxnet.gluon import nn
    dy = np.array([1e8] + [1.0] * 1000 + [-1e8]).reshape(-1, 1)
    assert float(np.sum(dy.astype(np.float32), dtype=np.float64)) == 1000.0
    layer = nn.BatchNorm(in_channels=1)
    layer.initialize()
    x = mnp.array(np.arange(dy.size, dtype=np.float64).reshape(-1, 1), dtype="float32")
    with autograd.record():
        out = layer(x)
    out.backward(mnp.array(dy, dtype="float32"))
    assert float(layer.beta.grad().item()) == 0.0
