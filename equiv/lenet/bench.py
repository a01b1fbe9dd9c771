"""`equiv bench`: seconds per epoch of BN-LeNet training, as `equiv train` runs it.

For each implementation: ``equiv.lenet.train.train`` for ``epochs`` epochs (the data resident
on the device, the module's whole-epoch path where it has one: a CUDA graph for torch on a
GPU, one ``lax.scan`` per epoch for JAX), timed from build to the last evaluation. Reported:

- ``seconds_per_epoch``: the median of the epochs after the first (steady state: the first
  pays for compilation, graph capture, cuDNN autotuning);
- ``first_epoch_seconds`` and ``wall_seconds`` (everything, compilation and evaluation included);
- per framework, the scratch/built-in cost ratio of the steady-state seconds per epoch.

The issue's targets on an H100 (reference measurements: 1.2 s/epoch eager PyTorch, 0.20 s
CUDA graph, 0.11 s JAX with one ``lax.scan`` per epoch): torch built-in ≤ 0.20 s/epoch, JAX
built-in ≤ 0.12 s/epoch, and the GPU tier (torch built-in + scratch, JAX built-in + scratch,
10 epochs each) ≤ 30 s wall. ``check_targets`` compares a result with them on a CUDA device.
"""
import platform
import statistics
import time

from equiv import lenet, registry
from equiv.lenet import synthetic, train

GPU_TIER = ("torch.builtin", "torch.scratch", "flax.linen", "jax.scratch")
TARGETS = {"torch.builtin": 0.20, "flax.linen": 0.12}       # s/epoch, steady state, on an H100
TIER_WALL = 30.0                                            # s, the GPU tier at 10 epochs each


def synthetic_data(n_train=60000, n_test=10000, seed=0):
    """Fashion-MNIST-sized synthetic data (timing does not depend on the pixels)."""
    x, y = synthetic(n_train + n_test, seed)
    return dict(train_x=x[:n_train], train_y=y[:n_train], test_x=x[n_train:], test_y=y[n_train:])


def bench_one(label, data, *, epochs, device, dtype="float32", batch=128, lr=0.1, seed=0, progress=False):
    mod, impl = registry.load_lenet(label)
    t0 = time.perf_counter()
    run = train.train(mod, impl, data, epochs=epochs, lr=lr, batch=batch, seed=seed, dtype=dtype,
                      device=device, progress=progress)
    wall = time.perf_counter() - t0
    secs = [e["seconds"] for e in run["history"]]
    steady = statistics.median(secs[1:]) if len(secs) > 1 else secs[0]
    return dict(label=label, version=run["version"], device=run["device"], dtype=dtype, epochs=epochs,
                batch=batch, seconds_per_epoch=steady, first_epoch_seconds=secs[0], epoch_seconds=secs,
                wall_seconds=wall, fast_path=hasattr(mod, "train_epoch"),
                final_test_acc=run["history"][-1]["test_acc"])


def ratios(results):
    """framework -> scratch/built-in steady-state seconds per epoch (where both were run)."""
    by = {lenet.NETS.get(lenet.current_label(r["label"])): r["seconds_per_epoch"] for r in results}
    out = {}
    for fw in lenet.FRAMEWORKS:
        b, s = by.get((fw, "builtin")), by.get((fw, "scratch"))
        if b and s:
            out[fw] = s / b
    return out


def check_targets(result):
    """Lines 'target: measured vs limit, met/missed' for a bench result on a CUDA device; [] on a CPU."""
    if not str(result["device"]).startswith("cuda"):
        return []
    lines = []
    by = {lenet.current_label(r["label"]): r for r in result["results"]}      # an older result: old labels
    for label, limit in TARGETS.items():
        if label in by:
            v = by[label]["seconds_per_epoch"]
            lines.append(f"{label}: {v:.3f} s/epoch (target ≤ {limit}) {'met' if v <= limit else 'MISSED'}")
    if all(label in by for label in GPU_TIER):
        if all(by[label]["epochs"] == 10 for label in GPU_TIER):
            wall = sum(by[label]["wall_seconds"] for label in GPU_TIER)
            lines.append(f"GPU tier, 10 epochs each: {wall:.1f} s wall (target ≤ {TIER_WALL}) "
                         f"{'met' if wall <= TIER_WALL else 'MISSED'}")
        else:
            lines.append("GPU tier: not checked (run it with --epochs 10)")
    return lines


def bench(labels, data, *, epochs, device, dtype="float32", source="synthetic", log=print, progress=False):
    """Time every implementation; ``progress``: a bar per batch on stderr while each one trains."""
    results = []
    for label in labels:
        r = bench_one(label, data, epochs=epochs, device=device, dtype=dtype, progress=progress)
        log(f"{label:<15} {r['seconds_per_epoch']:9.3f} {r['first_epoch_seconds']:9.2f} {r['wall_seconds']:9.1f}"
            f"  {r['version']}")
        results.append(r)
    out = dict(device=results[0]["device"] if results else str(device), platform=platform.platform(),
               data=source, epochs=epochs, dtype=dtype, results=results, scratch_over_builtin=ratios(results))
    out["targets"] = check_targets(out)
    return out
