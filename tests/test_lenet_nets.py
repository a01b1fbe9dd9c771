"""Every BN-LeNet implementation (equiv.lenet, one module per framework) against the NumPy
reference: lockstep agreement or the documented divergence (equiv.NET_FINDINGS) at
exactly its step and layer, exact weight transfer, reproducible training, the whole-epoch
fast path equal to the step loop, the command line.

Implementations whose framework is missing are skipped with the install command; on real
Fashion-MNIST the tests skip when the data is not installed (CI installs it).
"""
import argparse
import importlib
import json
import os
import statistics
import types

import numpy as np
import pytest

from equiv import lenet, registry
from equiv.cli import lenet as cli_glue
from equiv.conventions import DECLARED
from equiv.dtypes import round_to
from equiv.known import NET_FINDINGS, NetFinding, net_findings, shows
from equiv.lenet import lockstep, synthetic, train
from reference import lenet as ref
from tests.lenet_helpers import assert_lockstep  # noqa: E402

STEPS, BATCH = 5, 16            # synthetic lockstep (seed 3)
REAL_STEPS = 10                 # Fashion-MNIST lockstep, the book's batch 128
# implementations whose 10-step Fashion-MNIST lockstep CI leaves out (time); they agree there, or
# diverge exactly where documented, as measured without CI
CI_SYNTHETIC_ONLY = ("equinox.batch", "equinox.ema")
QUANTITIES = len(ref.ACTIVATIONS) + 1 + len(ref.PARAM_NAMES) + 2 * len(ref.BN_LAYERS)


def _module(label):
    try:
        return registry.load_lenet(label)
    except ValueError as e:
        if "not installed" in str(e):
            pytest.skip(str(e))
        raise


@pytest.fixture(params=registry.lenet_labels())
def impl(request):
    """(label, module, variant) of each BN-LeNet implementation."""
    return (request.param, *_module(request.param))


@pytest.fixture
def device(request, impl):
    """--device / EQUIV_DEVICE (default cpu); skipped where the framework has no such device."""
    d = request.config.getoption("bn_equiv_device") or os.environ.get("EQUIV_DEVICE") or "cpu"
    if d.split(":")[0] not in impl[1].devices():
        pytest.skip(f"{impl[0]}: no {d} device here (available: {', '.join(impl[1].devices())})")
    return d


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lockstep_synthetic(impl, dtype, device):
    label, mod, variant = impl
    r = lockstep.run(mod, variant, steps=STEPS, dtype=dtype, seed=3, batch=BATCH, device=device)
    assert r["data"] == "synthetic"
    assert_lockstep(r, label, dtype, "synthetic", QUANTITIES)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lockstep_fashion_mnist(impl, dtype, device, fashion_mnist):
    label, mod, variant = impl
    if os.environ.get("CI") and label in CI_SYNTHETIC_ONLY:
        pytest.skip(f"{label}: CI runs its lockstep on synthetic data only (90 s for both Equinox modes "
                    "on 2 cores); without CI set it runs here")
    r = lockstep.run(mod, variant, steps=REAL_STEPS, dtype=dtype, seed=0, batch=128, device=device,
                     dataset=fashion_mnist)
    assert_lockstep(r, label, dtype, "fashion-mnist", QUANTITIES)


def test_book_variants_use_the_books_hard_coded_setting(impl):
    """The reference runs a scratch net with its CONVENTIONS entry (from equiv.conventions): that is
    the eps and momentum the book's layer hard-codes (BOOK_EPS, BOOK_MOMENTUM of its adapter)."""
    label, _, variant = impl
    if variant != "scratch":
        pytest.skip("the built-in layers are built from CONVENTIONS")
    adapter = lenet.ADAPTER[label]
    book = importlib.import_module(registry.load(adapter).__module__)
    c = lenet.CONVENTIONS[label]
    assert (c["eps"], c["new_batch_weight"]) == (book.BOOK_EPS, DECLARED[adapter].new_batch_weight(book.BOOK_MOMENTUM))


