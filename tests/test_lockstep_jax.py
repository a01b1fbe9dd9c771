"""JAX / Flax BN-LeNet (equiv.lenet.jax_net): what is particular to it. The book's JAX tab
pads its convolutions 'SAME' (another network), planted differences named at their layer,
fc1's row permutation (NHWC flatten), the book's per-row statistics in the whole net, and the
scanned epoch. The generic tests (agreement, weight transfer, reproducibility, CLI) live in
the shared lockstep tests."""

import numpy as np
import pytest

pytest.importorskip("flax", reason="install it with: pip install jax flax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402

from equiv.backends import jax as jax_backend  # noqa: E402
from equiv.book import d2l_jax as book  # noqa: E402
from equiv.dtypes import round_to  # noqa: E402
from equiv.lenet import epoch_order, jax_net, lockstep, synthetic  # noqa: E402
from reference import lenet as ref
from tests.lenet_helpers import assert_named_at, patched  # noqa: E402

jax_backend.setup()   # float64 on (jax_enable_x64), as equiv.registry does before it loads JAX code

BATCH = 16


def _with_module(cls):
    """jax_net whose nets use the LeNet subclass ``cls`` (the jitted steps compile for it)."""
    def build(impl, dtype, device):
        net = jax_net.build(impl, dtype, device)
        net.module, net.predict_module = cls(impl, net.dtype, True), cls(impl, net.dtype, False)
        return net
    return patched(jax_net, build=build)


def _book_bnlenet(scratch, training=True, num_classes=10):
    """The chapter's JAX ``BNLeNet`` / ``BNLeNetScratch`` layers, as printed (no padding given)."""
    if scratch:
        bn = [book.BatchNorm(6, num_dims=4, deterministic=not training),
              book.BatchNorm(16, num_dims=4, deterministic=not training),
              book.BatchNorm(120, num_dims=2, deterministic=not training),
              book.BatchNorm(84, num_dims=2, deterministic=not training)]
    else:
        bn = [nn.BatchNorm(not training) for _ in range(4)]
    return nn.Sequential([
        nn.Conv(6, kernel_size=(5, 5)),
        bn[0],
        nn.sigmoid,
        lambda x: nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2)),
        nn.Conv(16, kernel_size=(5, 5)),
        bn[1],
        nn.sigmoid,
        lambda x: nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2)),
        lambda x: x.reshape((x.shape[0], -1)),
        nn.Dense(120),
        bn[2],
        nn.sigmoid,
        nn.Dense(84),
        bn[3],
        nn.sigmoid,
        nn.Dense(num_classes)])


@pytest.mark.parametrize("scratch", [False, True], ids=["BNLeNet", "BNLeNetScratch"])
def test_book_jax_tab_is_another_network(scratch):
    """Finding: flax.linen.Conv pads 'SAME' by default and the book's JAX tab gives no padding,
    so its BN-LeNet keeps 28×28 after conv1 and fc1 has fan-in 16·7·7 = 784, not the other
    tabs' (and the reference's) 16·4·4 = 256. jax_net pads 'VALID'."""
    assert nn.Conv.__dataclass_fields__["padding"].default == "SAME"
    x = jnp.zeros((1, 28, 28, 1))
    # shapes by abstract evaluation of Flax's init (jax.eval_shape: no arithmetic, no compile)
    y, v = jax.eval_shape(lambda x: _book_bnlenet(scratch).init_with_output(jax.random.key(0), x), x)
    p = v["params"]
    assert p["layers_0"]["kernel"].shape == (5, 5, 1, 6)
    assert p["layers_9"]["kernel"].shape == (784, 120)            # the first Dense
    assert y.shape == (1, 10)
    conv1_out, _ = jax.eval_shape(lambda x: nn.Conv(6, kernel_size=(5, 5)).init_with_output(jax.random.key(0), x), x)
    assert conv1_out.shape == (1, 28, 28, 6)
    valid, _ = jax.eval_shape(lambda x: nn.Conv(6, kernel_size=(5, 5), padding="VALID").init_with_output(
        jax.random.key(0), x), x)
    assert valid.shape == (1, 24, 24, 6)
    net = jax_net.build("scratch" if scratch else "builtin", "float32", "cpu")
    assert net.params["fc1"]["kernel"].shape == (256, 120)
    assert net.params["conv1"]["kernel"].shape == (5, 5, 1, 6)


