"""``equiv conventions``: measure the conventions of each adapter; merge them into conventions.json / .md."""
import sys
from pathlib import Path

from equiv import io
from equiv.cli._common import UsageError, adapter_names, add_impls, load, progress, version
from equiv.tables import convention_table, conventions_markdown


def add_parser(sub):
    p = sub.add_parser("conventions", help="measure conventions and merge them into conventions.json / .md",
                       description="Measures the conventions of each installed adapter by probing and "
                                   "merges them into DATA/conventions.json and DATA/conventions.md, under a "
                                   "lock (one writer per tox env at a time). A failed probe is an error and "
                                   "nothing is written; rows measured with a newer release are never replaced "
                                   "by an older release's. The committed table: --data reference/data.")
    add_impls(p)
    p.add_argument("--data", default=str(io.WORK),
                   help=f"folder to write (default {io.WORK}; the committed table: reference/data)")
    p.set_defaults(fn=run)


def _version_key(version):
    from equiv.fingerprint import _key
    return _key(str(version))


def run(args):
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
    names = adapter_names(args.impls)
    loaded = [(name, *load(name)) for name in names]
    measured, failed = {}, []
    for name, A, missing in loaded:
        if missing:
            print(f"{name}: {missing}", file=sys.stderr)
            continue
        progress(f"measuring {name}")
        rec = measure(A)
        rec["version"] = version(A)
        if rec.get("probe_failures"):
            failed.append(failures_line(name, rec["probe_failures"]))
        measured[name] = rec
    progress("")
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