@pytest.mark.parametrize("old, new", lenet.OLD_LABELS.items())
def test_an_old_label_loads_the_same_net(old, new):
    assert _module(old) == _module(new)


def test_every_finding_names_a_known_implementation():
    for f in NET_FINDINGS:
        assert f.label in registry.lenet_labels() + list(lenet.PARALLEL) and f.data in ("any", "fashion-mnist"), f.id
        assert set(f.dtypes) <= {"float64", "float32"} and f.where[1] in ("act", "loss", "param", "state")
        keys = ([f"act:{n}" for n in ref.ACTIVATIONS] + ["loss"] + [f"param:{n}" for n in ref.PARAM_NAMES]
                + [f"state:{n}" for n in ref.init_state()])
        assert set(f.edge) <= set(keys) - {f"{f.where[1]}:{f.where[2]}"}, f.id


def test_a_quantity_at_the_tolerance_may_come_first_only_beside_the_documented_one():
    finding = NetFinding(id="x", implementations=("tf.keras",), dtypes=("float32",), data="any",
                         where=(1, "param", "bn1.beta"), reason="", edge=("param:bn3.beta",))
    tol = 1e-4

    def result(step, layer, errs):
        return dict(first_divergence=dict(step=step, kind="param", layer=layer, rel_error=2 * tol, tolerance=tol),
                    per_step=[dict(rel_error=errs)] * 2)
    assert shows(finding, result(1, "bn1.beta", {"param:bn1.beta": 2 * tol}))
    assert shows(finding, result(1, "bn3.beta", {"param:bn1.beta": 2 * tol, "param:bn3.beta": 1.01 * tol}))
    assert not shows(finding, result(1, "bn3.beta", {"param:bn1.beta": tol, "param:bn3.beta": 1.01 * tol}))
    assert not shows(finding, result(1, "bn2.beta", {"param:bn1.beta": 2 * tol, "param:bn2.beta": 2 * tol}))
    assert not shows(finding, result(2, "bn1.beta", {"param:bn1.beta": 2 * tol}))
    assert not shows(finding, dict(first_divergence=None, per_step=[]))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_weight_transfer_is_exact(impl, dtype):
    _, mod, variant = impl
    params = ref.init_params(7)
    net = mod.build(variant, dtype, "cpu")
    mod.load_params(net, params)
    got = mod.get_params(net)
    assert list(got) == list(ref.PARAM_NAMES)
    for k, v in params.items():
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], round_to(v, dtype), err_msg=k)
    state = mod.get_state(net)
    assert list(state) == list(ref.init_state())
    for k, v in ref.init_state().items():
        np.testing.assert_array_equal(state[k], v, err_msg=k)


def test_evaluate_uses_the_running_statistics(impl):
    """Inference mode: after two training steps, evaluate's loss and accuracy are the reference's
    inference forward from its running statistics (float64), not the training-mode loss."""
    label, mod, variant = impl
    known = net_findings(label, "float64", "synthetic")
    if known:
        pytest.skip(f"{label}: its running statistics differ from the reference's ({known[0].id})")
    x, y = synthetic(48, 1)
    conv = lenet.CONVENTIONS[label]
    params, state = ref.init_params(1), ref.init_state()
    net = mod.build(variant, "float64", "cpu")
    mod.load_params(net, params)
    for i in (0, 16):
        mod.step(net, x[i:i + 16], y[i:i + 16], 0.1, capture=False)
        _, grads, state, _ = ref.loss_and_grads(params, state, x[i:i + 16], y[i:i + 16], **conv)
        params = ref.sgd_step(params, grads, 0.1)
    loss, acc = mod.evaluate(net, x, y, batch=20)
    logits, _, _ = ref.forward(params, state, x, training=False, **conv)
    loss_r, _ = ref.cross_entropy(logits, y)
    assert loss == pytest.approx(loss_r, rel=1e-12)
    assert acc == np.mean(logits.argmax(axis=1) == y)
    train_logits, _, _ = ref.forward(params, state, x, training=True, **conv)
    assert abs(ref.cross_entropy(train_logits, y)[0] - loss_r) > 1e-3


