"""The commands that write documents and data from the code and the committed evidence: ``equiv findings``,
``report``, ``porting``, ``vectors``, ``readme`` and ``docs``."""
import os
import sys
from pathlib import Path

from equiv import io
from equiv.cli._common import UsageError, read_conventions


def add_findings(sub):
    p = sub.add_parser("findings", help="write findings.md from the measured conventions and equiv/known/")
    p.add_argument("--data", default="reference/data", help="folder with conventions.json (default reference/data)")
    p.set_defaults(fn=findings)


def findings(args):
    from equiv.findings import render
    from equiv.known import KNOWN
    data = Path(args.data)
    conventions = read_conventions(data)
    out = io.check_file(data / "findings.md", "--data")
    io.write_text(out, render(conventions, KNOWN))
    from equiv.findings import divergence_phrase
    print(f"written: {out} ({divergence_phrase(KNOWN)})")
    return 0


def add_report(sub):
    p = sub.add_parser("report", help="merge the results of `equiv check --out` into report.md and report.html",
                       description="Merges every results/check-*.json (one per tox env) with the measured "
                                   "conventions, the documented divergences and the training runs into one "
                                   "Markdown file and one self-contained HTML page with plots.")
    p.add_argument("--results", default="results", help="folder of check-*.json files (default results)")
    p.add_argument("--out", default="report", help="folder to write (default report)")
    p.add_argument("--data", default="reference/data", help="conventions.json and runs/ (default reference/data)")
    p.set_defaults(fn=report)


def report(args):
    from equiv import report
    from equiv.known import KNOWN
    try:
        import matplotlib  # noqa: F401  the plots: say so before anything is written
    except ImportError:
        raise UsageError("equiv report draws its plots with matplotlib, which is not installed; "
                         "install it with: pip install matplotlib") from None
    conventions = read_conventions(args.data, required=False)
    try:
        paths = report.build(args.results, args.out, conventions, KNOWN, Path(args.data) / "runs")
    except (ValueError, OSError) as e:
        raise UsageError(" ".join(str(e).split())) from e
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


def add_porting(sub):
    p = sub.add_parser("porting", help="write docs/porting.md, pick-two.html and layers/*.md: moving a BatchNorm "
                                       "checkpoint between frameworks")
    p.add_argument("--data", default="reference/data", help="folder with conventions.json (default reference/data)")
    p.add_argument("--out", default="docs/porting.md", help="file to write (default docs/porting.md)")
    p.set_defaults(fn=porting)


def porting(args):
    from equiv.porting import guide
    conventions = read_conventions(args.data)
    out = io.check_file(args.out, "--out")
    io.write_text(out, guide(conventions))
    from equiv.port_pages import write
    pages = write(out.parent)
    print(f"written: {out}, {pages[0]}, {len(pages) - 1} layer pages in {pages[1].parent}")
    return 0


def add_vectors(sub):
    p = sub.add_parser("vectors", help="regenerate the golden vectors from the oracle",
                       description="Writes the golden cases (inputs, settings, the oracle's outputs and "
                                   "tolerance bounds) as .npz files plus index.json; tests only read them.")
    p.add_argument("--out", default=str(io.WORK / "vectors"),
                   help=f"folder (default {io.WORK / 'vectors'}; the committed ones: reference/data/vectors)")
    p.set_defaults(fn=vectors)


def vectors(args):
    from equiv.vectors import INDEX, MODES, generate
    out_dir = args.out
    io.check_dir(out_dir, "--out")
    try:
        index = generate(out_dir)
    except ValueError as e:
        raise UsageError(str(e)) from e
    size = sum(os.path.getsize(os.path.join(out_dir, r["file"])) for r in index["cases"])
    size += os.path.getsize(os.path.join(out_dir, INDEX))
    modes = ", ".join(f"{sum(r['mode'] == m for r in index['cases'])} {m}" for m in MODES)
    print(f"wrote {len(index['cases'])} golden cases ({modes}) to {out_dir}: {size / 1024:.0f} KiB")
    return 0


def add_readme(sub):
    p = sub.add_parser("readme", help="regenerate the numbers and tables of README.md from the code and data",
                       description="README.md's counts and tables between <!-- equiv:NAME --> markers come "
                                   "from the code and the committed data (equiv/readme.py); --check exits 1 "
                                   "when they are stale.")
    p.add_argument("--file", default="README.md", help="the README (default %(default)s)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the README is stale")
    p.set_defaults(fn=readme)


def readme(args):
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


def add_docs(sub):
    p = sub.add_parser("docs", help="regenerate the documentation site's findings pages and generated tables",
                       description="Writes docs/findings/<framework>.md and the tables between <!-- equiv:NAME --> "
                                   "markers of docs/*.md from the code and the committed data (equiv/docs.py); "
                                   "--check exits 1 when a page is stale.")
    p.add_argument("--dir", default="docs", help="the documentation folder (default %(default)s)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is stale")
    p.set_defaults(fn=docs)


def docs(args):
    from equiv import docs
    try:
        if args.check:
            stale = docs.stale(args.dir)
            if stale:
                print(f"stale: {', '.join(stale)}; run `equiv docs`", file=sys.stderr)
                return 1
            print(f"{args.dir}: every generated page is up to date")
            return 0
        written = docs.write(args.dir)
        for path in written:
            print(f"written: {path}")
        if not written:
            print(f"{args.dir}: every generated page is up to date")
    except ValueError as e:
        raise UsageError(str(e)) from e
    return 0
