"""``equiv check``: every property and probe against each adapter; the pass/fail and convention tables."""
import os
import sys
import time
from pathlib import Path

from equiv import io
from equiv.cli._common import (
    PROFILE_CHOICES,
    UsageError,
    adapter_names,
    add_impls,
    draw_seed,
    hypothesis_profile,
    load,
    progress,
    version,
)
from equiv.tables import convention_table


def add_parser(sub):
    p = sub.add_parser("check", help="run every property and probe; print the pass/fail and convention tables",
                       description="Runs every property (equiv/properties.py) under Hypothesis and every "
                                   "convention probe (equiv/probes.py) against each adapter.")
    add_impls(p)
    p.add_argument("--device", default=os.environ.get("EQUIV_DEVICE", "cpu"), help="cpu or cuda (default cpu)")
    p.add_argument("--profile", choices=PROFILE_CHOICES,
                   help="Hypothesis profile (default ci: derandomized, the same verdict every run; dev and "
                        "thorough search with random draws; env EQUIV_PROFILE)")
    p.add_argument("--seed", type=int, help="the seed of a random profile's draws (default: a new one, printed)")
    p.add_argument("--out", default=None, help="folder for the JSON results (one file per run; default: "
                                                "print only)")
    p.set_defaults(fn=run)


def check_adapter(A, device, profile, seed=None):
    """Run every property and probe against one adapter; returns its result record."""
    from hypothesis.reporting import with_reporter

    from equiv.core import Unsupported
    from equiv.known import divergences
    from equiv.probes import PROBES, describe, expected, matches
    from equiv.properties import PROPERTIES, PropertyFailure, Unconfigurable, applies, run

    rec = {"adapter": A.name, "framework": A.framework, "version": version(A),
           "device": device, "profile": profile, "seed": seed, "properties": {}, "conventions": {},
           "mismatches": []}
    for i, (name, p) in enumerate(PROPERTIES.items(), 1):
        progress(f"{A.name}: property {i}/{len(PROPERTIES)} {name}")
        why = applies(p, A)
        if why:
            rec["properties"][name] = {"status": "n/a", "reason": why}
            continue
        t0 = time.perf_counter()
        try:
            with with_reporter(lambda _: None):   # the failure block below says it all
                stats = run(p, A, device, profile, seed)
            status = "documented" if divergences(A, name) else "pass"
            rec["properties"][name] = {"status": status, **stats}
        except (Unconfigurable, Unsupported) as e:
            rec["properties"][name] = {"status": "n/a", "reason": str(e) or "momentum is hard-coded"}
        except PropertyFailure as e:
            rec["properties"][name] = {"status": "fail", "error": str(e.cause)[:2000], "case": repr(e.case),
                                       "block": e.block(), "replay": e.replay_command(device)}
        except Exception as e:
            rec["properties"][name] = {"status": "fail", "error": f"{type(e).__name__}: {e}"[:2000]}
        rec["properties"][name]["seconds"] = round(time.perf_counter() - t0, 2)
    rec["probe_seconds"] = {}
    for field, probe in PROBES.items():
        progress(f"{A.name}: probe {field}")
        if field in getattr(A, "unmeasured", {}):   # the probe does not apply (A.unmeasured says why)
            rec["conventions"][field] = "n/a"
            continue
        t0 = time.perf_counter()
        try:
            measured = probe(A)
        except Exception as e:           # a failure, never a measured value
            why = f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]
            rec.setdefault("probe_failures", {})[field] = why
            rec["mismatches"].append(f"{field}: probe failed ({why}), declared {expected(A, field)!r}")
            continue
        finally:
            rec["probe_seconds"][field] = round(time.perf_counter() - t0, 2)
        rec["conventions"][field] = measured
        if not matches(field, measured, expected(A, field)):
            rec["mismatches"].append(describe(field, measured, expected(A, field)))
    rec["conventions"]["mode_switch"] = A.conventions.mode_switch
    rec["known_divergences"] = [{"id": d.id, "properties": list(d.properties), "reason": d.reason}
                                for d in divergences(A)]
    progress("")
    return rec


SHORT = {"train_forward": "train", "batch_stats": "bstats", "infer_forward": "infer",
         "running_stats": "running", "gradients": "grads", "affine_invariance": "affine",
         "output_moments": "moments", "dx_sums_zero": "Σdx=0", "batch_permutation": "perm",
         "state_after_calls": "state"}
MARK = {"pass": "pass", "documented": "pass*", "fail": "FAIL", "n/a": "n/a"}


def property_table(records):
    from equiv.properties import PROPERTIES
    cols = [SHORT.get(n, n) for n in PROPERTIES]
    width = max([len(r["adapter"]) for r in records] + [7])
    lines = ["adapter".ljust(width) + "  " + "  ".join(c.ljust(7) for c in cols)]
    for r in records:
        if "missing" in r:
            lines.append(r["adapter"].ljust(width) + "  " + r["missing"])
            continue
        cells = [MARK[r["properties"][n]["status"]].ljust(7) for n in PROPERTIES]
        lines.append(r["adapter"].ljust(width) + "  " + "  ".join(cells))
    lines.append("pass* = passes outside the input region of a documented divergence (equiv/known/)")
    return "\n".join(lines)


def run(args):
    profile = hypothesis_profile(args)
    seed = draw_seed(args, profile)
    if args.device not in ("cpu", "cuda"):
        from_env = os.environ.get("EQUIV_DEVICE") == args.device and "--device" not in sys.argv
        src = "EQUIV_DEVICE" if from_env else "--device"
        raise UsageError(f"{src} {args.device!r} is not a device; use cpu or cuda")
    if args.out:
        io.check_dir(args.out, "--out")
    names = adapter_names(args.impls)
    loaded = []
    for name in names:                   # every adapter loads and can run here before any work
        A, missing = load(name)
        if not missing and args.device not in A.devices:
            raise UsageError(f"{name} cannot run on device {args.device!r} (it has {', '.join(A.devices)})")
        loaded.append((name, A, missing))
    records = []
    for name, A, missing in loaded:
        if missing:
            records.append({"adapter": name, "missing": missing})
            continue
        records.append(check_adapter(A, args.device, profile, seed))
    drawn = "derandomized" if seed is None else f"seed {seed}: the same draws again with --seed {seed}"
    print(f"properties (Hypothesis profile {profile!r}, {drawn}; device {args.device}):")
    print(property_table(records))
    print()
    print("measured conventions:")
    print(convention_table(records))
    failed = False
    for r in records:
        for name, res in r.get("properties", {}).items():
            if res["status"] == "fail":
                failed = True
                print("\nFAIL " + res.get("block", f"{r['adapter']} {name}: {res['error']}"))
        for m in r.get("mismatches", []):
            failed = True
            print(f"\nCONVENTION {r['adapter']}: {m}")
    if args.out:
        # the tox env's name, without the check- of the main job's envs (results/check-torch.json)
        tag = os.environ.get("TOX_ENV_NAME", "").removeprefix("check-") or "-".join(n.replace(":", "_") for n in names)
        path = io.write_json(Path(args.out) / f"check-{tag}.json",
                             {"profile": profile, "seed": seed, "device": args.device, "records": records})
        print(f"\nresults written to {path}")
    return 1 if failed else 0
