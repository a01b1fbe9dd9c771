"""`equiv lockstep` and `equiv train`: argument definitions and entry points.

Each entry point takes an argparse Namespace, prints a short table and returns an exit
code (lockstep: 0 when every implementation stayed within tolerance, 1 otherwise; train:
0, 1 when the loss stopped being finite). Anything the user must fix (unknown
implementation, missing framework, missing data, a bad option, an output that cannot be
written) raises ValueError with one sentence saying what to do, before the work starts.
Numbers are checked by the argument types (``positive_int`` ...), so argparse names the option.

Results go to the working folder ``results/`` by default; the committed runs
(``reference/data/runs``) are written only when named (``--out``, ``equiv runs --update``)
and never replaced by a run with fewer epochs or a summary with fewer runs.
"""
import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from equiv import io, lenet, registry

DEFAULT_RUNS = "reference/data/runs"             # the committed runs: read by default, written when named
WORK_RUNS = str(io.WORK / "runs")                # where `equiv train` writes by default
WORK_SUMMARY = str(io.WORK / "runs-summary")     # where `equiv runs` writes by default


def _int_type(lo, hi):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer from {lo} to {hi}, got {v}")
        return v
    return parse


def _float_type(lo, hi):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in ({lo:g}, {hi:g}], got {text!r}") from None
        if not (math.isfinite(v) and lo < v <= hi):
            raise argparse.ArgumentTypeError(f"must be a finite number in ({lo:g}, {hi:g}], got {text}")
        return v
    return parse


SEED = _int_type(0, 2 ** 32 - 1)
EPOCHS = _int_type(1, 1000)
STEPS = _int_type(1, 10000)
TRAIN_BATCH = _int_type(1, 60000)
LOCKSTEP_BATCH = _int_type(1, 1024)
LR = _float_type(0.0, 10.0)                      # beyond 10 the book's net diverges at once


