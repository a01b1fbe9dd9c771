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

from equiv.lenet import epoch_order, scale_images
from reference.lenet import init_params


class _Bar:
    """A tiny progress bar on stderr (tqdm is not a dependency)."""

    def __init__(self, total, desc, enabled=True):
        self.total, self.desc, self.n, self.enabled = total, desc, 0, enabled
        self.t0, self.last = time.perf_counter(), 0.0

    def update(self, n=1, **info):
        self.n += n
        now = time.perf_counter()
        if self.enabled and (now - self.last > 0.2 or self.n == self.total):
            self.last = now
            width = 30
            done = int(width * self.n / self.total)
            extra = " ".join(f"{k} {v:.4g}" for k, v in info.items())
            sys.stderr.write(f"\r{self.desc} [{'#' * done}{'.' * (width - done)}] "
                             f"{self.n}/{self.total} {now - self.t0:.0f}s {extra}   ")
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def train(impl_module, impl, data, *, epochs=10, lr=0.1, batch=128, seed=0, dtype="float32",
          device="cpu", progress=True):
    """Train and return the run record (JSON-able; see ``write_run``).

    ``data``: dict(train_x, train_y, test_x, test_y) as ``equiv.data.load_fashion_mnist``
    returns it (uint8 images (N, 28, 28), or float images in [0, 1]).
    """
    net = impl_module.build(impl, dtype, device)
    impl_module.load_params(net, init_params(seed))
    # The whole set goes to the device once; batches are taken from it there.
    X, Y = impl_module.as_arrays(net, scale_images(data["train_x"], dtype), data["train_y"])
    Xt, Yt = impl_module.as_arrays(net, scale_images(data["test_x"], dtype), data["test_y"])
    y_host = np.asarray(data["train_y"], dtype=np.int64)
    n = len(y_host)
    steps = math.ceil(n / batch)
    label = f"{impl_module.FRAMEWORK}.{impl}"
    fast = getattr(impl_module, "train_epoch", None)
    history = []
    for epoch in range(epochs):
        order = epoch_order(n, seed, epoch)
        t0 = time.perf_counter()
        if fast is not None:               # the module's whole-epoch path (lax.scan, a CUDA graph)
            bar = _Bar(1, f"{label} epoch {epoch + 1}/{epochs}", progress)
            losses, correct = fast(net, X, Y, order, lr, batch)
            sizes = np.minimum(batch, n - batch * np.arange(steps))
            loss_sum = float(np.dot(np.asarray(losses, dtype=np.float64), sizes))
            bar.update(loss=float(losses[-1]))
        else:
            bar = _Bar(steps, f"{label} epoch {epoch + 1}/{epochs}", progress)
            loss_sum, correct = 0.0, 0
            for b in range(steps):
                idx = order[b * batch:(b + 1) * batch]
                loss, acts = impl_module.step(net, X[idx], Y[idx], lr, capture=False)
                loss_sum += loss * len(idx)
                correct += int((acts["fc3"].argmax(axis=1) == y_host[idx]).sum())
                bar.update(loss=loss)
        seconds = time.perf_counter() - t0
        bar.close()
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"{label}: the training loss became {loss_sum} in epoch {epoch + 1} "
                                     f"(lr {lr} too large?)")
        _, test_acc = impl_module.evaluate(net, Xt, Yt, 1024)
        history.append(dict(epoch=epoch + 1, train_loss=loss_sum / n, train_acc=int(correct) / n,
                            test_acc=test_acc, seconds=seconds))
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


def write_run(run, folder):
    """Write the run as JSON into ``folder`` (created); returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / run_filename(run)
    path.write_text(json.dumps(run, indent=1) + "\n")
    return path


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
    png = Path(png) if png else folder / "runs.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
