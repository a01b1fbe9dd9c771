"""The ``equiv`` command line. Nothing imports this module; it sits on top."""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from equiv import io, registry
from equiv.core import FrameworkMissing
from equiv.tables import convention_table, conventions_markdown

DESCRIPTION = """\
bn-equiv: batch norm is "the same layer" in every framework, yet it is not. This tool
runs each implementation (framework built-ins and the book's from-scratch versions)
against a NumPy float64 oracle under Hypothesis, measures its conventions (momentum
meaning, running-variance estimator, default eps, variance algorithm, when running
stats update, default mode, batch of one) and prints what it found.
"""

EPILOG = """\
examples:
  equiv list                                   adapters, installed or not
  equiv check                                  every installed adapter
  equiv check --adapters torch.builtin         one adapter
  equiv check --adapters mypkg.bn:batch_norm   your own implementation (see README)
  equiv replay "Case(...)" --adapters A        one failing case again, oracle beside implementation
  equiv distributed --impls torch.ddp          data-parallel BatchNorm against the oracle, conventions measured
  equiv conventions                            measure; merge into results/conventions.*
  equiv conventions --data reference/data      ... into the committed table (never with older releases)
  equiv findings                               write reference/data/findings.md
  equiv porting                                write docs/porting.md from the measured conventions
  equiv vectors                                regenerate the golden vectors into results/vectors/
  equiv data [--data-dir D] [--download]       find and verify Fashion-MNIST
  equiv lockstep --impls torch.builtin         BN-LeNet beside the NumPy reference, per layer
  equiv train --impl torch.builtin --epochs 10 full Fashion-MNIST run, JSON + PNG into results/runs/
  equiv runs                                   accuracy band from seeds; every run checked against it
  equiv bench --device cuda                    s/epoch per implementation, scratch/built-in ratios
  equiv report                                 results/*.json -> report/report.md, report.html
  equiv fingerprint [--save]                   compare installed frameworks with stored fingerprints
  equiv readme [--check]                       regenerate the numbers and tables of README.md

Commands that write results write under results/ unless given --out (or --data); committed
evidence under reference/data is written only when named, and never replaced by fewer or
older rows.

exit status: 0 all properties pass (documented divergences count as pass), 1 a property
failed or a convention differs from its declaration, 2 a usage error.
"""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the option, the problem, where to look)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


class UsageError(Exception):
    pass


def _adapter_names(spec):
    from equiv.selection import SelectionError, adapter_names
    try:
        return adapter_names(spec)
    except SelectionError as e:
        raise UsageError(str(e)) from e


def _load(name):
    try:
        return registry.load(name), None
    except FrameworkMissing as e:
        return None, f"not installed: {e.install}"
    except KeyError as e:
        raise UsageError(e.args[0]) from e
    except ValueError as e:
        raise UsageError(str(e)) from e


def _progress(msg):
    """What is being measured, on a terminal only (a log or a pipe gets the results alone)."""
    if sys.stderr.isatty():
        print(f"\r\033[K{msg}", end="", file=sys.stderr, flush=True)


def check_adapter(A, device, profile, seed=None):
    """Run every property and probe against one adapter; returns its result record."""
    from hypothesis.reporting import with_reporter

    from equiv.core import Unsupported
    from equiv.known import divergences
    from equiv.probes import PROBES, describe, expected, matches
    from equiv.properties import PROPERTIES, PropertyFailure, Unconfigurable, applies, run

    rec = {"adapter": A.name, "framework": A.framework, "version": _version(A),
           "device": device, "profile": profile, "seed": seed, "properties": {}, "conventions": {},
           "mismatches": []}
    for i, (name, p) in enumerate(PROPERTIES.items(), 1):
        _progress(f"{A.name}: property {i}/{len(PROPERTIES)} {name}")
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
        _progress(f"{A.name}: probe {field}")
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
    _progress("")
    return rec


def _version(A):
    from equiv.core import framework_version
    return framework_version(A.framework)


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
    lines.append("pass* = passes outside the input region of a documented divergence (equiv/known.py)")
    return "\n".join(lines)


def cmd_list(args):
    names = registry.known_names()
    width = max(map(len, names))
    for name in names:
        state = "installed" if registry.framework_installed(name) else f"missing ({registry.install_command(name)})"
        if not registry.implemented(name):
            state = "not yet implemented"
        print(f"{name:{width}} {state}")
    _list_parallel()
    return 0


