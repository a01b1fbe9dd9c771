"""A search for what the fixed (ci) draws miss: the suite's properties under another Hypothesis
profile and seed, in the current environment, with every verdict recorded.

    python scripts/sweep.py --profile thorough --out reference/data/runs/sweep/torch_thorough.json
    python scripts/sweep.py --profile dev --seed 1 --out reference/data/runs/sweep/torch_dev_1.json
    python scripts/sweep.py --profile dev --seed 1 --adapters tests.planted:correct_lerp --out lerp.json

It runs ``pytest equiv/suite -k test_property`` (with ``--adapters`` when given, else the adapters the
environment selects: ``EQUIV_ADAPTERS`` or every installed one) in a subprocess of this interpreter,
with ``--hypothesis-profile`` and ``--hypothesis-seed``, and writes one JSON: the command, date,
machine, Python, profile, seed, seconds, the framework versions, and per test its outcome (passed,
failed with the first line of the failure, skipped with the reason). Run it in each tox env
(``tox exec -e torch -- python scripts/sweep.py ...``). A failure it finds is either a bug in the
suite (fixed, with a test) or a finding (documented in equiv/known/ with its witness).
This is a search, not the main job: the main job and CI draw the derandomized ``ci`` profile.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def verdicts(junit):
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name")
        row = {"outcome": "passed", "seconds": round(float(case.get("time", 0)), 2)}
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                message = (el.get("message") or el.text or "").strip()
                row.update(outcome="failed" if tag != "skipped" else "skipped",
                           message=" ".join(message.split())[:400])
        out[name] = row
    return out


def versions():
    from importlib import metadata
    names = ("numpy", "torch", "tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "flax", "equinox",
             "dm-haiku", "mxnet", "onnx", "onnxruntime", "tinygrad", "mlx", "paddlepaddle", "mindspore",
             "hypothesis")
    found = {}
    for n in names:
        try:
            found[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=("dev", "thorough", "ci", "mutation"))
    ap.add_argument("--seed", type=int, help="Hypothesis seed (a random profile draws from it)")
    ap.add_argument("--adapters", help="comma-separated adapters (default: what the environment selects)")
    ap.add_argument("-k", default="test_property", help="pytest -k expression (default test_property)")
    ap.add_argument("--out", required=True, help="JSON file to write (never overwritten)")
    args = ap.parse_args(argv)
    if os.path.exists(args.out):
        ap.error(f"{args.out} exists; not overwritten (give another --out)")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        ap.error(f"--out {args.out}: folder {folder} does not exist or is not writable")
    env = dict(os.environ)
    env.pop("CI", None)   # the profile is the one named here, not ci's
    with tempfile.TemporaryDirectory() as tmp:
        junit = os.path.join(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "equiv/suite", "-k", args.k,
               "--hypothesis-profile", args.profile, f"--junitxml={junit}"]
        if args.seed is not None:
            cmd.append(f"--hypothesis-seed={args.seed}")
        if args.adapters:
            cmd += ["--adapters", args.adapters]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if not os.path.exists(junit):
            sys.exit(f"pytest ran no test (exit {r.returncode}): {r.stdout[-500:]} {r.stderr[-500:]}")
        tests = verdicts(junit)
    counts = {k: sum(t["outcome"] == k for t in tests.values()) for k in ("passed", "failed", "skipped")}
    out = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])),
           "pytest": " ".join(["python"] + cmd[1:]).replace(junit, "JUNIT"),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
           "profile": args.profile, "seed": args.seed, "adapters": args.adapters or os.environ.get("EQUIV_ADAPTERS"),
           "versions": versions(), "seconds": round(seconds, 1), "exit_code": r.returncode, "counts": counts,
           "tests": tests}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"{args.out}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
          f"in {seconds:.0f} s")
    for name, t in tests.items():
        if t["outcome"] == "failed":
            print(f"  FAILED {name}: {t['message'][:200]}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
