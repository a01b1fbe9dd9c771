"""``equiv distributed``: the data-parallel implementations against the oracle, their conventions measured."""
from equiv import io, registry
from equiv.cli._common import PROFILE_CHOICES, UsageError, hypothesis_profile, progress, table
from equiv.core import FrameworkMissing

QUANTITIES = ("y", "dx", "dgamma", "dbeta", "running mean", "running var")


def add_parser(sub):
    p = sub.add_parser("distributed",
                       help="the data-parallel implementations against the oracle; their conventions measured",
                       description="Runs each data-parallel implementation (equiv/parallel/) on generated global "
                                   "batches split over replicas against the oracle under what it declares, and "
                                   "measures its conventions (synchronized, weighting, variance, running "
                                   "statistics, gradients, empty shard). Documented divergences are left out "
                                   "and named.")
    p.add_argument("--impls", help="comma-separated names (see: equiv list), or package.module:Class for your own "
                                   "ParallelAdapter subclass; default: every one whose framework is installed")
    p.add_argument("--profile", choices=PROFILE_CHOICES,
                   help="Hypothesis profile (default ci: derandomized; env EQUIV_PROFILE)")
    p.add_argument("--examples", type=int, help="examples per implementation (default: its own budget, 10 "
                                                "unless it sets max_examples; ×10 with --profile thorough)")
    p.add_argument("--out", help="JSON file for the results (a new file: never overwritten)")
    p.set_defaults(fn=run)


def run(args):
    """The data-parallel implementations against the oracle under their declarations, and their
    conventions measured (equiv/parallel/check.py)."""
    from equiv.parallel import check as dp
    profile = hypothesis_profile(args)
    if args.examples is not None and args.examples < 1:
        raise UsageError(f"--examples {args.examples}: give a positive number")
    if args.out:
        out = io.check_file(args.out, "--out")
        if out.exists():
            raise UsageError(f"--out {out} exists; not overwritten (give a new file)")
    if args.impls is None:
        names = registry.available(registry.PARALLEL)
        if not names:
            raise UsageError("no data-parallel implementation can run here: none of their frameworks is installed "
                             "(see: equiv list), or give your own with --impls package.module:Class")
    else:
        names = [n.strip() for n in args.impls.split(",") if n.strip()]
        if not names:
            raise UsageError(f"--impls {args.impls!r} names no implementation (see: equiv list)")
    loaded = []
    for name in names:                   # everything loads before any work
        try:
            loaded.append((name, dp.load(name), None))
        except dp.SelectionError as e:
            raise UsageError(str(e)) from e
        except FrameworkMissing as e:
            loaded.append((name, None, f"not installed: {e.install}"))
    if all(A is None for _, A, _ in loaded):
        raise UsageError("none of the selected implementations can run here; " +
                         "; ".join(f"{n}: {why}" for n, _, why in loaded))
    records = []
    for i, (name, A, missing) in enumerate(loaded, 1):
        progress(f"{name}: {i}/{len(loaded)}")
        records.append({"implementation": name, "status": "n/a", "reason": missing} if missing
                       else dp.check(A, name, profile, args.examples))
    progress("")
    print(f"data-parallel implementations against the oracle (Hypothesis profile {profile!r}; "
          "largest error/bound ratio, ≤ 1 passes):")
    head = ["implementation", "status", "examples", *QUANTITIES, "s", "findings"]
    rows = [[r["implementation"], r["status"], str(r.get("examples", "")),
             *(f"{r['worst_by'][q]:.3g}" if q in r.get("worst_by", {}) else "" for q in QUANTITIES),
             str(r.get("seconds", "")), ", ".join(r.get("findings", []))] for r in records]
    print(table(head, rows))
    failed = False
    for r in records:
        if r["status"] == "n/a":
            print(f"\n{r['implementation']}: not run: {r['reason']}")
        if r["status"] == "fail":
            failed = True
            print(f"\nFAIL {r['implementation']}: {r['error']}\n  {r['case']}")
        for d in r.get("differences", []):
            failed = True
            print(f"\nCONVENTION {r['implementation']}: {d}")
        if r.get("not_measured"):
            print(f"\n{r['implementation']}: not measured: " +
                  "; ".join(f"{f} ({why})" for f, why in r["not_measured"].items()))
    if args.out:
        path = io.write_json(args.out, {"profile": profile, "records": records})
        print(f"\nresults written to {path}")
    return 1 if failed else 0