def test_build_rejects_bad_arguments(impl):
    _, mod, variant = impl
    with pytest.raises(ValueError, match="variant"):
        mod.build("nope", "float32", "cpu")
    with pytest.raises(ValueError, match="dtype"):
        mod.build(variant, "float16", "cpu")


def _data(n=96, seed=0):
    x, y = synthetic(n, seed)
    return dict(train_x=x, train_y=y, test_x=x[:32], test_y=y[:32])


def test_training_runs_and_is_reproducible(impl):
    label, mod, variant = impl
    data = _data()
    a, b = (train.train(mod, variant, data, epochs=1, lr=0.1, batch=32, seed=0, progress=False)
            for _ in range(2))
    assert a["label"] == label and a["framework"] == mod.FRAMEWORK
    (h,) = a["history"]
    assert np.isfinite(h["train_loss"]) and 0 <= h["train_acc"] <= 1 and 0 <= h["test_acc"] <= 1
    assert b["history"][0]["train_loss"] == h["train_loss"]     # same seed: the same run


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_whole_epoch_path_equals_the_step_loop(impl, dtype, device):
    """``train_epoch`` (a module's fast path) gives the step loop's losses, accuracy and weights:
    to the last bit in float64 on the CPU, and within the lockstep tolerance in float32 or on a
    GPU (a compiled epoch may fuse differently; GPU kernels may sum in another order)."""
    _, mod, variant = impl
    if not hasattr(mod, "train_epoch"):
        pytest.skip(f"{mod.FRAMEWORK} has no whole-epoch path (equiv.lenet.train uses the step loop)")
    data = _data(80, 1)                       # 80 = 2 full batches of 32 and a remainder of 16
    slow_mod = types.SimpleNamespace(**{k: v for k, v in vars(mod).items() if k != "train_epoch"})
    runs = {}
    for name, m in (("fast", mod), ("loop", slow_mod)):
        run = train.train(m, variant, data, epochs=2, lr=0.1, batch=32, seed=0, dtype=dtype, device=device,
                          progress=False)
        runs[name] = run["history"]
    tol = 0.0 if (dtype, device) == ("float64", "cpu") else lockstep.tolerance(dtype, 32)
    for f, s in zip(runs["fast"], runs["loop"]):
        assert f["train_acc"] == s["train_acc"] and f["test_acc"] == s["test_acc"]
        assert abs(f["train_loss"] - s["train_loss"]) <= tol * abs(s["train_loss"]) + 1e-300


def test_cli_lockstep_prints_and_writes(impl, tmp_path, capsys):
    label, _, _ = impl
    p = cli_glue.add_lockstep_args(argparse.ArgumentParser())
    out = tmp_path / "ls.json"
    code = cli_glue.lockstep_main(p.parse_args(["--impls", label, "--steps", "2", "--batch", "8",
                                                "--dtype", "float32", "--out", str(out)]))
    (res,) = json.loads(out.read_text())
    assert res["label"] == label and res["data"] == "synthetic" and res["batch"] == 8
    printed = capsys.readouterr().out
    assert label in printed
    known = net_findings(label, "float32", "synthetic")
    assert code == (1 if known else 0) and res["passed"] is (not known)
    for f in known:
        assert f.id in printed                 # a documented divergence is named as such


def test_bench_times_every_implementation(impl, device):
    """`equiv bench`'s measurement on a small synthetic set: steady state = the median after
    the first epoch, a record per implementation."""
    from equiv.lenet import bench
    label, mod, _ = impl
    data = bench.synthetic_data(96, 32)
    r = bench.bench_one(label, data, epochs=3, device=device, batch=32)
    assert r["label"] == label and r["epochs"] == 3 and len(r["epoch_seconds"]) == 3
    assert r["seconds_per_epoch"] == statistics.median(r["epoch_seconds"][1:])
    assert r["wall_seconds"] >= sum(r["epoch_seconds"]) and r["fast_path"] == hasattr(mod, "train_epoch")