class _PlantedEps(jax_net.LeNet):
    """bn2 with eps 1e-3 instead of Flax's 1e-5."""

    def bn(self, name, channels, ndim):
        if name != "bn2":
            return super().bn(name, channels, ndim)
        return nn.BatchNorm(use_running_average=not self.training, momentum=0.99, epsilon=1e-3,
                            dtype=self.dtype, param_dtype=self.dtype, name=name)


def test_planted_eps_is_named_at_its_layer():
    """bn2's eps 1e-5 -> 1e-3 in the Flax net: step 1, layer bn2 (not conv1, not the output).

    float32: in float64 Flax's conv1 output is bit-identical to the reference's (δ = 0), so
    LEMON's R at bn1 is a rounding difference divided by TINY (6e15) and peaks there, although
    the first divergence is still named bn2."""
    r = lockstep.run(_with_module(_PlantedEps), "builtin", steps=2, dtype="float32", batch=BATCH)
    assert_named_at(r, (1, "act", "bn2"), ratio=100)


def test_planted_weight_scale_is_named_at_its_layer():
    """fc2's kernel scaled by 1 + 1e-4 after loading (builtin, float64): step 1, layer fc2."""
    def load_params(net, params):
        jax_net.load_params(net, params)
        net.params["fc2"]["kernel"] = net.params["fc2"]["kernel"] * (1 + 1e-4)
    r = lockstep.run(patched(jax_net, load_params=load_params), "builtin", steps=2, dtype="float64", batch=BATCH)
    assert_named_at(r, (1, "act", "fc2"))
    assert r["per_step"][0]["rel_error"]["act:fc1"] <= lockstep.tolerance("float64", BATCH)


def test_fc1_rows_are_permuted_for_the_nhwc_flatten():
    """Flattening NHWC orders the features (h, w, c), the reference's NCHW flatten (c, h, w)
    (equiv.lenet.layout, tests/test_lenet_layout.py): with fc1's rows permuted, flat and fc1 agree;
    loading W.T unpermuted makes fc1 the first divergence."""
    r = lockstep.run(jax_net, "builtin", steps=1, dtype="float64", batch=BATCH)
    tol = lockstep.tolerance("float64", BATCH)
    assert r["per_step"][0]["rel_error"]["act:fc1"] <= tol and r["per_step"][0]["rel_error"]["act:flat"] <= tol

    def unpermuted(net, params):
        jax_net.load_params(net, params)
        net.params["fc1"]["kernel"] = jnp.asarray(params["fc1.weight"].T, net.dtype)
    r = lockstep.run(patched(jax_net, load_params=unpermuted), "builtin", steps=1, dtype="float64", batch=BATCH)
    assert_named_at(r, (1, "act", "fc1"))
    assert r["first_divergence"]["rel_error"] > 0.1