def _list_parallel():
    """The data-parallel implementations (equiv/parallel/): name, engine, installed or not; read
    from the declared table, so no framework is imported."""
    from equiv.parallel.conventions import ENGINE
    names = registry.known_names(registry.PARALLEL)
    width = max(map(len, names))
    print("\ndata-parallel (equiv/parallel/; tests/test_parallel*.py):")
    for name in names:
        ok = registry.framework_installed(name, registry.PARALLEL)
        hint = "" if ok else f" ({registry.install_command(name, registry.PARALLEL)})"
        print(f"{name:{width}} {'installed' if ok else 'missing':9} {ENGINE[name]}{hint}")


def _profile(args):
    from equiv.strategies import PROFILES, default_profile
    profile = args.profile or default_profile()
    if profile not in PROFILES:
        raise UsageError(f"EQUIV_PROFILE={profile} is not a Hypothesis profile; use one of "
                         f"{', '.join(PROFILES)} (or --profile)")
    return profile


def _seed(args, profile):
    """The seed of a random profile's draws: --seed, else a new one that is printed and recorded (the
    same draws again: --seed N); None for a derandomized profile (ci, mutation)."""
    from hypothesis import settings
    if settings.get_profile(profile).derandomize:
        return None
    return args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")


def cmd_check(args):
    profile = _profile(args)
    seed = _seed(args, profile)
    if args.device not in ("cpu", "cuda"):
        from_env = os.environ.get("EQUIV_DEVICE") == args.device and "--device" not in sys.argv
        src = "EQUIV_DEVICE" if from_env else "--device"
        raise UsageError(f"{src} {args.device!r} is not a device; use cpu or cuda")
    if args.out:
        io.check_dir(args.out, "--out")
    names = _adapter_names(args.adapters)
    loaded = []
    for name in names:                   # every adapter loads and can run here before any work
        A, missing = _load(name)
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


QUANTITIES = ("y", "dx", "dgamma", "dbeta", "running mean", "running var")


def cmd_distributed(args):
    """The data-parallel implementations against the oracle under their declarations, and their
    conventions measured (equiv/parallel/check.py)."""
    from equiv.parallel import check as dp
    profile = _profile(args)
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
        _progress(f"{name}: {i}/{len(loaded)}")
        records.append({"implementation": name, "status": "n/a", "reason": missing} if missing
                       else dp.check(A, name, profile, args.examples))
    _progress("")
    print(f"data-parallel implementations against the oracle (Hypothesis profile {profile!r}; "
          "largest error/bound ratio, ≤ 1 passes):")
    head = ["implementation", "status", "examples", *QUANTITIES, "s", "findings"]
    rows = [[r["implementation"], r["status"], str(r.get("examples", "")),
             *(f"{r['worst_by'][q]:.3g}" if q in r.get("worst_by", {}) else "" for q in QUANTITIES),
             str(r.get("seconds", "")), ", ".join(r.get("findings", []))] for r in records]
    print(_table(head, rows))
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


def _table(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line("-" * w for w in widths), *map(line, rows)])


def cmd_replay(args):
    """One printed Case against one implementation, the oracle's values beside the implementation's."""
    import numpy as np

    from equiv.properties import PROPERTIES, replay
    from equiv.strategies import parse_case
    from equiv.tolerance import ToleranceError
    try:
        case = parse_case(args.case)
    except ValueError as e:
        raise UsageError(f"replay: {e}") from e
    if args.property and args.property not in PROPERTIES:
        raise UsageError(f"replay: unknown property {args.property!r}; properties: {', '.join(PROPERTIES)}")
    names = _adapter_names(args.adapters)
    props = [args.property] if args.property else list(PROPERTIES)
    failed = False
    print(f"{case!r}")
    for name in names:
        A, missing = _load(name)
        if missing:
            print(f"{name}: {missing}")
            continue
        if case.dtype not in A.dtypes:
            print(f"{name}: has no dtype {case.dtype} (it has {', '.join(A.dtypes)})")
            continue
        for pname in props:
            status, detail = replay(PROPERTIES[pname], A, case, args.device)
            if status == "pass":
                print(f"{name} {pname}: pass (largest error/bound {detail:.3g})")
            elif status == "n/a":
                print(f"{name} {pname}: does not apply: {detail}")
            else:
                failed = True
                print(f"{name} {pname}: FAIL: {detail}" if not isinstance(detail, ToleranceError)
                      else f"{name} {pname}: FAIL")
                if isinstance(detail, ToleranceError):
                    print(side_by_side(detail, np))
    return 1 if failed else 0


