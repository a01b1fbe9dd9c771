"""Framework fingerprints: what a release does, stored per adapter and framework version under
reference/data/fingerprints/<adapter>/<version>.json.

A fingerprint holds the release's measured conventions (equiv.probes), each golden case's
status (reference/data/vectors: "ran", "skipped", "documented") and, for every output of a case
that ran, the band of its distance from the oracle in units of the case's tolerance bound:
r = max |output − oracle| / bound over the output's elements (equiv.tolerance.excess; the oracle
and the bound are the ones stored with the vectors), banded as

    "≤1"          within the bound
    "≤8", "≤64"   beyond the bound by at most 8×, 64×
    ">64"         beyond it by more
    "non-finite"  NaN or an infinity where the oracle has a finite value

A new release is compared with the fingerprint of the same version, or else of the nearest older
one, and every difference is said in plain words: "running_var changed from unbiased to biased",
"y on case train-f32-offset1e4: error band ≤1 -> ≤64". A change is

- a convention that measures otherwise (as the probes compare them), or a probe that failed;
- a case whose status changed, or that is no longer run, or an output no longer produced;
- an output that crossed its bound (either way), or became or stopped being non-finite, or moved
  by more than one band beyond the bound ("≤8" -> ">64"; "≤8" <-> "≤64" is not a change).

Why no band inside the bound. Rounding is not a property of a release but of the CPU it runs
on: the SIMD width picks the summation order, FMA contraction is used where the ISA has it,
XLA and inductor generate code for the host. One unit of roundoff of an output is up to 0.35 of
its bound on the tightest golden cases (train-f32-eps0.1-scale1e-3-4d y: 0.345; infer-f32-2d y:
0.304; median over outputs 0.045), so a last-bit difference can move r anywhere between 0 and
about 0.7. Measured on one AMD EPYC (AVX-512), its default code against --xla_cpu_max_isa=AVX (no
FMA) and ATEN_CPU_CAPABILITY=default: jax.scratch infer-f64-2d y 0.209 -> 0, flax.linen.two_pass
running-f64-2d running var 0 -> 0.060, flax.linen running-f64-4d running mean 0.037 -> 0.00043;
torch.builtin running-f64-4d running var 0.0175 -> 0, gradients-f32-scale1e3 dgamma 0.0014 -> 0.0094.
Over 41 stored fingerprints every r of an output that ran lies in [0, 0.29]. Edges at 1/64 or
1/8 are crossed by such differences; the bound is not (its safety factor K = 4 is there for
rounding), and every real change of numerics the suite knows crosses it: another eps, the other
momentum convention, the fast variance E[x²] − E[x]² on the offset cases, a drift of an order of
magnitude of the bound. Beyond the bound the error is an algorithm's (fast variance, a float32
accumulator) and its size still depends on the CPU (Flax's fast-variance witness under vmap: 19×
the bound with AVX-512, 102× with --xla_cpu_max_isa=AVX2, 149× with AVX), hence factor-8 bands
compared with one band of slack there: a change by less than 8× is never reported, by more than 64×
always.

Raw outputs are kept in the file as an observation of the machine named in ``observed_on``
(tests/test_keras_backends.py compares Keras backends with tf.keras within the sum of both
bounds); they are never compared. Fields an older fingerprint lacks (a probe added later, bands
absent from a format-1 file) are not compared and are no change.
"""
import json
import math
import os
import platform
import re
from pathlib import Path

import numpy as np

import reference
from equiv import io
from equiv import tolerance as tol

