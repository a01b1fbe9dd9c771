"""Framework fingerprints: an implementation's measured conventions and its outputs on the
golden cases (reference/data/vectors), stored per adapter and framework version under
reference/data/fingerprints/<adapter>/<version>.json.

A new release is compared with the fingerprint of the same version, or else of the
nearest older one, and every difference is said in plain words: "running_var changed
from unbiased to biased", "max |Δy| 3e-07 on case train-f32-2d". Outputs count as
unchanged within 8 units of roundoff of the case's dtype (relative to the largest stored
value of that output); conventions compare as the probes do.
"""
import json
import re
from pathlib import Path

import numpy as np

import reference
from equiv import io
from equiv.dtypes import UNIT_ROUNDOFF

DIR = Path(reference.__file__).parent / "data" / "fingerprints"     # the stored ones: read, never written
ULPS = 8


def take(adapter_cls, device="cpu"):
    """The fingerprint of the installed version of an adapter's framework."""
    from equiv.probes import measure
    from equiv.vectors import DEFAULT_DIR, load_arrays, load_index, run_case
    measured = measure(adapter_cls)
    failures = measured.pop("probe_failures", None)
    conventions = {k: v for k, v in measured.items() if k not in ("adapter", "framework")}
    cases = {}
    for rec in load_index()["cases"]:
        status, reason, out = run_case(adapter_cls, rec, load_arrays(DEFAULT_DIR, rec), device)
        entry = {"status": status, "dtype": rec["settings"]["dtype"]}
        if status == "ran":
            entry["outputs"] = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in out.items()}
        else:
            entry["reason"] = reason
        cases[rec["name"]] = entry
    from equiv.core import framework_version
    fp = {"adapter": adapter_cls.name, "framework": adapter_cls.framework,
          "version": framework_version(adapter_cls.framework), "conventions": conventions, "cases": cases}
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
    return (pick, json.loads(path_for(adapter, pick, root).read_text())) if pick else (None, None)


def compare(old, new):
    """Plain-word differences between two fingerprints of one adapter (empty: identical)."""
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
        u = UNIT_ROUNDOFF[before["dtype"]]
        for key, values in before.get("outputs", {}).items():
            a, b = np.asarray(values, dtype=np.float64), np.asarray(after["outputs"][key], dtype=np.float64)
            scale = max(1e-300, float(np.nanmax(np.abs(a))) if a.size else 0.0)
            delta = float(np.nanmax(np.abs(a - b))) if a.size else 0.0
            if np.isnan(a).any() != np.isnan(b).any() or delta > ULPS * u * scale:
                changes.append(f"max |Δ{key}| {delta:.1g} on case {name}")
    return changes