def side_by_side(e, np, rows=8):
    """The worst elements of a failed comparison: index, oracle, implementation, |error|, bound."""
    err = np.abs(e.actual - e.expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, np.nan_to_num(err, nan=np.inf) / e.bound).ravel()
    order = np.argsort(-ratio, kind="stable")[:rows]
    lines = [f"  {e.what}: {e.ratio:.3g}× the bound at worst",
             f"  {'index':16} {'oracle':>22} {'implementation':>22} {'|error|':>10} {'bound':>10} {'ratio':>9}"]
    for flat in order:
        i = tuple(int(v) for v in np.unravel_index(flat, e.actual.shape)) if e.actual.ndim else ()
        lines.append(f"  {str(i):16} {e.expected[i]:22.15g} {e.actual[i]:22.15g} {err[i]:10.3g} "
                     f"{e.bound[i]:10.3g} {ratio[flat]:9.3g}")
    return "\n".join(lines)


def _version_key(version):
    from equiv.fingerprint import _key
    return _key(str(version))


def cmd_conventions(args):
    from equiv.probes import failures_line, measure
    data = Path(args.data)
    io.check_dir(data, "--data")
    path, md = data / "conventions.json", data / "conventions.md"
    for p in (path, md):
        if p.is_dir():
            raise UsageError(f"--data {data}: {p} is a folder, not a file; give another --data")
    try:
        existing = io.read_json(path, {})            # fail now, not after measuring
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not isinstance(existing, dict):
        raise UsageError(f"{path} is not a table of conventions (a JSON object); repair it or give another --data")
    names = _adapter_names(args.adapters)
    loaded = [(name, *_load(name)) for name in names]
    measured, failed = {}, []
    for name, A, missing in loaded:
        if missing:
            print(f"{name}: {missing}", file=sys.stderr)
            continue
        _progress(f"measuring {name}")
        rec = measure(A)
        rec["version"] = _version(A)
        if rec.get("probe_failures"):
            failed.append(failures_line(name, rec["probe_failures"]))
        measured[name] = rec
    _progress("")
    if failed:                           # a failed probe is never written as a measured value
        print("equiv: error: " + " | ".join(failed) + f"; nothing written to {path}", file=sys.stderr)
        return 1

    def merge(current):
        if not isinstance(current, dict):
            raise UsageError(f"{path} is not a table of conventions (a JSON object); repair it or give another --data")
        older = [f"{n} (holds {current[n].get('version')}, this is {r['version']})" for n, r in measured.items()
                 if n in current and _version_key(current[n].get("version", "0")) > _version_key(r["version"])]
        if older:
            raise io.WouldLoseData(f"{path} holds rows measured with a newer release than installed here: "
                                   f"{', '.join(older)}; nothing written (write elsewhere with --data DIR)")
        return {**current, **measured}

    with io.lock(path):                  # concurrent writers (one per tox env) all count
        try:
            merged = merge(io.read_json(path, {}))
        except ValueError as e:
            raise UsageError(str(e)) from None
        io.write_json(path, merged, sort_keys=True)
        io.write_text(md, conventions_markdown(merged))
    print(convention_table([merged[k] for k in sorted(merged)]))
    print(f"\nwritten: {path}, {md}")
    return 0


def _read_conventions(data, required=True):
    path = Path(data) / "conventions.json"
    if not path.is_file():
        if not required and not path.exists():
            return None
        what = "is a folder" if path.is_dir() else "does not exist"
        raise UsageError(f"{path} {what}; give --data the folder of conventions.json, or run `equiv conventions` first")
    try:
        conv = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path} ({' '.join(str(e).split())}); restore it with git or rerun "
                         "`equiv conventions`") from e
    if not isinstance(conv, dict) or not all(isinstance(r, dict) and r.get("adapter") == n for n, r in conv.items()):
        raise UsageError(f"{path} is not a table of conventions ({{adapter: record}}); restore it with git "
                         "or rerun `equiv conventions`")
    return conv


