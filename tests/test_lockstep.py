"""BN-LeNet lockstep against the NumPy reference, planted differences, the training loop."""
import argparse
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="install it with: pip install torch==2.13.0")

from equiv.cli import lenet as cli_glue  # noqa: E402
from equiv.data import write_idx  # noqa: E402
from equiv.lenet import CONVENTIONS, lockstep, torch_net, train  # noqa: E402
from tests.lenet_helpers import assert_named_at, patched  # noqa: E402

STEPS, BATCH = 5, 16


def test_planted_eps_is_named_at_its_layer():
    """bn2's eps 1e-5 -> 1e-3 in the torch net: step 1, layer bn2 (not conv1, not the output)."""
    def build(impl, dtype, device):
        net = torch_net.build(impl, dtype, device)
        net.bn2.eps = 1e-3
        return net
    r = lockstep.run(patched(torch_net, build=build), "builtin", steps=2, dtype="float64", batch=BATCH)
    assert_named_at(r, (1, "act", "bn2"), ratio=1e3)


def test_planted_weight_scale_is_named_at_its_layer():
    """fc2.weight scaled by 1 + 1e-4 after loading (scratch, float32): step 1, layer fc2."""
    def load_params(net, params):
        torch_net.load_params(net, params)
        with torch.no_grad():
            net.fc2.weight.mul_(1 + 1e-4)
    r = lockstep.run(patched(torch_net, load_params=load_params), "scratch", steps=2, dtype="float32", batch=BATCH)
    assert_named_at(r, (1, "act", "fc2"))


def test_wrong_running_var_convention_is_named_in_the_state():
    """torch.scratch (biased running var) checked against torch's unbiased convention: the
    activations and parameters agree; bn1's running variance differs at step 1."""
    r = lockstep.run(torch_net, "scratch", steps=2, dtype="float64", batch=BATCH,
                     conventions=CONVENTIONS["torch.builtin"])
    assert_named_at(r, (1, "state", "bn1.running_var"))
    tol = lockstep.tolerance("float64", BATCH)
    assert all(v <= tol for k, v in r["max_rel_error"].items() if not k.startswith("state:"))


def _tiny_idx(folder, n_train=256, n_test=64):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{name}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=False)
        write_idx(folder / f"{name}-labels-idx1-ubyte", rng.integers(0, 10, n), gz=False)
    return folder


def test_training_writes_json_and_plot(tmp_path):
    from equiv.data import read_idx
    d = _tiny_idx(tmp_path / "data")
    data = {k: read_idx(d / f) for k, f in (("train_x", "train-images-idx3-ubyte"),
                                             ("train_y", "train-labels-idx1-ubyte"),
                                             ("test_x", "t10k-images-idx3-ubyte"),
                                             ("test_y", "t10k-labels-idx1-ubyte"))}
    run = train.train(torch_net, "builtin", data, epochs=1, lr=0.1, batch=64, seed=0, progress=False)
    path = train.write_run(run, tmp_path / "runs")
    saved = json.loads(path.read_text())
    for key in ("label", "framework", "version", "impl", "device", "seed", "lr", "command", "history"):
        assert key in saved, key
    assert saved["label"] == "torch.builtin" and saved["lr"] == 0.1 and saved["seed"] == 0
    (h,) = saved["history"]
    assert set(h) == {"epoch", "train_loss", "train_acc", "test_acc", "seconds"}
    assert h["epoch"] == 1 and np.isfinite(h["train_loss"]) and 0 <= h["test_acc"] <= 1
    assert 0 <= h["train_acc"] <= 1 and h["seconds"] > 0
    # same seed, same shuffling and weights: the run is reproducible
    again = train.train(torch_net, "builtin", data, epochs=1, lr=0.1, batch=64, seed=0, progress=False)
    assert again["history"][0]["train_loss"] == h["train_loss"]


