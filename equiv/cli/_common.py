"""What the commands share: the usage error, the selection and loading of adapters, the progress
line, the Hypothesis profile and seed, a plain table, the conventions table read back."""
import json
import os
import sys
from pathlib import Path

from equiv import registry
from equiv.core import FrameworkMissing

PROFILE_CHOICES = ("dev", "ci", "thorough")     # --profile (mutation: EQUIV_PROFILE only)
IMPLS_HELP = ("comma-separated adapter names, or package.module:obj for an external "
              "implementation; default: every adapter whose framework is installed (alias: --adapters)")


class UsageError(Exception):
    pass


def add_impls(parser):
    """``--impls`` of the layer commands (check, replay, conventions, fingerprint); ``--adapters`` is
    its older spelling."""
    parser.add_argument("--impls", "--adapters", dest="impls", help=IMPLS_HELP)


def adapter_names(spec):
    from equiv.selection import SelectionError, adapter_names
    try:
        return adapter_names(spec)
    except SelectionError as e:
        raise UsageError(str(e)) from e


def load(name):
    try:
        return registry.load(name), None
    except FrameworkMissing as e:
        return None, f"not installed: {e.install}"
    except KeyError as e:
        raise UsageError(e.args[0]) from e
    except ValueError as e:
        raise UsageError(str(e)) from e


def progress(msg):
    """What is being measured, on a terminal only (a log or a pipe gets the results alone)."""
    if sys.stderr.isatty():
        print(f"\r\033[K{msg}", end="", file=sys.stderr, flush=True)


def version(A):
    from equiv.core import framework_version
    return framework_version(A.framework)


def hypothesis_profile(args):
    from equiv.strategies import PROFILES, default_profile
    profile = args.profile or default_profile()
    if profile not in PROFILES:
        raise UsageError(f"EQUIV_PROFILE={profile} is not a Hypothesis profile; use one of "
                         f"{', '.join(PROFILES)} (or --profile)")
    return profile


def draw_seed(args, profile):
    """The seed of a random profile's draws: --seed, else a new one that is printed and recorded (the
    same draws again: --seed N); None for a derandomized profile (ci, mutation)."""
    from hypothesis import settings
    if settings.get_profile(profile).derandomize:
        return None
    return args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")


def table(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line("-" * w for w in widths), *map(line, rows)])


def read_conventions(data, required=True):
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


def value_errors_are_usage(fn):
    """A command whose checks raise ValueError (the BN-LeNet commands): the error as a usage error, one line."""
    def run(args):
        try:
            return fn(args)
        except ValueError as e:
            raise UsageError(" ".join(str(e).split())) from e
    return run
