"""How fast the properties run: Hypothesis examples per second, per adapter and property.

    python scripts/suite_speed.py --adapters torch.builtin,torch.scratch --out speed_torch.json
    python scripts/suite_speed.py --adapters flax.linen --baseline speed_torch.json --out speed_jax.json

Each property of ``equiv.properties.PROPERTIES`` runs once per adapter through
``equiv.properties.run`` under a Hypothesis profile (``ci`` by default: derandomized, so
every run draws the same cases) and is timed with ``time.perf_counter``: examples/s is the
examples that ran (``stats["examples"]``) over that wall time, rejected and excluded cases
included in the time. Per adapter, the mean cost per example is its total time over its
total examples; ``relative`` divides it by torch.builtin's, taken from this run or from the
``--baseline`` JSON. One framework per process (the tox envs): run it in each. This is a
measurement, not a test; on a shared machine take the smaller of repeated runs.

The JAX adapters load what an earlier process compiled from JAX's persistent compilation cache
(equiv/backends/jax.py): name a fresh directory in ``EQUIV_JAX_CACHE`` for a cold run (every
shape compiled) and run again for a warm one; the JSON records the variable and how many
files the directory held when the run began.
"""
import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BASELINE = "torch.builtin"


def measure(name, profile, device):
    from equiv import registry
    from equiv.core import Unsupported
    from equiv.properties import PROPERTIES, Unconfigurable, applies, run

    A = registry.load(name)
    rows, total_s, total_n = {}, 0.0, 0
    for pname, p in PROPERTIES.items():
        reason = applies(p, A)
        if reason:
            rows[pname] = {"skipped": reason}
            continue
        t0 = time.perf_counter()
        try:
            stats = run(p, A, device, profile=profile)
        except (Unconfigurable, Unsupported) as e:
            rows[pname] = {"skipped": f"{type(e).__name__} {e}".strip()}
            continue
        except AssertionError as e:   # a failing property: recorded, not timed (the tests report it)
            rows[pname] = {"failed": " ".join(str(e).split())[:300], "seconds": round(time.perf_counter() - t0, 3)}
            print(f"{name:22s} {pname:18s} FAILED: {rows[pname]['failed']}", file=sys.stderr)
            continue
        s = time.perf_counter() - t0
        n = stats["examples"]
        rows[pname] = {"examples": n, "excluded": stats["excluded"], "seconds": round(s, 3),
                       "examples_per_s": round(n / s, 2)}
        total_s, total_n = total_s + s, total_n + n
        print(f"{name:22s} {pname:18s} {n:3d} examples {s:7.2f} s {n / s:8.1f}/s", file=sys.stderr)
    return {"version": A.version(), "properties": rows, "seconds": round(total_s, 3),
            "examples": total_n, "ms_per_example": round(1e3 * total_s / total_n, 3) if total_n else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapters", required=True, help="comma-separated adapter names")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--profile", default="ci", help="Hypothesis profile (default ci)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--baseline", help=f"an earlier output holding {BASELINE}'s cost per example")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.adapters.split(",") if n.strip()]
    if not names:
        ap.error("--adapters names no adapter")
    if os.path.exists(args.out):
        ap.error(f"{args.out} exists; not overwritten")
    base = None
    if args.baseline:
        with open(args.baseline) as f:
            base = json.load(f)["adapters"][BASELINE]["ms_per_example"]

    cache = os.environ.get("EQUIV_JAX_CACHE")
    cache_files = len(os.listdir(cache)) if cache and os.path.isdir(cache) else 0
    t0 = time.perf_counter()
    results = {n: measure(n, args.profile, args.device) for n in names}
    if BASELINE in results:
        base = results[BASELINE]["ms_per_example"]
    for r in results.values():
        r["relative"] = round(r["ms_per_example"] / base, 2) if base and r["ms_per_example"] else None
    out = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
           "profile": args.profile, "EQUIV_JAX_CACHE": cache, "jax_cache_files_at_start": cache_files,
           "baseline": BASELINE, "baseline_ms_per_example": base,
           "wall_seconds": round(time.perf_counter() - t0, 1), "adapters": results}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    for n, r in results.items():
        print(f"{n:22s} {r['examples']:4d} examples {r['seconds']:8.1f} s "
              f"{r['ms_per_example']:8.1f} ms/example  x{r['relative']} {BASELINE}")


if __name__ == "__main__":
    main()
