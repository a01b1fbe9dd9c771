"""`equiv lockstep` and `equiv train`: argument definitions and entry points.

Each entry point takes an argparse Namespace, prints a short table and returns an exit
code (lockstep: 0 when every implementation stayed within tolerance, 1 otherwise; train:
0). Anything the user must fix (unknown implementation, missing framework, missing data,
a bad option) raises ValueError with one sentence saying what to do.
"""
import json
import shlex
import sys
from pathlib import Path

from equiv import lenet

DEFAULT_RUNS = "reference/data/runs"


def add_lockstep_args(parser):
    parser.add_argument("--impls", default="torch.builtin,torch.scratch",
                        help="comma-separated BN-LeNet implementations, framework.variant "
                             f"(known: {', '.join(lenet.labels())}; default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="SGD steps to compare (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float64", "float32", "both"), default="both",
                        help="dtype the framework computes in; the reference is always float64 "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the shared initial weights and batch order (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default: %(default)s, the book's)")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="use Fashion-MNIST from this folder (default: small synthetic batches)")
    parser.add_argument("--fashion-mnist", action="store_true",
                        help="use Fashion-MNIST found the usual way (EQUIV_DATA_DIR, "
                             "/usr/share/datasets/fashion-mnist, the user cache) instead of synthetic data")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (TF32 off) (default: %(default)s)")
    parser.add_argument("--out", default=None, help="write the full result (per step, per layer) as JSON here")
    return parser


def add_train_args(parser):
    parser.add_argument("--framework", default="torch",
                        help=f"framework ({', '.join(lenet.FRAMEWORKS)}; default: %(default)s)")
    parser.add_argument("--impl", default="builtin",
                        help="variant: builtin (the framework's BN layer) or scratch (the book's) "
                             "(default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs (default: %(default)s, the book's)")
    parser.add_argument("--lr", type=float, default=0.1,
                        help="SGD learning rate (default: %(default)s, the book's; its TensorFlow tab uses 0.5)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default: %(default)s, the book's)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of the weights and data (default: %(default)s)")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda; the data is moved to the device once (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the shared initial weights and shuffling (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four Fashion-MNIST IDX files (default: the lookup order "
                             "of equiv.data: EQUIV_DATA_DIR, /usr/share/datasets/fashion-mnist, the user cache)")
    parser.add_argument("--download", action="store_true",
                        help="download Fashion-MNIST into the user cache when no folder has it")
    parser.add_argument("--out", default=DEFAULT_RUNS,
                        help="folder for the run's JSON and the overlay plot runs.png (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _positive(args, *names):
    for name in names:
        v = getattr(args, name, None)
        if v is not None and not v > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")


def _check_device(module, device):
    kind = str(device).split(":")[0]
    if kind not in module.devices():
        raise ValueError(f"device {device!r} is not available to {module.FRAMEWORK} here "
                         f"(available: {', '.join(module.devices())})")


def lockstep_main(args):
    from equiv.data import DataError
    from equiv.lenet import lockstep

    _positive(args, "steps", "batch", "lr")
    labels = [s.strip() for s in str(getattr(args, "impls", "torch.builtin,torch.scratch")).split(",") if s.strip()]
    if not labels:
        raise ValueError("--impls is empty; give e.g. torch.builtin,torch.scratch")
    dtype = getattr(args, "dtype", "both")
    dtypes = ("float64", "float32") if dtype == "both" else (dtype,)
    for d in dtypes:
        if d not in ("float64", "float32"):
            raise ValueError(f"--dtype must be float64, float32 or both, got {d!r}")
    data_dir = getattr(args, "data_dir", None)
    real = data_dir is not None or bool(getattr(args, "fashion_mnist", False))
    device = getattr(args, "device", "cpu") or "cpu"
    mods = [(label, *lenet.load(label)) for label in labels]      # ValueError when unknown/missing
    for _, mod, _ in mods:
        _check_device(mod, device)
    steps, seed = getattr(args, "steps", 30), getattr(args, "seed", 0)
    batch, lr = getattr(args, "batch", 128), getattr(args, "lr", 0.1)

    results = []
    print(f"{'implementation':<15} {'dtype':<8} {'loss':>9} {'activ.':>9} {'params':>9} {'state':>9} "
          f"{'tolerance':>9} {'ampl.':>5}  first divergence")
    for label, mod, impl in mods:
        for d in dtypes:
            try:
                r = lockstep.run(mod, impl, steps, d, seed, batch, lr, device=device,
                                 data_dir=data_dir, real=real)
            except DataError as e:
                raise ValueError(str(e)) from None
            results.append(r)
            g, f = r["max_rel_error_by_kind"], r["first_divergence"]
            where = "none" if f is None else f"step {f['step']}, {f['kind']} {f['layer']} ({f['rel_error']:.2g})"
            for known in lenet.net_findings(label, d, r["data"]):
                if f is not None and (f["step"], f["kind"], f["layer"]) == known.where:
                    where += f"  documented: {known.id}"
            print(f"{label:<15} {d:<8} {g['loss']:9.2e} {g['act']:9.2e} {g['param']:9.2e} {g['state']:9.2e} "
                  f"{r['tolerance']:9.2e} {r['max_amplification']:5.1f}  {where}")
    src = results[0]["data"]
    if any(r["first_divergence"] for r in results):
        print("documented divergences: reference/data/findings.md (BN-LeNet section)")
    print("tolerance: the one-step bound; at step s it is multiplied by the trajectory's measured "
          "amplification (ampl.: its largest value; equiv/lenet/lockstep.py)")
    print(f"max normwise relative error over {steps} steps (batch {batch}, lr {lr:g}, seed {seed}, "
          f"{src} data) against the NumPy float64 reference")
    out = getattr(args, "out", None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {out}")
    return 0 if all(r["passed"] for r in results) else 1


def train_main(args):
    from equiv.data import DataError, load_fashion_mnist
    from equiv.lenet import train

    _positive(args, "epochs", "batch", "lr")
    fw, impl = getattr(args, "framework", "torch"), getattr(args, "impl", "builtin")
    if "." in impl:                                  # --impl torch.scratch is accepted too
        fw, impl = impl.split(".", 1)
    mod, impl = lenet.load(f"{fw}.{impl}")
    device = getattr(args, "device", "cpu") or "cpu"
    _check_device(mod, device)
    dtype = getattr(args, "dtype", "float32") or "float32"
    try:
        data = load_fashion_mnist(getattr(args, "data_dir", None), download=bool(getattr(args, "download", False)))
    except DataError as e:
        raise ValueError(str(e)) from None
    run = train.train(mod, impl, data, epochs=args.epochs, lr=args.lr, batch=args.batch,
                      seed=getattr(args, "seed", 0), dtype=dtype, device=device,
                      progress=not getattr(args, "quiet", False))
    out = getattr(args, "out", None) or DEFAULT_RUNS
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
    return 0


def add_bench_args(parser):
    from equiv.lenet.bench import GPU_TIER
    parser.add_argument("--impls", default=",".join(GPU_TIER),
                        help=f"comma-separated implementations (known: {', '.join(lenet.labels())}; "
                             "default: the GPU tier %(default)s)")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when torch or jax sees a GPU, else cpu)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs per implementation; the first is not counted in s/epoch "
                             "(default: %(default)s, the tier target's)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of the weights and data (default: %(default)s)")
    parser.add_argument("--fashion-mnist", action="store_true",
                        help="time on the real Fashion-MNIST (default: synthetic data of the same size; "
                             "the time does not depend on the pixels)")
    parser.add_argument("--out", default=None,
                        help="write the result as JSON here (default: print only)")
    return parser


def _default_device(mods):
    for mod, _ in mods:
        if "cuda" in mod.devices():
            return "cuda"
    return "cpu"


def bench_main(args):
    from equiv.lenet import bench

    _positive(args, "epochs")
    labels = [s.strip() for s in str(args.impls).split(",") if s.strip()]
    if not labels:
        raise ValueError("--impls is empty; give e.g. torch.builtin,jax.builtin")
    mods = [lenet.load(label) for label in labels]        # ValueError when unknown/missing
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
    result = bench.bench(labels, data, epochs=args.epochs, device=device, dtype=args.dtype, source=source)
    result["command"] = " ".join(shlex.quote(a) for a in ["equiv", *sys.argv[1:]])
    for fw, r in result["scratch_over_builtin"].items():
        print(f"{fw}: scratch/built-in cost ratio {r:.2f}")
    for line in result["targets"]:
        print(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def add_runs_args(parser):
    parser.add_argument("--folder", default=DEFAULT_RUNS,
                        help="folder of `equiv train` JSON runs (default: %(default)s)")
    parser.add_argument("--band", default=None,
                        help="implementation whose seeds make the band (default: the one with most seeds, >= 3)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; do not write summary.md, summary.json and runs.png into the folder")
    return parser


def runs_main(args):
    from equiv.lenet import runs, train

    folder = Path(args.folder)
    if not folder.is_dir():
        raise ValueError(f"no folder {folder}; train first, e.g. equiv train --framework mxnet --out {folder}")
    summary = runs.summarize(runs.load(folder), args.band)      # ValueError: no band
    text = runs.markdown(summary)
    print(text, end="")
    if not args.no_write:
        (folder / "summary.md").write_text("# BN-LeNet runs against the seed band\n\n"
                                           "Generated by `equiv runs`; do not edit by hand.\n\n" + text)
        (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        try:
            print(f"wrote {folder / 'summary.md'}, {folder / 'summary.json'}, {train.plot_runs(folder)}")
        except ImportError as e:
            print(f"wrote {folder / 'summary.md'}, {folder / 'summary.json'}; no plot: {e}")
    outside = [r for r in summary["runs"] if not r["acc_in_band"]]
    return 1 if outside else 0
