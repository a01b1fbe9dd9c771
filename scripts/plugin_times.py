"""How long the pytest plugin takes on a user's own implementation, from a folder outside this
repository: the README's NumPy function (``mybn:batch_norm``, its code taken from README.md) in
the numpy env, and the torch adapter class of ``examples/torch_autograd_bn.py`` in the torch env.

    python scripts/plugin_times.py --tox-dir .tox --out reference/data/runs/jobs/plugin.json

Each runs ``pytest -q -p no:cacheprovider --pyargs equiv.suite --adapters TARGET`` three times
(ci profile, CI=true); the JSON holds the command, the wall seconds of each run, pytest's own
summary line and the load average. An existing ``--out`` is not overwritten."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from equiv.readme import own_implementation_example  # noqa: E402

COMMAND = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "equiv.suite", "--adapters"]


def readme_function(folder):
    """Write the README's mybn.py into ``folder``."""
    code, _ = own_implementation_example(open(os.path.join(ROOT, "README.md")).read())
    with open(os.path.join(folder, "mybn.py"), "w") as f:
        f.write(code)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tox-dir", default=os.path.join(ROOT, ".tox"))
    p.add_argument("--out", required=True)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if os.path.exists(args.out):
        sys.exit(f"error: {args.out} exists; give another --out")
    runs = {}
    with tempfile.TemporaryDirectory() as outside:
        readme_function(outside)
        targets = [("numpy", "mybn:batch_norm", outside),
                   ("torch", "examples.torch_autograd_bn:AutogradBatchNormAdapter", ROOT)]
        for env, target, cwd in targets:
            python = os.path.join(args.tox_dir, env, "bin", "python")
            seconds, last = [], ""
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = subprocess.run([python, *COMMAND, target], cwd=cwd, capture_output=True, text=True,
                                   env=dict(os.environ, CI="true"))
                seconds.append(round(time.perf_counter() - t, 2))
                last = (r.stdout.strip().splitlines() or [""])[-1]
                if r.returncode:
                    sys.exit(f"error: {target} in env {env} exited {r.returncode}: {last}")
            runs[f"{target} (env {env})"] = dict(seconds=seconds, pytest=last)
            print(f"{target:55} env {env:6} {seconds} s  {last}")
    with open(args.out, "w") as f:
        json.dump(dict(command=" ".join(COMMAND[1:]) + " TARGET",
                       cwd_numpy="a folder outside the repository",
                       cwd_torch="the repository (examples/ imported from it)", load=os.getloadavg(), runs=runs),
                  f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