DIR = Path(reference.__file__).parent / "data" / "fingerprints"     # the stored ones: read, never written
FORMAT = 2
# (label, upper edge of r); r above the last edge is ">64"
BANDS = (("≤1", 1.0), ("≤8", 8.0), ("≤64", 64.0), (">64", math.inf))
NON_FINITE = "non-finite"
WITHIN = BANDS[0][0]
_INDEX = {label: i for i, (label, _) in enumerate(BANDS)}
# what the ISA and code generation of the frameworks are told, recorded beside the raw outputs
ISA_SETTINGS = ("ATEN_CPU_CAPABILITY", "XLA_FLAGS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def band(ratio):
    """The band of r = max |error| / bound: "≤1", "≤8", "≤64", ">64", or "non-finite" (r is inf)."""
    if not math.isfinite(ratio):
        return NON_FINITE
    return next(label for label, top in BANDS if ratio <= top)


def bands(outputs, arrays, running_var):
    """{output: band} for one case's outputs against its stored oracle values and bounds;
    running variances are held to the estimator ``running_var`` ("biased"/"unbiased")."""
    out = {}
    for key, value in outputs.items():
        stored = key.replace("running_var_", f"running_var_{running_var}_")
        out[key] = band(tol.excess(value, arrays[stored], arrays[f"bound_{stored}"]))
    return out


def moved(before, after):
    """Whether an output's band changed (see the module docstring: the bound is an edge without
    slack, beyond it one band of slack)."""
    if before == after:
        return False
    if NON_FINITE in (before, after) or WITHIN in (before, after):
        return True
    return abs(_INDEX[before] - _INDEX[after]) > 1


def observed_on():
    """The machine the raw outputs were observed on: architecture, CPU model, ISA settings."""
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    settings = {k: os.environ[k] for k in ISA_SETTINGS if os.environ.get(k)}
    return {"machine": platform.machine(), "cpu": cpu or platform.processor(), "settings": settings}


def take(adapter_cls, device="cpu"):
    """The fingerprint of the installed version of an adapter's framework."""
    from equiv.core import framework_version
    from equiv.probes import measure
    from equiv.vectors import DEFAULT_DIR, load_arrays, load_index, run_case
    measured = measure(adapter_cls)
    failures = measured.pop("probe_failures", None)
    conventions = {k: v for k, v in measured.items() if k not in ("adapter", "framework")}
    cases = {}
    for rec in load_index()["cases"]:
        arrays = load_arrays(DEFAULT_DIR, rec)
        status, reason, out = run_case(adapter_cls, rec, arrays, device)
        entry = {"status": status, "dtype": rec["settings"]["dtype"]}
        if status == "ran":
            entry["bands"] = bands(out, arrays, adapter_cls.conventions.running_var)
            entry["outputs"] = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in out.items()}
        else:
            entry["reason"] = reason
        cases[rec["name"]] = entry
    fp = {"format": FORMAT, "adapter": adapter_cls.name, "framework": adapter_cls.framework,
          "version": framework_version(adapter_cls.framework), "conventions": conventions, "cases": cases,
          "observed_on": observed_on()}
    if failures:                 # failed probes: a failure, never a measured value (not saved)
        fp["probe_failures"] = failures
    return fp


def path_for(adapter, version, root=DIR):
    return Path(root) / adapter / f"{version}.json"


def save(fp, root):
    """Write ``fp`` as root/ADAPTER/VERSION.json (atomically); returns the path.

    Refused (ValueError) for a fingerprint with failed probes, and when the file there holds
    cases or conventions this one lacks (they would be lost)."""
    if fp.get("probe_failures"):
        raise ValueError(f"{fp['adapter']}: probes failed ({', '.join(fp['probe_failures'])}); not saved")
    path = path_for(fp["adapter"], fp["version"], root)
    old = io.read_json(path)
    if isinstance(old, dict):
        lost = sorted(set(old.get("cases", {})) - set(fp["cases"])) + sorted(
            set(old.get("conventions", {})) - set(fp["conventions"]))
        if lost:
            raise io.WouldLoseData(f"{path} holds {', '.join(lost)}, which this fingerprint lacks; not saved "
                                   "(save elsewhere with --out DIR)")
    return io.write_text(path, json.dumps(fp, sort_keys=True) + "\n")


def _key(version):
    """Sortable release key: 2.13.0+cpu -> (2, 13, 0); pre-release tags sort as their numbers."""
    return tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0]))


def baseline(adapter, version, root=DIR):
    """(version, fingerprint) stored for this version, else the nearest older one, else (None, None)."""
    folder = Path(root) / adapter
    stored = sorted((p.stem for p in folder.glob("*.json")), key=_key) if folder.is_dir() else []
    older = [v for v in stored if _key(v) <= _key(version)]
    exact = [v for v in older if v == version]
    pick = exact[0] if exact else (older[-1] if older else None)
    return (pick, json.loads(path_for(adapter, pick, root).read_text(encoding="utf-8"))) if pick else (None, None)


def compare(old, new):
    """Plain-word differences between two fingerprints of one adapter (empty: none). Raw outputs
    are not compared: bands, statuses and conventions are."""
    from equiv.probes import matches
    changes = []
    failed = new.get("probe_failures", {})
    # Only the fields the old fingerprint holds are compared: a field added to the probes later
    # (debias, initial_stats) is absent from fingerprints stored before it, e.g. of a release no
    # longer installed here, and is no change.
    for field, before in old["conventions"].items():
        if field in failed:
            changes.append(f"{field}: probe failed ({failed[field]})")
            continue
        after = new["conventions"].get(field)
        if not matches(field, after, before) if not isinstance(before, str) else after != before:
            changes.append(f"{field} changed from {before} to {after}")
    for name, before in old["cases"].items():
        after = new["cases"].get(name)
        if after is None:
            changes.append(f"case {name} is no longer run")
            continue
        if after["status"] != before["status"]:
            changes.append(f"case {name}: {before['status']} -> {after['status']}")
            continue
        for key, was in before.get("bands", {}).items():      # a format-1 fingerprint has none
            now = after.get("bands", {}).get(key)
            if now is None:
                changes.append(f"{key} on case {name} is no longer produced")
            elif moved(was, now):
                changes.append(f"{key} on case {name}: error band {was} -> {now}")
    return changes