def cmd_findings(args):
    from equiv.findings import render
    from equiv.known import KNOWN
    data = Path(args.data)
    conventions = _read_conventions(data)
    out = io.check_file(data / "findings.md", "--data")
    io.write_text(out, render(conventions, KNOWN))
    from equiv.findings import divergence_phrase
    print(f"written: {out} ({divergence_phrase(KNOWN)})")
    return 0


def cmd_report(args):
    from equiv import report
    from equiv.known import KNOWN
    try:
        import matplotlib  # noqa: F401  the plots: say so before anything is written
    except ImportError:
        raise UsageError("equiv report draws its plots with matplotlib, which is not installed; "
                         "install it with: pip install matplotlib") from None
    conventions = _read_conventions(args.data, required=False)
    try:
        paths = report.build(args.results, args.out, conventions, KNOWN, Path(args.data) / "runs")
    except (ValueError, OSError) as e:
        raise UsageError(" ".join(str(e).split())) from e
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_fingerprint(args):
    from equiv import fingerprint as fpr
    from equiv.probes import failures_line
    out = Path(args.out)
    if args.save:
        io.check_dir(out, "--out")
    status = 0
    loaded = [(name, *_load(name)) for name in _adapter_names(args.adapters)]
    for name, A, missing in loaded:
        if missing:
            print(f"{name}: {missing}", file=sys.stderr)
            continue
        _progress(f"fingerprinting {name}")
        fp = fpr.take(A)
        _progress("")
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


def cmd_data(args):
    from equiv.data import DataError, find_data_dir, load_fashion_mnist
    try:
        d = load_fashion_mnist(args.data_dir, download=args.download)
        where = find_data_dir(args.data_dir)
    except DataError as e:
        print(f"equiv: error: {e}", file=sys.stderr)
        return 2
    counts = " ".join(str(int((d["train_y"] == k).sum())) for k in range(10))
    print(f"Fashion-MNIST in {where}: train {d['train_x'].shape}, test {d['test_x'].shape}, "
          f"checksums verified; train images per class: {counts}")
    return 0


def _lenet(fn_name):
    def run(args):
        from equiv.lenet import cli_glue
        try:
            return getattr(cli_glue, fn_name)(args)
        except ValueError as e:
            raise UsageError(" ".join(str(e).split())) from e
    return run


def cmd_porting(args):
    from equiv.porting import guide
    conventions = _read_conventions(args.data)
    out = io.check_file(args.out, "--out")
    io.write_text(out, guide(conventions))
    print(f"written: {out}")
    return 0


def cmd_vectors(args):
    from equiv import vectors
    try:
        return vectors.main([args.out])
    except ValueError as e:
        raise UsageError(str(e)) from e


