"""PaddlePaddle BN-LeNet (equiv.lenet.paddle_net) in lockstep with the NumPy reference: the float32
eps and momentum of Paddle's kernels seen in a whole net, the Linear layout, a planted eps."""
import json

import numpy as np
import pytest

paddle = pytest.importorskip("paddle", reason="install it with: pip install paddlepaddle==3.3.1")

from equiv.lenet import CONVENTIONS, lockstep, paddle_net  # noqa: E402
from reference import lenet as ref  # noqa: E402
from tests.lenet_helpers import assert_named_at, patched  # noqa: E402

STEPS, BATCH = 5, 16
# the C++ floats the kernels keep (equiv.known: paddle-eps-float32, paddle-momentum-float32)
PADDLE_EPS = float(np.float32(1e-5))
PADDLE_WEIGHT = 1.0 - float(np.float32(0.9))         # 0.10000002384185791


def test_float64_agrees_with_its_float32_eps_and_momentum():
    """Against a reference given Paddle's float32(eps) and 1 − float32(0.9) every quantity of the
    float64 net, running statistics included, is within the float64 tolerance: the two C++ floats
    are the whole difference (equiv.known.NET_FINDINGS: paddle-float32-eps-momentum)."""
    conv = dict(CONVENTIONS["paddle.builtin"], eps=PADDLE_EPS, new_batch_weight=PADDLE_WEIGHT)
    r = lockstep.run(paddle_net, "builtin", steps=STEPS, dtype="float64", seed=3, batch=BATCH, conventions=conv)
    assert r["first_divergence"] is None, r["first_divergence"]
    assert max(r["max_rel_error"].values()) <= lockstep.tolerance("float64", BATCH)
    json.dumps(r, allow_nan=False)


def test_float64_momentum_alone_is_named_in_the_running_mean():
    """With float32(eps) given and the exact weight 0.1, what is left is the momentum: named at step 1
    in bn1.running_mean, off by exactly the weight's relative error."""
    conv = dict(CONVENTIONS["paddle.builtin"], eps=PADDLE_EPS)
    r = lockstep.run(paddle_net, "builtin", steps=2, dtype="float64", seed=3, batch=BATCH, conventions=conv)
    assert_named_at(r, (1, "state", "bn1.running_mean"))
    assert r["first_divergence"]["rel_error"] == pytest.approx(abs(PADDLE_WEIGHT - 0.1) / 0.1, rel=1e-6)


def test_planted_eps_is_named_at_its_layer():
    """bn2's eps 1e-5 -> 1e-3 in the float32 net: step 1, layer bn2."""
    def build(impl, dtype, device):
        net = paddle_net.build(impl, dtype, device)
        net.bn2._epsilon = 1e-3
        return net
    r = lockstep.run(patched(paddle_net, build=build), "builtin", steps=2, dtype="float32", batch=BATCH)
    assert_named_at(r, (1, "act", "bn2"), ratio=10)


def test_linear_weights_are_transposed():
    """paddle.nn.Linear keeps (in, out) and computes x W + b: the reference's (out, in) transposed;
    Conv2D keeps the reference's (out, in, kh, kw)."""
    net = paddle_net.build("builtin", "float32", "cpu")
    for name, shape in ref.LAYERS.items():
        got = tuple(getattr(net, name).weight.shape)
        assert got == (shape[::-1] if name.startswith("fc") else shape), name