def test_training_progress_moves_per_batch(tmp_path, monkeypatch):
    """The bar advances once per batch, also through torch's whole-epoch path on the CPU."""
    from equiv.data import read_idx
    d = _tiny_idx(tmp_path / "data")
    data = {k: read_idx(d / f) for k, f in (("train_x", "train-images-idx3-ubyte"),
                                             ("train_y", "train-labels-idx1-ubyte"),
                                             ("test_x", "t10k-images-idx3-ubyte"),
                                             ("test_y", "t10k-labels-idx1-ubyte"))}
    updates = []

    class Bar:
        n = 0

        def update(self, k=1):
            updates.append(k)
            self.n += k

        def set_description(self, *a, **k):
            pass

        set_postfix = set_description

        def close(self):
            pass
    monkeypatch.setattr(train, "progress_bar", lambda total, desc, enabled=True: Bar())
    train.train(torch_net, "builtin", data, epochs=2, lr=0.1, batch=16, seed=0)
    steps = -(-len(data["train_y"]) // 16)
    assert hasattr(torch_net, "train_epoch") and steps > 1
    assert sum(updates) == 2 * steps and len(updates) >= 2 * steps        # one per batch


def test_plot_overlays_the_runs_of_a_folder(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs: pip install matplotlib")
    for label, acc in (("torch.builtin", 0.8), ("torch.scratch", 0.7)):
        hist = [dict(epoch=e, train_loss=1.0 / e, train_acc=acc, test_acc=acc, seconds=1.0) for e in (1, 2)]
        train.write_run(dict(label=label, lr=0.1, seed=0, device="cpu", history=hist), tmp_path)
    png = train.plot_runs(tmp_path)
    assert png == tmp_path / "runs.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        train.plot_runs(tmp_path)


def test_cli_glue_errors_are_value_errors(tmp_path):
    p = cli_glue.add_lockstep_args(argparse.ArgumentParser())
    with pytest.raises(ValueError, match="unknown BN-LeNet implementation"):
        cli_glue.lockstep_main(p.parse_args(["--impls", "torch.nope", "--steps", "1"]))
    with pytest.raises(SystemExit):                        # the argument type names the option
        p.parse_args(["--steps", "0"])
    args = p.parse_args([])
    args.steps = 0                                         # bypassing argparse: still checked
    with pytest.raises(ValueError, match="--steps must be a finite positive number"):
        cli_glue.lockstep_main(args)
    t = cli_glue.add_train_args(argparse.ArgumentParser())
    with pytest.raises(ValueError, match="does not hold all of"):
        cli_glue.train_main(t.parse_args(["--data-dir", str(tmp_path), "--epochs", "1"]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available to torch"):
            cli_glue.train_main(t.parse_args(["--device", "cuda", "--epochs", "1"]))


def test_cli_train_writes_to_its_folder_and_never_loses_epochs(tmp_path, monkeypatch, capsys):
    """`equiv train`: the run and the plot go to --out; a run with fewer epochs than the file
    there is refused before training, leaving the file as it was; a loss that stops being
    finite is one line and exit 1, nothing written."""
    import equiv.data
    from equiv import io
    from equiv.data import read_idx
    d = _tiny_idx(tmp_path / "data")
    data = {k: read_idx(d / f) for k, f in (("train_x", "train-images-idx3-ubyte"),
                                             ("train_y", "train-labels-idx1-ubyte"),
                                             ("test_x", "t10k-images-idx3-ubyte"),
                                             ("test_y", "t10k-labels-idx1-ubyte"))}
    monkeypatch.setattr(equiv.data, "load_fashion_mnist", lambda *a, **k: data)
    p = cli_glue.add_train_args(argparse.ArgumentParser())
    out = tmp_path / "runs"
    args = ["--epochs", "2", "--batch", "64", "--out", str(out), "--quiet"]
    assert cli_glue.train_main(p.parse_args(args)) == 0
    (path,) = out.glob("*.json")
    assert len(json.loads(path.read_text())["history"]) == 2
    before = path.read_bytes()
    with pytest.raises(io.WouldLoseData, match="epochs 2-2"):
        cli_glue.train_main(p.parse_args(["--epochs", "1", "--batch", "64", "--out", str(out), "--quiet"]))
    assert path.read_bytes() == before

    def nan_step(net, x, y, lr, capture=True):
        return float("nan"), {}
    monkeypatch.setattr(torch_net, "train_epoch", None, raising=False)
    monkeypatch.delattr(torch_net, "train_epoch")
    monkeypatch.setattr(torch_net, "step", nan_step)
    assert cli_glue.train_main(p.parse_args(["--epochs", "1", "--out", str(tmp_path / "nan"), "--quiet"])) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "became nan at step 1 of epoch 1" in err and not (tmp_path / "nan").exists()