def cmd_readme(args):
    from equiv import readme
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path} is not a file; give --file the README to regenerate")
    text = path.read_text()
    try:
        new = readme.render(text)
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from e
    if args.check:
        stale = readme.stale(text, new)
        if stale:
            print(f"{path} is stale ({', '.join(stale)}); run `equiv readme`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    if new != text:
        io.check_file(path, "--file")
        io.write_text(path, new)
        print(f"written: {path}")
    else:
        print(f"{path} is up to date")
    return 0


def build_parser():
    parser = Parser(prog="equiv", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("list", help="list the adapters and the data-parallel implementations, "
                                    "and whether their framework is installed")
    p.set_defaults(fn=cmd_list)
    adapters_help = ("comma-separated adapter names, or package.module:obj for an external "
                     "implementation; default: every adapter whose framework is installed")
    p = sub.add_parser("check", help="run every property and probe; print the pass/fail and convention tables",
                       description="Runs every property (equiv/properties.py) under Hypothesis and every "
                                   "convention probe (equiv/probes.py) against each adapter.")
    p.add_argument("--adapters", help=adapters_help)
    p.add_argument("--device", default=os.environ.get("EQUIV_DEVICE", "cpu"), help="cpu or cuda (default cpu)")
    p.add_argument("--profile", choices=("dev", "ci", "thorough"),
                   help="Hypothesis profile (default ci: derandomized, the same verdict every run; dev and "
                        "thorough search with random draws; env EQUIV_PROFILE)")
    p.add_argument("--seed", type=int, help="the seed of a random profile's draws (default: a new one, printed)")
    p.add_argument("--out", default=None, help="folder for the JSON results (one file per run; default: "
                                                "print only)")
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("distributed",
                       help="the data-parallel implementations against the oracle; their conventions measured",
                       description="Runs each data-parallel implementation (equiv/parallel/) on generated global "
                                   "batches split over replicas against the oracle under what it declares, and "
                                   "measures its conventions (synchronized, weighting, variance, running "
                                   "statistics, gradients, empty shard). Documented divergences are left out "
                                   "and named.")
    p.add_argument("--impls", help="comma-separated names (see: equiv list), or package.module:Class for your own "
                                   "ParallelAdapter subclass; default: every one whose framework is installed")
    p.add_argument("--profile", choices=("dev", "ci", "thorough"),
                   help="Hypothesis profile (default ci: derandomized; env EQUIV_PROFILE)")
    p.add_argument("--examples", type=int, help="examples per implementation (default: its own budget, 10 "
                                                "unless it sets max_examples; ×10 with --profile thorough)")
    p.add_argument("--out", help="JSON file for the results (a new file: never overwritten)")
    p.set_defaults(fn=cmd_distributed)
    p = sub.add_parser("replay", help="replay one printed Case(...) against an implementation, values side by side",
                       description="Runs the properties (or one, --property) on exactly the case a failure "
                                   "printed and shows, for each failing comparison, the oracle's and the "
                                   "implementation's values of the worst elements side by side.")
    p.add_argument("case", help="the Case(...) line, quoted")
    p.add_argument("--property", default=None, help="one property (default: every property)")
    p.add_argument("--adapters", help=adapters_help)
    p.add_argument("--device", default=os.environ.get("EQUIV_DEVICE", "cpu"), help="cpu or cuda (default cpu)")
    p.set_defaults(fn=cmd_replay)
    p = sub.add_parser("conventions", help="measure conventions and merge them into conventions.json / .md",
                       description="Measures the conventions of each installed adapter by probing and "
                                   "merges them into DATA/conventions.json and DATA/conventions.md, under a "
                                   "lock (one writer per tox env at a time). A failed probe is an error and "
                                   "nothing is written; rows measured with a newer release are never replaced "
                                   "by an older release's. The committed table: --data reference/data.")
    p.add_argument("--adapters", help=adapters_help)
    p.add_argument("--data", default=str(io.WORK),
                   help=f"folder to write (default {io.WORK}; the committed table: reference/data)")
    p.set_defaults(fn=cmd_conventions)
    p = sub.add_parser("findings", help="write findings.md from the measured conventions and equiv/known.py")
    p.add_argument("--data", default="reference/data", help="folder with conventions.json (default reference/data)")
    p.set_defaults(fn=cmd_findings)
    p = sub.add_parser("report", help="merge the results of `equiv check --out` into report.md and report.html",
                       description="Merges every results/check-*.json (one per tox env) with the measured "
                                   "conventions, the documented divergences and the training runs into one "
                                   "Markdown file and one self-contained HTML page with plots.")
    p.add_argument("--results", default="results", help="folder of check-*.json files (default results)")
    p.add_argument("--out", default="report", help="folder to write (default report)")
    p.add_argument("--data", default="reference/data", help="conventions.json and runs/ (default reference/data)")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("fingerprint", help="compare each framework with its stored fingerprint; --save stores it",
                       description="Measures conventions and golden-case outputs of each installed adapter and "
                                   "compares them with the fingerprint stored for the same framework version (or "
                                   "the nearest older one), naming every change. Exit 1 when the same version "
                                   "changed.")
    p.add_argument("--adapters", help=adapters_help)
    p.add_argument("--save", action="store_true", help="store the fingerprints under --out")
    p.add_argument("--out", default=str(io.WORK / "fingerprints"),
                   help=f"folder of ADAPTER/VERSION.json for --save (default {io.WORK / 'fingerprints'}; the "
                        "committed ones: reference/data/fingerprints)")
    p.set_defaults(fn=cmd_fingerprint)
    p = sub.add_parser("data", help="find, verify (and with --download fetch) Fashion-MNIST",
                       description="Looks for the Fashion-MNIST IDX files in --data-dir, $EQUIV_DATA_DIR, "
                                   "/usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist) "
                                   "and ~/.cache/bn-equiv/fashion-mnist, then checks magic numbers, shapes and "
                                   "SHA-256 checksums.")
    p.add_argument("--data-dir", default=None, help="folder with the four IDX files (.gz or raw)")
    p.add_argument("--download", action="store_true",
                   help="download what is missing (into --data-dir when given, else the user cache); "
                        "the files come over plain http and are checked against their SHA-256 sums")
    p.set_defaults(fn=cmd_data)
    from equiv.lenet import cli_glue
    p = sub.add_parser("lockstep",
                       help="BN-LeNet step by step beside the NumPy reference; names the first divergent layer",
                       description="Runs K SGD steps of each BN-LeNet implementation beside the NumPy float64 "
                                   "reference network (reference/lenet.py) from the same initial weights and "
                                   "batches, compares loss, logits, every activation, parameter and running "
                                   "stat per step, and reports the first step and layer that leave tolerance "
                                   "with per-layer divergence δ_l and its rate of change R_l (LEMON).")
    cli_glue.add_lockstep_args(p)
    p.set_defaults(fn=_lenet("lockstep_main"))
    p = sub.add_parser("train", help="train BN-LeNet on Fashion-MNIST; per-epoch JSON and PNG curves",
                       description="The book's setting: batch 128, lr 0.1 (the book's TensorFlow tab uses 0.5), "
                                   "10 epochs, shared initialization and batch order from the seed. Writes "
                                   "per-epoch train loss, train accuracy, test accuracy and time to JSON and "
                                   "plots all runs in the folder.")
    cli_glue.add_train_args(p)
    p.set_defaults(fn=_lenet("train_main"))
    p = sub.add_parser("runs", help="the accuracy band from several seeds; every training run checked against it",
                       description="Derives the 99 % prediction interval of the final test accuracy and of "
                                   "every epoch's training loss from the seeds of one implementation (the one "
                                   "with most seeds, or --band), checks every run of the same setting against "
                                   "it, writes summary.md / summary.json and the overlay plot runs.png. Exit 1 "
                                   "when a run's final test accuracy is outside the band.")
    cli_glue.add_runs_args(p)
    p.set_defaults(fn=_lenet("runs_main"))
    p = sub.add_parser("bench", help="seconds per epoch of BN-LeNet training; scratch/built-in cost ratios",
                       description="Times `equiv train` per implementation (data resident on the device; "
                                   "CUDA graph for torch and one lax.scan per epoch for JAX on a GPU): "
                                   "steady-state s/epoch (median after the first epoch), the first epoch, the "
                                   "wall time with compilation, and the scratch/built-in ratio per framework. "
                                   "On a GPU it checks the targets: torch built-in <= 0.20 s/epoch, JAX "
                                   "built-in <= 0.12 s/epoch, the four-implementation tier <= 30 s for 10 epochs.")
    cli_glue.add_bench_args(p)
    p.set_defaults(fn=_lenet("bench_main"))
    p = sub.add_parser("porting", help="write docs/porting.md: moving a BatchNorm checkpoint between frameworks")
    p.add_argument("--data", default="reference/data", help="folder with conventions.json (default reference/data)")
    p.add_argument("--out", default="docs/porting.md", help="file to write (default docs/porting.md)")
    p.set_defaults(fn=cmd_porting)
    p = sub.add_parser("vectors", help="regenerate the golden vectors from the oracle",
                       description="Writes the golden cases (inputs, settings, the oracle's outputs and "
                                   "tolerance bounds) as .npz files plus index.json; tests only read them.")
    p.add_argument("--out", default=str(io.WORK / "vectors"),
                   help=f"folder (default {io.WORK / 'vectors'}; the committed ones: reference/data/vectors)")
    p.set_defaults(fn=cmd_vectors)
    p = sub.add_parser("readme", help="regenerate the numbers and tables of README.md from the code and data",
                       description="README.md's counts and tables between <!-- equiv:NAME --> markers come "
                                   "from the code and the committed data (equiv/readme.py); --check exits 1 "
                                   "when they are stale.")
    p.add_argument("--file", default="README.md", help="the README (default %(default)s)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the README is stale")
    p.set_defaults(fn=cmd_readme)
    return parser


def _quiet_frameworks():
    """TensorFlow's C++ info lines (oneDNN, CPU features, absl) and its retracing warnings are
    not the tool's output: keep them out of check and fingerprint (set the variable to see them)."""
    import logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv=None):
    _quiet_frameworks()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    try:
        return args.fn(args)
    except (UsageError, io.OutputError, io.WouldLoseData) as e:
        print(f"equiv: error: {e}", file=sys.stderr)
        return 2