def test_book_scratch_net_normalizes_per_row():
    """Finding jax-scratch-4d-reduces-n-w-c in the whole net: jax.scratch first diverges at
    step 1 in bn1 (relative error ≈ 0.81 here), whose output is exactly the per-row
    normalization of conv1's (mean and variance over N, C, W for each row h); after the step
    the moving statistics of bn1 / bn2 are (1, 24, 1, 6) / (1, 8, 1, 16) arrays, which the
    lockstep compares with the reference's (6,) / (16,) as an infinite error."""
    r = lockstep.run(jax_net, "scratch", steps=1, dtype="float64", seed=3, batch=BATCH)
    assert_named_at(r, (1, "act", "bn1"))
    assert 0.5 < r["first_divergence"]["rel_error"] < 1.0       # 0.81: not a rounding difference
    assert r["per_step"][0]["rel_error"]["act:conv1"] <= lockstep.tolerance("float64", BATCH)
    assert r["max_rel_error"]["state:bn1.running_mean"] == float("inf")

    x, y = synthetic(BATCH, 0)
    net = jax_net.build("scratch", "float64", "cpu")
    jax_net.load_params(net, ref.init_params(0))
    assert net.stats["bn1"]["moving_mean"].shape == (1, 1, 1, 6)    # the reference's state, per channel
    _, acts = jax_net.step(net, x, y, 0.1)
    assert net.stats["bn1"]["moving_mean"].shape == (1, 24, 1, 6)
    assert net.stats["bn2"]["moving_var"].shape == (1, 8, 1, 16)
    assert net.stats["bn3"]["moving_mean"].shape == (1, 120)
    state = jax_net.get_state(net)
    assert state["bn1.running_mean"].shape == (144,) and state["bn3.running_mean"].shape == (120,)
    c = acts["conv1"]                                                # NCHW
    mean, var = c.mean(axis=(0, 1, 3), keepdims=True), c.var(axis=(0, 1, 3), keepdims=True)
    np.testing.assert_allclose(acts["bn1"], (c - mean) / np.sqrt(var + 1e-5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", jax_net.IMPLS)
def test_train_epoch_equals_the_step_loop(impl):
    """train_epoch gives the same losses, training predictions, parameters and statistics as
    calling ``step`` per batch, both ways: scan=True (full batches in one lax.scan, jax.scratch's
    first batch a step of its own since its statistics change shape there; the remainder by the
    step; equal to rounding: XLA fuses the loop body differently) and scan=False (the CPU's
    default: step's executable per batch, no host transfer per step; equal bit for bit). 2 epochs
    of 4 full batches and a remainder of 10, float64."""
    n, batch, lr = 74, 16, 0.1
    x, y = synthetic(n, 5)
    x = round_to(x, "float64")
    loop, scanned, stepped = (jax_net.build(impl, "float64", "cpu") for _ in range(3))
    for net in (loop, scanned, stepped):
        jax_net.load_params(net, ref.init_params(5))
    X, Y = jax_net.as_arrays(scanned, x, y)
    for epoch in range(2):
        order = epoch_order(n, 5, epoch)
        losses, correct = [], 0
        for b in range(0, n, batch):
            idx = order[b:b + batch]
            loss, acts = jax_net.step(loop, x[idx], y[idx], lr, capture=False)
            losses.append(loss)
            correct += int((acts["fc3"].argmax(axis=1) == y[idx]).sum())
        for net, scan in ((scanned, True), (stepped, False)):
            got_losses, got_correct = jax_net.train_epoch(net, X, Y, order, lr, batch, scan=scan)
            assert isinstance(got_losses, np.ndarray) and got_losses.shape == (5,)
            if scan:
                np.testing.assert_allclose(got_losses, losses, rtol=1e-13, atol=0)
            else:
                np.testing.assert_array_equal(got_losses, losses)
            assert got_correct == correct
    p_loop, s_loop = jax_net.get_params(loop), jax_net.get_state(loop)
    assert not np.array_equal(p_loop["fc3.weight"], ref.init_params(5)["fc3.weight"])   # it trained
    for net, rtol in ((scanned, 1e-12), (stepped, 0.0)):
        p, s = jax_net.get_params(net), jax_net.get_state(net)
        for k in ref.PARAM_NAMES:
            np.testing.assert_allclose(p[k], p_loop[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)
        for k in s_loop:
            assert s[k].shape == s_loop[k].shape, k
            np.testing.assert_allclose(s[k], s_loop[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)
