"""`equiv lockstep` and `equiv train`: the commands, their arguments and entry points (`equiv runs` and
`equiv bench`: equiv/cli/lenet_runs.py).

Each entry point takes an argparse Namespace, prints a short table and returns an exit
code (lockstep: 0 when every implementation stayed within tolerance, 1 otherwise; train:
0, 1 when the loss stopped being finite). Anything the user must fix (unknown
implementation, missing framework, missing data, a bad option, an output that cannot be
written) raises ValueError with one sentence saying what to do, before the work starts.
Numbers are checked by the argument types (``positive_int`` ...), so argparse names the option.

The implementations are named by their labels, the adapter names of their BN layers
(``equiv.registry.lenet_labels()``: ``tf.keras``, ``torch.scratch``); the older labels of
``equiv.lenet.OLD_LABELS`` are accepted for them (``tf.builtin`` for ``tf.keras``, ``jax.builtin`` for
``flax.linen``, ``mxnet.builtin`` for ``mxnet.gluon``).

Results go to the working folder ``results/`` by default; the committed runs
(``reference/data/runs``) are written only when named (``--out``, ``equiv runs --update``)
and never replaced by a run with fewer epochs or a summary with fewer runs.
"""
import argparse
import json
import math
import sys
from pathlib import Path

from equiv import io, lenet, registry
from equiv.cli._common import value_errors_are_usage

DEFAULT_RUNS = "reference/data/runs"             # the committed runs: read by default, written when named
WORK_RUNS = str(io.WORK / "runs")                # where `equiv train` writes by default


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


ALIASES = ", ".join(f"{old} for {label}" for old, label in lenet.OLD_LABELS.items())   # for the help texts


def labels_of(spec):
    """The labels a comma-separated --impls names, old labels replaced by their nets' labels."""
    return [lenet.current_label(s.strip()) for s in str(spec).split(",") if s.strip()]


def add_lockstep_args(parser):
    parser.add_argument("--impls", default="torch.builtin,torch.scratch",
                        help="comma-separated BN-LeNet implementations "
                             f"(known: {', '.join(registry.lenet_labels())}; also {ALIASES}; default: %(default)s)")
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
    parser.add_argument("--impls", default=None,
                        help="the BN-LeNet implementation to train, named after its BN layer: the framework's "
                             f"(tf.keras) or the book's (tf.scratch) (known: {', '.join(registry.lenet_labels())}; "
                             f"also {ALIASES}; default: torch.builtin)")
    parser.add_argument("--framework", default=None,
                        help=f"alias, with --impl: --framework torch --impl builtin means --impls torch.builtin, "
                             "--framework tf --impl builtin means --impls tf.keras "
                             f"(frameworks: {', '.join(lenet.FRAMEWORKS)}; default: torch)")
    parser.add_argument("--impl", default=None,
                        help="alias, with --framework: the variant, builtin or scratch (default: builtin); "
                             "--impl torch.scratch means --impls torch.scratch")
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


def check_positive(args, *names):
    """For callers that bypass the argument types: every named option a finite positive number."""
    for name in names:
        v = getattr(args, name, None)
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite positive number, got {v}")


def check_device(module, device):
    kind = str(device).split(":")[0]
    if kind not in module.devices():
        raise ValueError(f"--device {device!r} is not available to {module.FRAMEWORK} here; use one of: "
                         f"{', '.join(module.devices())}")


def progress_enabled(args):
    return not getattr(args, "quiet", False)


def train_label(args):
    """The one implementation `equiv train` runs: --impls, else the older --framework and --impl
    (--framework torch --impl builtin, or --impl torch.builtin); torch.builtin by default."""
    impls, fw, impl = getattr(args, "impls", None), getattr(args, "framework", None), getattr(args, "impl", None)
    if impls is not None:
        if fw is not None or impl is not None:
            raise ValueError(f"--impls {impls} and --framework/--impl name the same thing; give --impls alone")
        labels = labels_of(impls)
        if len(labels) != 1:
            raise ValueError(f"--impls {impls!r}: equiv train trains one implementation; give one, e.g. torch.builtin")
        return labels[0]
    fw, impl = fw or "torch", impl or "builtin"
    if "." in impl:                                  # --impl torch.scratch is accepted too
        fw, impl = impl.split(".", 1)
    return lenet.current_label(f"{fw}.{impl}")


def lockstep_main(args):
    from equiv.data import DataError
    from equiv.known import net_findings, shows
    from equiv.lenet import lockstep
    from equiv.lenet.train import progress_bar

    check_positive(args, "steps", "batch", "lr")
    labels = labels_of(getattr(args, "impls", "torch.builtin,torch.scratch"))
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
        check_device(mod, device)
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
    bar = progress_bar(len(mods) * len(dtypes) * steps, "lockstep", progress_enabled(args))
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
                for known in net_findings(label, d, r["data"]):
                    if shows(known, r):
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

    check_positive(args, "epochs", "batch", "lr")
    label = train_label(args)
    out = getattr(args, "out", None) or WORK_RUNS
    io.check_dir(out, "--out")
    mod, impl = registry.load_lenet(label)
    device = getattr(args, "device", "cpu") or "cpu"
    check_device(mod, device)
    dtype = getattr(args, "dtype", "float32") or "float32"
    seed = getattr(args, "seed", 0)
    # the file this run will write: refused now, not after training, if it would lose epochs
    target = Path(out) / train.run_filename(dict(label=lenet.label_of(mod, impl), lr=args.lr, seed=seed,
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
                          seed=seed, dtype=dtype, device=device, progress=progress_enabled(args))
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


def add_lockstep(sub):
    p = sub.add_parser("lockstep",
                       help="BN-LeNet step by step beside the NumPy reference; names the first divergent layer",
                       description="Runs K SGD steps of each BN-LeNet implementation beside the NumPy float64 "
                                   "reference network (reference/lenet.py) from the same initial weights and "
                                   "batches, compares loss, logits, every activation, parameter and running "
                                   "stat per step, and reports the first step and layer that leave tolerance "
                                   "with per-layer divergence δ_l and its rate of change R_l (LEMON).")
    add_lockstep_args(p)
    p.set_defaults(fn=value_errors_are_usage(lockstep_main))


def add_train(sub):
    p = sub.add_parser("train", help="train BN-LeNet on Fashion-MNIST; per-epoch JSON and PNG curves",
                       description="The book's setting: batch 128, lr 0.1 (the book's TensorFlow tab uses 0.5), "
                                   "10 epochs, shared initialization and batch order from the seed. Writes "
                                   "per-epoch train loss, train accuracy, test accuracy and time to JSON and "
                                   "plots all runs in the folder.")
    add_train_args(p)
    p.set_defaults(fn=value_errors_are_usage(train_main))
