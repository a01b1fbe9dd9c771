"""Train BN-LeNet on Fashion-MNIST the book's way, with any implementation module.

The book's setting (Dive into Deep Learning, "Batch Normalization"): batch 128, lr 0.1
(its TensorFlow tab uses 0.5), 10 epochs, plain SGD, mean cross-entropy. Every framework
starts from the same weights (``reference.lenet.init_params(seed)``) and sees the same
shuffled order (``equiv.lenet.epoch_order(n, seed, epoch)``; the last batch of an epoch
is the remainder, as the book's DataLoader gives it).

A module may offer ``train_epoch(net, X, Y, order, lr, batch) -> (per-step mean losses,
correct training predictions)``, a whole epoch in one call (JAX: one ``lax.scan``; torch on
CUDA: a captured CUDA graph replayed per step); it must give what the ``step`` loop gives,
and ``train`` then uses it.

Per epoch: mean training loss and training accuracy over the epoch's steps (training mode,
as the weights move), test accuracy in inference mode, and the seconds the epoch's
training took. ``write_run`` stores them as JSON (read by ``equiv.report``); ``plot_runs``
overlays every run of a folder in one PNG.
"""
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from equiv.lenet import epoch_order, label_of, scale_images
from reference.lenet import init_params


def progress_bar(total, desc, enabled=True, unit="step"):
    """A tqdm bar on stderr (rate and time left); refreshed at most every 0.5 s on a terminal,
    every 10 s into a file or pipe (a log gets a few lines, not thousands)."""
    from tqdm import tqdm
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, leave=False,
                mininterval=0.5 if tty else 10.0, dynamic_ncols=True)


def train(impl_module, impl, data, *, epochs=10, lr=0.1, batch=128, seed=0, dtype="float32",
          device="cpu", progress=True):
    """Train and return the run record (JSON-able; see ``write_run``).

    ``data``: dict(train_x, train_y, test_x, test_y) as ``equiv.data.load_fashion_mnist``
    returns it (uint8 images (N, 28, 28), or float images in [0, 1]). ``progress``: a bar per
    batch on stderr (False: none). A loss that stops being finite ends the run at once
    (``FloatingPointError`` naming the step).
    """
    net = impl_module.build(impl, dtype, device)
    impl_module.load_params(net, init_params(seed))
    # The whole set goes to the device once; batches are taken from it there.
    X, Y = impl_module.as_arrays(net, scale_images(data["train_x"], dtype), data["train_y"])
    Xt, Yt = impl_module.as_arrays(net, scale_images(data["test_x"], dtype), data["test_y"])
    y_host = np.asarray(data["train_y"], dtype=np.int64)
    n = len(y_host)
    steps = math.ceil(n / batch)
    label = label_of(impl_module, impl)
    fast = getattr(impl_module, "train_epoch", None)
    history = []
    bar = progress_bar(epochs * steps, label, progress)
    try:
        for epoch in range(epochs):
            order = epoch_order(n, seed, epoch)
            bar.set_description(f"{label} epoch {epoch + 1}/{epochs}", refresh=False)
            t0 = time.perf_counter()
            if fast is not None:           # the module's whole-epoch path (lax.scan, a CUDA graph)
                done = bar.n
                losses, correct = fast(net, X, Y, order, lr, batch, on_step=bar.update)
                bar.update(done + steps - bar.n)
                sizes = np.minimum(batch, n - batch * np.arange(steps))
                loss_sum = float(np.dot(np.asarray(losses, dtype=np.float64), sizes))
                if not math.isfinite(loss_sum):
                    bad = int(np.argmax(~np.isfinite(np.asarray(losses, dtype=np.float64))))
                    raise FloatingPointError(f"{label}: the training loss became {losses[bad]} at step {bad + 1} "
                                             f"of epoch {epoch + 1} (lr {lr:g} too large?)")
            else:
                loss_sum, correct = 0.0, 0
                for b in range(steps):
                    idx = order[b * batch:(b + 1) * batch]
                    loss, acts = impl_module.step(net, X[idx], Y[idx], lr, capture=False)
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"{label}: the training loss became {loss} at step {b + 1} "
                                                 f"of epoch {epoch + 1} (lr {lr:g} too large?)")
                    loss_sum += loss * len(idx)
                    correct += int((acts["fc3"].argmax(axis=1) == y_host[idx]).sum())
                    bar.update(1)
            seconds = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss_sum / n:.4f}", refresh=False)
            _, test_acc = impl_module.evaluate(net, Xt, Yt, 1024)
            history.append(dict(epoch=epoch + 1, train_loss=loss_sum / n, train_acc=int(correct) / n,
                                test_acc=test_acc, seconds=seconds))
    finally:
        bar.close()
    return dict(label=label, framework=impl_module.FRAMEWORK, version=impl_module.version(), impl=impl,
                device=_device_name(device), dtype=dtype, seed=seed, lr=lr, batch=batch, epochs=epochs,
                command=" ".join(shlex.quote(a) for a in sys.argv), history=history)