def add_lockstep_args(parser):
    parser.add_argument("--impls", default="torch.builtin,torch.scratch",
                        help="comma-separated BN-LeNet implementations, framework.variant "
                             f"(known: {', '.join(registry.lenet_labels())}; default: %(default)s)")
    parser.add_argument("--steps", type=STEPS, default=30,
                        help="SGD steps to compare, 1 to 10000 (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float64", "float32", "both"), default="both",
                        help="dtype the framework computes in; the reference is always float64 "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=SEED, default=0,
                        help="seed of the shared initial weights and batch order (default: %(default)s)")
    parser.add_argument("--batch", type=LOCKSTEP_BATCH, default=128,
                        help="batch size, 1 to 1024 (default: %(default)s, the book's)")
    parser.add_argument("--lr", type=LR, default=0.1, help="SGD learning rate, in (0, 10] (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="use Fashion-MNIST from this folder (default: small synthetic batches)")
    parser.add_argument("--fashion-mnist", action="store_true",
                        help="use Fashion-MNIST found the usual way (EQUIV_DATA_DIR, "
                             "/usr/share/datasets/fashion-mnist, the user cache) instead of synthetic data")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (TF32 off) (default: %(default)s)")
    parser.add_argument("--out", default=None, help="write the full result (per step, per layer) as JSON here "
                                                     "(default: print only)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def add_train_args(parser):
    parser.add_argument("--framework", default="torch",
                        help=f"framework ({', '.join(lenet.FRAMEWORKS)}; default: %(default)s)")
    parser.add_argument("--impl", default="builtin",
                        help="variant: builtin (the framework's BN layer) or scratch (the book's) "
                             "(default: %(default)s)")
    parser.add_argument("--epochs", type=EPOCHS, default=10,
                        help="epochs, 1 to 1000 (default: %(default)s, the book's)")
    parser.add_argument("--lr", type=LR, default=0.1,
                        help="SGD learning rate, in (0, 10] (default: %(default)s, the book's; its TensorFlow tab "
                             "uses 0.5)")
    parser.add_argument("--batch", type=TRAIN_BATCH, default=128,
                        help="batch size, 1 to 60000 (default: %(default)s, the book's)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of the weights and data (default: %(default)s)")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda; the data is moved to the device once (default: %(default)s)")
    parser.add_argument("--seed", type=SEED, default=0,
                        help="seed of the shared initial weights and shuffling (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four Fashion-MNIST IDX files (default: the lookup order "
                             "of equiv.data: EQUIV_DATA_DIR, /usr/share/datasets/fashion-mnist, the user cache)")
    parser.add_argument("--download", action="store_true",
                        help="download Fashion-MNIST when no folder has it (into --data-dir when given, else "
                             "the user cache; checksum-verified)")
    parser.add_argument("--out", default=WORK_RUNS,
                        help="folder for the run's JSON and the overlay plot runs.png (default: %(default)s; "
                             f"the committed runs: {DEFAULT_RUNS}, where a run never replaces one with more epochs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _positive(args, *names):
    """For callers that bypass the argument types: every named option a finite positive number."""
    for name in names:
        v = getattr(args, name, None)
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite positive number, got {v}")


def _check_device(module, device):
    kind = str(device).split(":")[0]
    if kind not in module.devices():
        raise ValueError(f"--device {device!r} is not available to {module.FRAMEWORK} here; use one of: "
                         f"{', '.join(module.devices())}")


def _progress_enabled(args):
    return not getattr(args, "quiet", False)


def lockstep_main(args):
    from equiv.data import DataError
    from equiv.lenet import lockstep
    from equiv.lenet.train import progress_bar

    _positive(args, "steps", "batch", "lr")
    labels = [s.strip() for s in str(getattr(args, "impls", "torch.builtin,torch.scratch")).split(",") if s.strip()]
    if not labels:
        raise ValueError("--impls is empty; give e.g. torch.builtin,torch.scratch")
    dtype = getattr(args, "dtype", "both")
    dtypes = ("float64", "float32") if dtype == "both" else (dtype,)
    for d in dtypes:
        if d not in ("float64", "float32"):
            raise ValueError(f"--dtype must be float64, float32 or both, got {d!r}")
    out = getattr(args, "out", None)
    if out:
        io.check_file(out, "--out")
    data_dir = getattr(args, "data_dir", None)
    real = data_dir is not None or bool(getattr(args, "fashion_mnist", False))
    device = getattr(args, "device", "cpu") or "cpu"
    mods = [(label, *registry.load_lenet(label)) for label in labels]      # ValueError when unknown/missing
    for _, mod, _ in mods:
        _check_device(mod, device)
    steps, seed = getattr(args, "steps", 30), getattr(args, "seed", 0)
    batch, lr = getattr(args, "batch", 128), getattr(args, "lr", 0.1)
    dataset = None
    if real:                             # load (and verify) once, before any step
        try:
            x, y, _ = lockstep.data(steps * batch, seed, data_dir, real=True)
        except DataError as e:
            raise ValueError(str(e)) from None
        dataset = (x, y)

    results = []
    print(f"{'implementation':<15} {'dtype':<8} {'loss':>9} {'activ.':>9} {'params':>9} {'state':>9} "
          f"{'tolerance':>9} {'ampl.':>5}  first divergence")
    bar = progress_bar(len(mods) * len(dtypes) * steps, "lockstep", _progress_enabled(args))
    try:
        for label, mod, impl in mods:
            for d in dtypes:
                bar.set_description(f"lockstep {label} {d}", refresh=False)
                r = lockstep.run(mod, impl, steps, d, seed, batch, lr, device=device,
                                 dataset=dataset, on_step=bar.update)
                if dataset is not None:
                    r["data"] = "fashion-mnist"
                results.append(r)
                g, f = r["max_rel_error_by_kind"], r["first_divergence"]
                where = "none" if f is None else f"step {f['step']}, {f['kind']} {f['layer']} ({f['rel_error']:.2g})"
                for known in lenet.net_findings(label, d, r["data"]):
                    if lenet.shows(known, r):
                        where += f"  documented: {known.id}"
                bar.write(f"{label:<15} {d:<8} {g['loss']:9.2e} {g['act']:9.2e} {g['param']:9.2e} {g['state']:9.2e} "
                          f"{r['tolerance']:9.2e} {r['max_amplification']:5.1f}  {where}", file=sys.stdout)
    finally:
        bar.close()
    src = results[0]["data"]
    if any(r["first_divergence"] for r in results):
        print("documented divergences: reference/data/findings.md (BN-LeNet section)")
    print("tolerance: the one-step bound; at step s it is multiplied by the trajectory's measured "
          "amplification (ampl.: its largest value; equiv/lenet/lockstep.py)")
    print(f"max normwise relative error over {steps} steps (batch {batch}, lr {lr:g}, seed {seed}, "
          f"{src} data) against the NumPy float64 reference")
    if out:
        io.write_text(out, json.dumps(results, indent=1) + "\n")
        print(f"wrote {out}")
    return 0 if all(r["passed"] for r in results) else 1


def train_main(args):
    from equiv.data import DataError, load_fashion_mnist
    from equiv.lenet import train

    _positive(args, "epochs", "batch", "lr")
    fw, impl = getattr(args, "framework", "torch"), getattr(args, "impl", "builtin")
    if "." in impl:                                  # --impl torch.scratch is accepted too
        fw, impl = impl.split(".", 1)
    out = getattr(args, "out", None) or WORK_RUNS
    io.check_dir(out, "--out")
    mod, impl = registry.load_lenet(f"{fw}.{impl}")
    device = getattr(args, "device", "cpu") or "cpu"
    _check_device(mod, device)
    dtype = getattr(args, "dtype", "float32") or "float32"
    seed = getattr(args, "seed", 0)
    # the file this run will write: refused now, not after training, if it would lose epochs
    target = Path(out) / train.run_filename(dict(label=f"{mod.FRAMEWORK}.{impl}", lr=args.lr, seed=seed,
                                                 device=train._device_name(device)))
    train.check_replace(target, args.epochs)
    try:
        data = load_fashion_mnist(getattr(args, "data_dir", None), download=bool(getattr(args, "download", False)))
    except DataError as e:
        raise ValueError(str(e)) from None
    if args.batch > len(data["train_y"]):
        raise ValueError(f"--batch {args.batch} is larger than the training set ({len(data['train_y'])} examples)")
    try:
        run = train.train(mod, impl, data, epochs=args.epochs, lr=args.lr, batch=args.batch,
                          seed=seed, dtype=dtype, device=device, progress=_progress_enabled(args))
    except FloatingPointError as e:
        print(f"equiv: error: {e}; nothing written", file=sys.stderr)
        return 1
    path = train.write_run(run, out)
    print(f"{'epoch':>5} {'train loss':>10} {'train acc':>9} {'test acc':>8} {'seconds':>8}")
    for e in run["history"]:
        print(f"{e['epoch']:5d} {e['train_loss']:10.4f} {e['train_acc']:9.4f} {e['test_acc']:8.4f} "
              f"{e['seconds']:8.1f}")
    print(f"{run['label']} {run['version']} on {run['device']}: wrote {path}")
    try:
        print(f"plot: {train.plot_runs(out)}")
    except ImportError as e:
        print(f"no plot: {e}")
    except ValueError as e:              # another file in the folder is damaged: the run is written
        print(f"no plot: {e}")
    return 0


def add_bench_args(parser):
    from equiv.lenet.bench import GPU_TIER
    parser.add_argument("--impls", default=None,
                        help=f"comma-separated implementations (known: {', '.join(registry.lenet_labels())}; "
                             f"default: those of the GPU tier {','.join(GPU_TIER)} whose framework is installed)")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when torch or jax sees a GPU, else cpu)")
    parser.add_argument("--epochs", type=EPOCHS, default=10,
                        help="epochs per implementation, 1 to 1000; the first is not counted in s/epoch "
                             "(default: %(default)s, the tier target's)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of the weights and data (default: %(default)s)")
    parser.add_argument("--fashion-mnist", action="store_true",
                        help="time on the real Fashion-MNIST (default: synthetic data of the same size; "
                             "the time does not depend on the pixels)")
    parser.add_argument("--out", default=None,
                        help="write the result as JSON here (default: print only); an existing result with "
                             "implementations this run lacks is not replaced")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _default_device(mods):
    for mod, _ in mods:
        if "cuda" in mod.devices():
            return "cuda"
    return "cpu"


def _bench_labels(impls):
    """The implementations to time: --impls, else the GPU tier's that are installed (the others
    named on stderr)."""
    from equiv.lenet.bench import GPU_TIER
    if impls is not None:
        labels = [s.strip() for s in str(impls).split(",") if s.strip()]
        if not labels:
            raise ValueError("--impls is empty; give e.g. torch.builtin,jax.builtin")
        return labels, [registry.load_lenet(label) for label in labels]   # ValueError when unknown/missing
    labels, mods, skipped = [], [], []
    for label in GPU_TIER:
        try:
            mods.append(registry.load_lenet(label))
            labels.append(label)
        except ValueError as e:
            skipped.append(f"{label} ({str(e).rsplit('install it with: ', 1)[-1]})")
    if not labels:
        raise ValueError(f"no implementation of the GPU tier is installed: {', '.join(skipped)}; "
                         "install one, or give --impls")
    if skipped:
        print(f"equiv bench: not installed, skipped: {', '.join(skipped)}", file=sys.stderr)
    return labels, mods


def bench_main(args):
    from equiv.lenet import bench

    _positive(args, "epochs")
    if args.out:
        io.check_file(args.out, "--out")
    labels, mods = _bench_labels(args.impls)
    if args.out:
        old = io.read_json(args.out)
        if isinstance(old, dict) and isinstance(old.get("results"), list):
            lost = sorted({r.get("label") for r in old["results"] if isinstance(r, dict)} - set(labels))
            if lost:
                raise io.WouldLoseData(f"{args.out} holds results for {', '.join(map(str, lost))}, which this run "
                                       "does not time; give another --out (or include them in --impls)")
    device = args.device or _default_device(mods)
    for mod, _ in mods:
        _check_device(mod, device)
    if getattr(args, "fashion_mnist", False):
        from equiv.data import DataError, load_fashion_mnist
        try:
            data, source = load_fashion_mnist(), "fashion-mnist"
        except DataError as e:
            raise ValueError(str(e)) from None
    else:
        data, source = bench.synthetic_data(), "synthetic (60000 + 10000 examples)"
    print(f"{'implementation':<15} {'s/epoch':>9} {'1st epoch':>9} {'wall s':>9}  version "
          f"({args.epochs} epochs, batch 128, {args.dtype}, {device}, {source})")
    result = bench.bench(labels, data, epochs=args.epochs, device=device, dtype=args.dtype, source=source,
                         progress=_progress_enabled(args))
    result["command"] = " ".join(shlex.quote(a) for a in ["equiv", *sys.argv[1:]])
    for fw, r in result["scratch_over_builtin"].items():
        print(f"{fw}: scratch/built-in cost ratio {r:.2f}")
    for line in result["targets"]:
        print(line)
    if args.out:
        io.write_text(args.out, json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def add_runs_args(parser):
    parser.add_argument("--folder", default=DEFAULT_RUNS,
                        help="folder of `equiv train` JSON runs to read (default: %(default)s)")
    parser.add_argument("--band", default=None,
                        help="implementation whose seeds make the band (default: the one with most seeds, >= 3)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", default=WORK_SUMMARY,
                       help="folder for summary.md, summary.json and runs.png (default: %(default)s)")
    where.add_argument("--update", action="store_true",
                       help="write them into --folder itself (how the committed summary is regenerated); "
                            "never replacing a summary that lists runs this one lacks")
    where.add_argument("--no-write", action="store_true", help="print only; write nothing")
    return parser


def runs_main(args):
    from equiv.lenet import runs, train

    folder = Path(args.folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ValueError(f"--folder {folder} {what}; give the folder of the runs, or train first, e.g. "
                         f"equiv train --framework mxnet --out {folder}")
    out = None if getattr(args, "no_write", False) else (folder if getattr(args, "update", False)
                                                          else Path(getattr(args, "out", None) or WORK_SUMMARY))
    if out is not None:
        io.check_dir(out, "--folder" if out == folder else "--out")
    summary = runs.summarize(runs.load(folder), args.band)      # ValueError: no band, a damaged run
    if out is not None:
        old = io.read_json(out / "summary.json")
        if isinstance(old, dict):
            files = lambda s: {r.get("file") for r in s.get("runs", []) + s.get("other_settings", [])  # noqa: E731
                               if isinstance(r, dict)}
            lost = sorted(map(str, files(old) - files(summary)))
            if lost:
                raise io.WouldLoseData(f"{out / 'summary.json'} lists runs that {folder} no longer holds "
                                       f"({', '.join(lost)}); restore them or write elsewhere with --out DIR")
    text = runs.markdown(summary)
    print(text, end="")
    if out is not None:
        md = io.write_text(out / "summary.md", "# BN-LeNet runs against the seed band\n\n"
                           "Generated by `equiv runs`; do not edit by hand.\n\n" + text)
        js = io.write_json(out / "summary.json", summary)
        try:
            print(f"wrote {md}, {js}, {train.plot_runs(folder, out / 'runs.png')}")
        except ImportError as e:
            print(f"wrote {md}, {js}; no plot: {e}")
    outside = [r for r in summary["runs"] if not r["acc_in_band"]]
    return 1 if outside else 0
