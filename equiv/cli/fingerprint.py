"""``equiv fingerprint``: compare each installed framework with its stored fingerprint; ``--save`` stores it."""
import sys
from pathlib import Path

from equiv import io
from equiv.cli._common import adapter_names, add_impls, load, progress


def add_parser(sub):
    p = sub.add_parser("fingerprint", help="compare each framework with its stored fingerprint; --save stores it",
                       description="Measures conventions and golden-case outputs of each installed adapter and "
                                   "compares them with the fingerprint stored for the same framework version (or "
                                   "the nearest older one), naming every change. Exit 1 when the same version "
                                   "changed.")
    add_impls(p)
    p.add_argument("--save", action="store_true", help="store the fingerprints under --out")
    p.add_argument("--out", default=str(io.WORK / "fingerprints"),
                   help=f"folder of ADAPTER/VERSION.json for --save (default {io.WORK / 'fingerprints'}; the "
                        "committed ones: reference/data/fingerprints)")
    p.set_defaults(fn=run)


def run(args):
    from equiv import fingerprint as fpr
    from equiv.probes import failures_line
    out = Path(args.out)
    if args.save:
        io.check_dir(out, "--out")
    status = 0
    loaded = [(name, *load(name)) for name in adapter_names(args.impls)]
    for name, A, missing in loaded:
        if missing:
            print(f"{name}: {missing}", file=sys.stderr)
            continue
        progress(f"fingerprinting {name}")
        fp = fpr.take(A)
        progress("")
        # the project stores fingerprints of its registered adapters; yours are kept where --save puts them
        root = out if A.external else fpr.DIR
        base_version, base = fpr.baseline(name, fp["version"], root)
        if base is None and A.external:
            print(f"{name} {fp['version']}: no fingerprint of it in {root} yet; `equiv fingerprint --save "
                  f"--adapters {name}` stores one there, and later runs compare with it")
        elif base is None:
            print(f"{name} {fp['version']}: no stored fingerprint of this or an older version")
        else:
            changes = fpr.compare(base, fp)
            what = "same version" if base_version == fp["version"] else f"against {base_version}"
            print(f"{name} {fp['version']} ({what}): " + ("; ".join(changes) if changes else "no change"))
            status = status or (1 if changes and base_version == fp["version"] else 0)
        if fp.get("probe_failures"):
            print(f"equiv: error: {failures_line(name, fp['probe_failures'])}; not saved", file=sys.stderr)
            status = 1
        elif args.save:
            print(f"  saved {fpr.save(fp, out)}")
    return status