def _device_name(device):
    if str(device).startswith("cuda"):
        try:
            import torch
            return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        except Exception:  # noqa: BLE001  a name is only a label
            return str(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def run_filename(run):
    dev = run["device"].split(" ")[0].replace(":", "")
    return f"{run['label']}_{dev}_lr{run['lr']:g}_seed{run['seed']}.json"


def check_replace(path, epochs):
    """``io.WouldLoseData`` when ``path`` holds a run with more epochs than ``epochs`` (a 1-epoch
    run must not replace a 10-epoch one); a damaged file there is a ValueError too."""
    from equiv import io
    path = Path(path)
    if path.is_dir():
        raise io.OutputError(f"{path} is a folder where the run's JSON file goes; move it or give another --out")
    old = io.read_json(path)
    if isinstance(old, dict) and isinstance(old.get("history"), list) and len(old["history"]) > epochs:
        raise io.WouldLoseData(f"{path} holds a {len(old['history'])}-epoch run; this {epochs}-epoch run would "
                               f"replace it and lose epochs {epochs + 1}-{len(old['history'])}: give another --out "
                               "(or remove the file first)")


def write_run(run, folder):
    """Write the run as JSON into ``folder`` (created), atomically; returns the path.
    Refused (``io.WouldLoseData``) when the file there holds more epochs."""
    from equiv import io
    path = Path(folder) / run_filename(run)
    check_replace(path, len(run["history"]))
    return io.write_text(path, json.dumps(run, indent=1) + "\n")


def plot_runs(folder, png=None):
    """Overlay the curves of every run JSON in ``folder`` in one PNG (default folder/runs.png).

    Returns the PNG's path. Raises ImportError with the install command when matplotlib is missing.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting the training curves needs matplotlib; install it with: "
                          "pip install matplotlib") from None
    from equiv.lenet import runs as runs_mod
    folder = Path(folder)
    runs = runs_mod.load(folder)
    try:
        summary = runs_mod.summarize(runs)
    except ValueError:                     # fewer than 3 seeds of any implementation: no band
        summary = None
    in_band = set()
    if summary:
        in_band = {(summary["band_label"], seed) for seed in summary["seeds"]}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(axes, ("train_loss", "train_acc", "test_acc"),
                              ("training loss", "training accuracy", "test accuracy")):
        for r in runs:
            h = r["history"]
            xs, ys = [e["epoch"] for e in h], [e[key] for e in h]
            if (r["label"], r.get("seed")) in in_band:       # the band's seeds: thin grey lines
                ax.plot(xs, ys, color="0.6", lw=0.8, zorder=1)
                continue
            ax.plot(xs, ys, marker=".", label=f"{r['label']} lr {r.get('lr', '?')} seed {r.get('seed', '?')} "
                                               f"({r.get('device', '?').split(' ')[0]})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    if summary:
        lb = summary["loss_band"]
        epochs = range(1, len(lb) + 1)
        axes[0].fill_between(epochs, [b["lo"] for b in lb], [b["hi"] for b in lb], color="0.8", zorder=0,
                             label=f"{summary['band_label']}, {len(summary['seeds'])} seeds: 99 % band")
        a = summary["test_acc_band"]
        axes[2].fill_between([len(lb) - 0.3, len(lb) + 0.3], a["lo"], a["hi"], color="0.8", zorder=0,
                             label="final accuracy band")
    if runs:
        axes[0].legend(fontsize=6)
    fig.suptitle("BN-LeNet on Fashion-MNIST")
    fig.tight_layout()
    from equiv import io
    png = Path(png) if png else folder / "runs.png"
    with io.atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return png
