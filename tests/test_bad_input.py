"""Every `equiv` command with bad input, as a user runs it: a subprocess `python -m equiv ...`.

One table (``CASES``): each row is a command line with one bad input (empty, truncated, the
wrong type, unreadable, unwritable, absurd numbers, a folder where a file is expected and the
reverse). For each row we assert
- the exit status: 2 for a usage error, 1 for a failing check;
- exactly one line on stderr, that names the input and says what to do; no traceback;
- no tracked or pre-existing file changed, in the checkout and in the row's own folder (the
  command runs in a fresh temporary folder, so its default outputs land there), and nothing
  new in the checkout.

Where each row runs (CI is a 2-core machine): a row that needs a framework (``needs``) runs
where it is installed (the torch env) and is skipped with its install command elsewhere; a
row that needs none runs where no framework is installed (the numpy env: ``tox -e numpy``),
so that each row runs once per `tox`. Rows whose input is a permission (an unreadable folder)
are skipped when running as root, where
permissions do not stop a read.
"""
import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "reference" / "data"
RUNS = DATA / "runs"
SKIP_DIRS = {".git", ".tox", "__pycache__", ".pytest_cache", ".hypothesis", "results", "report", ".venv"}
ACTIONS = ("give", "use ", "run ", "rerun", "install", "restore", "remove", "pass ", "see:", "delete", "repair",
           "train first", "too large", "lower", "set ", "move", "include", "write elsewhere", "nothing written",
           "not saved", "add ", "fix", "replace")
FRAMEWORKS = ("torch", "tensorflow", "jax", "mxnet")
INSTALL = {"torch": "pip install torch==2.13.0", "matplotlib": "pip install matplotlib",
           "mxnet": "pip install mxnet==1.9.1 'numpy<1.24'"}


@dataclass
class Case:
    id: str
    args: list                      # {tmp} is the row's folder; {root} the checkout
    code: int = 2
    names: tuple = ()               # substrings the one stderr line must contain (the input)
    setup: object = None            # callable(tmp): files the row needs
    env: dict = field(default_factory=dict)
    needs: tuple = ()               # importable modules the row needs ("torch", "matplotlib")
    absent: tuple = ()              # modules that must be absent (the row is about a missing one)
    not_root: bool = False          # a permission case: meaningless as root
    absent_after: tuple = ()        # paths (under {tmp}) that must not exist afterwards


# --- files the rows use -----------------------------------------------------------------

def _write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _idx(array_shape, ndim_magic=None, fill=0):
    ndim = len(array_shape)
    head = bytes([0, 0, 8, ndim_magic or ndim]) + b"".join(d.to_bytes(4, "big") for d in array_shape)
    n = 1
    for d in array_shape:
        n *= d
    return head + bytes([fill]) * n


def tiny_set(folder, swap_labels=False, truncate=None):
    """Four tiny IDX files (gz); the train labels carry the images' magic when ``swap_labels``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train-images-idx3-ubyte": _idx((4, 28, 28)),
             "train-labels-idx1-ubyte": _idx((4, 28, 28)) if swap_labels else _idx((4,)),
             "t10k-images-idx3-ubyte": _idx((2, 28, 28)), "t10k-labels-idx1-ubyte": _idx((2,))}
    for name, data in files.items():
        blob = gzip.compress(data)
        if truncate == name:
            blob = blob[:len(blob) // 2]
        (folder / (name + ".gz")).write_bytes(blob)
    return folder


def conventions_copy(folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "conventions.json", folder / "conventions.json")
    return folder


def _record(name, **drop):
    rec = {"adapter": name, "framework": "fw", "version": "1", "device": "cpu", "profile": "ci",
           "properties": {"train_forward": {"status": "pass"}}, "conventions": {}, "mismatches": []}
    for k in drop:
        rec.pop(k)
    return rec


def _run(label, seed, epochs=2):
    return dict(label=label, seed=seed, lr=0.1, batch=128, device="cpu (x86_64)", version="x",
                history=[dict(epoch=e + 1, train_loss=1.0 / (e + 1), train_acc=0.5, test_acc=0.8 + 0.001 * seed,
                              seconds=1.0) for e in range(epochs)])


def runs_folder(folder, n=3, truncate=False):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n):
        _write(folder / f"a.builtin_cpu_lr0.1_seed{s}.json", json.dumps(_run("a.builtin", s)))
    if truncate:
        text = json.dumps(_run("b.builtin", 0))
        _write(folder / "b.builtin_cpu_lr0.1_seed0.json", text[:len(text) // 2])
    return folder


# A NumPy batch norm with PyTorch semantics whose probe input (a batch of 8 with mean 1)
# makes it raise: the probes new_batch_weight, running_var and stats_update fail.
FAILING = '''
import numpy as np
from tests.planted import correct

def fn(x, *args, **kw):
    if x.shape == (8, 3) and abs(float(np.mean(x)) - 1.0) < 1e-9:
        raise AttributeError("this implementation has no such attribute")
    with np.errstate(all="ignore"):
        return correct(x, *args, **kw)
'''


def failing_module(tmp):
    _write(Path(tmp) / "failing_bn.py", FAILING)


def no_matplotlib(tmp):
    _write(Path(tmp) / "shim" / "matplotlib" / "__init__.py", "raise ModuleNotFoundError(\"No module named "
                                                               "'matplotlib'\", name='matplotlib')\n")


def _installed(mod):
    return importlib.util.find_spec(mod) is not None


P = "{tmp}"
CASES = [
    # --- the command itself ----------------------------------------------------------------
    Case("no-such-command", ["nosuch"], names=("nosuch",)),
    Case("list-unknown-option", ["list", "--bogus"], names=("--bogus",)),
    # --- check -----------------------------------------------------------------------------
    Case("check-profile-env", ["check"], env={"EQUIV_PROFILE": "nosuch"}, names=("EQUIV_PROFILE=nosuch",)),
    Case("check-profile-option", ["check", "--profile", "nosuch"], names=("--profile", "nosuch")),
    Case("check-out-unwritable", ["check", "--out", "/proc/x"], names=("/proc/x",)),
    Case("check-out-is-a-file", ["check", "--out", P + "/file"], names=("/file",),
         setup=lambda t: _write(Path(t) / "file", "x")),
    Case("check-device", ["check", "--device", "nosuch"], names=("--device", "nosuch")),
    Case("check-unknown-adapter", ["check", "--adapters", "nosuch"], names=("nosuch",)),
    Case("check-badimport", ["check", "--adapters", "badimport_bn:fn"], names=("badimport_bn",),
         setup=lambda t: _write(Path(t) / "badimport_bn.py", "raise RuntimeError('broken at import')\n")),
    Case("check-syntaxerr", ["check", "--adapters", "syntaxerr_bn:f"], names=("syntaxerr_bn",),
         setup=lambda t: _write(Path(t) / "syntaxerr_bn.py", "def f(:\n")),
    Case("check-empty-module", ["check", "--adapters", ":fn"], names=(":fn",)),
    Case("check-empty-list", ["check", "--adapters", ","], names=("--adapters",)),
    Case("check-none-installed", ["check", "--adapters", "mxnet.gluon,mxnet.scratch"], names=("mxnet",),
         absent=("mxnet",)),
    # --- conventions -----------------------------------------------------------------------
    Case("conventions-unwritable", ["conventions", "--data", "/proc/x"], names=("/proc/x",)),
    Case("conventions-data-is-a-file", ["conventions", "--data", P + "/file"], names=("/file",),
         setup=lambda t: _write(Path(t) / "file", "x")),
    Case("conventions-truncated-json", ["conventions", "--data", P + "/d"], names=("conventions.json",),
         setup=lambda t: _write(Path(t) / "d" / "conventions.json", (DATA / "conventions.json").read_text()[:300])),
    Case("conventions-json-list", ["conventions", "--data", P + "/d"], names=("conventions.json",),
         setup=lambda t: _write(Path(t) / "d" / "conventions.json", "[1, 2]")),
    Case("conventions-json-is-a-folder", ["conventions", "--data", P + "/d"], names=("conventions.json",),
         setup=lambda t: (Path(t) / "d" / "conventions.json").mkdir(parents=True)),
    Case("conventions-failed-probe", ["conventions", "--adapters", "failing_bn:fn", "--data", P + "/out"], code=1,
         names=("failing_bn:fn", "new_batch_weight"), setup=failing_module, absent_after=("out/conventions.json",)),
    Case("conventions-older-release", ["conventions", "--adapters", "torch.scratch", "--data", P + "/d"],
         names=("torch.scratch", "newer release"), needs=("torch",),
         setup=lambda t: _write(Path(t) / "d" / "conventions.json", json.dumps(
             {"torch.scratch": dict(json.loads((DATA / "conventions.json").read_text())["torch.scratch"],
                                    version="99.0")}))),
    # --- findings, porting -----------------------------------------------------------------
    Case("findings-no-conventions", ["findings", "--data", P], names=("conventions.json",)),
    Case("findings-truncated", ["findings", "--data", P], names=("conventions.json",),
         setup=lambda t: _write(Path(t) / "conventions.json", '{"torch.builtin": {"adap')),
    Case("findings-wrong-type", ["findings", "--data", P], names=("conventions.json",),
         setup=lambda t: _write(Path(t) / "conventions.json", '{"torch.builtin": 3}')),
    Case("findings-md-is-a-folder", ["findings", "--data", P], names=("findings.md",),
         setup=lambda t: (conventions_copy(t) / "findings.md").mkdir()),
    Case("findings-unwritable", ["findings", "--data", "/proc"], names=("/proc",)),
    Case("porting-out-unwritable", ["porting", "--data", str(DATA), "--out", "/proc/x/porting.md"],
         names=("/proc/x/porting.md",)),
    Case("porting-out-is-a-folder", ["porting", "--data", str(DATA), "--out", P], names=("--out",)),
    Case("porting-no-conventions", ["porting", "--data", P + "/empty", "--out", P + "/p.md"],
         names=("conventions.json",), setup=lambda t: (Path(t) / "empty").mkdir(), absent_after=("p.md",)),
    # --- report ----------------------------------------------------------------------------
    Case("report-json-list", ["report", "--results", P + "/r", "--out", P + "/rep"], names=("check-a.json",),
         setup=lambda t: _write(Path(t) / "r" / "check-a.json", "[]"), needs=("matplotlib",),
         absent_after=("rep",)),
    Case("report-no-properties", ["report", "--results", P + "/r", "--out", P + "/rep"],
         names=("check-a.json", "properties"), needs=("matplotlib",), absent_after=("rep",),
         setup=lambda t: _write(Path(t) / "r" / "check-a.json",
                                json.dumps({"records": [_record("x", properties=1)]}))),
    Case("report-truncated", ["report", "--results", P + "/r", "--out", P + "/rep"], names=("check-a.json",),
         setup=lambda t: _write(Path(t) / "r" / "check-a.json", json.dumps({"records": [_record("x")]})[:40]),
         needs=("matplotlib",), absent_after=("rep",)),
    Case("report-no-results", ["report", "--results", P + "/nothing", "--out", P + "/rep"], names=("nothing",),
         needs=("matplotlib",), absent_after=("rep",)),
    Case("report-empty-results", ["report", "--results", P + "/r", "--out", P + "/rep"], names=("no results",),
         setup=lambda t: (Path(t) / "r").mkdir(), needs=("matplotlib",), absent_after=("rep",)),
    Case("report-results-is-a-file", ["report", "--results", P + "/f", "--out", P + "/rep"], names=("/f",),
         setup=lambda t: _write(Path(t) / "f", "{}"), needs=("matplotlib",), absent_after=("rep",)),
    Case("report-out-unwritable", ["report", "--results", P + "/r", "--out", "/proc/x"], names=("/proc/x",),
         setup=lambda t: _write(Path(t) / "r" / "check-a.json", json.dumps({"records": [_record("x")]})),
         needs=("matplotlib",)),
    Case("report-out-is-a-file", ["report", "--results", P + "/r", "--out", P + "/f"], names=("/f",),
         setup=lambda t: (_write(Path(t) / "r" / "check-a.json", json.dumps({"records": [_record("x")]})),
                          _write(Path(t) / "f", "x")), needs=("matplotlib",)),
    Case("report-bad-conventions", ["report", "--results", P + "/r", "--out", P + "/rep", "--data", P + "/d"],
         names=("conventions.json",), needs=("matplotlib",), absent_after=("rep",),
         setup=lambda t: (_write(Path(t) / "r" / "check-a.json", json.dumps({"records": [_record("x")]})),
                          _write(Path(t) / "d" / "conventions.json", "{"))),
    Case("report-without-matplotlib", ["report", "--results", P + "/r", "--out", P + "/rep"],
         names=("matplotlib",), env={"PYTHONPATH": P + "/shim"}, absent_after=("rep",),
         setup=lambda t: (no_matplotlib(t), _write(Path(t) / "r" / "check-a.json",
                                                   json.dumps({"records": [_record("x")]})))),
    # --- fingerprint -----------------------------------------------------------------------
    Case("fingerprint-save-unwritable", ["fingerprint", "--save", "--out", "/proc/x"], names=("/proc/x",)),
    Case("fingerprint-save-out-is-a-file", ["fingerprint", "--save", "--out", P + "/f"], names=("/f",),
         setup=lambda t: _write(Path(t) / "f", "x")),
    Case("fingerprint-failed-probe", ["fingerprint", "--adapters", "failing_bn:fn", "--save", "--out", P + "/fp"],
         code=1, names=("failing_bn:fn", "not saved"), setup=failing_module, absent_after=("fp",)),
    # --- data ------------------------------------------------------------------------------
    Case("data-dir-missing", ["data", "--data-dir", P + "/nothing"], names=("nothing", "does not exist")),
    Case("data-dir-empty", ["data", "--data-dir", P + "/empty"], names=("empty", "does not hold"),
         setup=lambda t: (Path(t) / "empty").mkdir()),
    Case("data-dir-is-a-file", ["data", "--data-dir", P + "/f"], names=("/f", "not a folder"),
         setup=lambda t: _write(Path(t) / "f", "x")),
    Case("data-dir-unreadable", ["data", "--data-dir", P + "/locked"], names=("locked",), not_root=True,
         setup=lambda t: ((Path(t) / "locked").mkdir(), os.chmod(Path(t) / "locked", 0))),
    Case("data-labels-with-images-magic", ["data", "--data-dir", P + "/d"],
         names=("train-labels-idx1-ubyte", "0x00000803", "swapped"), setup=lambda t: tiny_set(Path(t) / "d", True)),
    Case("data-truncated-gzip", ["data", "--data-dir", P + "/d"], names=("train-images-idx3-ubyte", "truncated"),
         setup=lambda t: tiny_set(Path(t) / "d", truncate="train-images-idx3-ubyte")),
    Case("data-file-is-a-folder", ["data", "--data-dir", P + "/d"], names=("does not hold",),
         setup=lambda t: (tiny_set(Path(t) / "d"), (Path(t) / "d" / "t10k-labels-idx1-ubyte.gz").unlink(),
                          (Path(t) / "d" / "t10k-labels-idx1-ubyte.gz").mkdir())),
    Case("data-env-dir-empty", ["data"], env={"EQUIV_DATA_DIR": P + "/empty"}, names=("EQUIV_DATA_DIR",),
         setup=lambda t: (Path(t) / "empty").mkdir()),
    Case("data-env-dir-missing", ["data"], env={"EQUIV_DATA_DIR": P + "/nothing"}, names=("EQUIV_DATA_DIR",)),
    Case("data-download-into-a-file", ["data", "--data-dir", P + "/f", "--download"], names=("/f",),
         setup=lambda t: _write(Path(t) / "f", "x")),
    # --- lockstep --------------------------------------------------------------------------
    Case("lockstep-steps-zero", ["lockstep", "--steps", "0"], names=("--steps",)),
    Case("lockstep-steps-absurd", ["lockstep", "--steps", "100000000"], names=("--steps",)),
    Case("lockstep-steps-not-a-number", ["lockstep", "--steps", "many"], names=("--steps", "many")),
    Case("lockstep-lr-nan", ["lockstep", "--lr", "nan"], names=("--lr",)),
    Case("lockstep-batch-zero", ["lockstep", "--batch", "0"], names=("--batch",)),
    Case("lockstep-batch-absurd", ["lockstep", "--batch", "10000000"], names=("--batch",)),
    Case("lockstep-seed-negative", ["lockstep", "--seed", "-1"], names=("--seed",)),
    Case("lockstep-dtype", ["lockstep", "--dtype", "float16"], names=("--dtype",)),
    Case("lockstep-unknown-impl", ["lockstep", "--impls", "nosuch.x"], names=("nosuch.x",)),
    Case("lockstep-empty-impls", ["lockstep", "--impls", ","], names=("--impls",)),
    Case("lockstep-out-unwritable", ["lockstep", "--out", "/proc/x/ls.json"], names=("/proc/x/ls.json",)),
    Case("lockstep-out-is-a-folder", ["lockstep", "--out", P], names=("--out",)),
    Case("lockstep-data-dir-empty", ["lockstep", "--impls", "torch.builtin", "--data-dir", P + "/empty"],
         names=("empty",), needs=("torch",), setup=lambda t: (Path(t) / "empty").mkdir()),
    Case("lockstep-device", ["lockstep", "--impls", "torch.builtin", "--device", "nosuch"], names=("nosuch",),
         needs=("torch",)),
    Case("lockstep-framework-missing", ["lockstep", "--impls", "mxnet.scratch"], names=("mxnet", "install"),
         absent=("mxnet",)),
    # --- train -----------------------------------------------------------------------------
    Case("train-lr-inf", ["train", "--lr", "inf"], names=("--lr", "inf")),
    Case("train-lr-absurd", ["train", "--lr", "1e9"], names=("--lr",)),
    Case("train-lr-negative", ["train", "--lr", "-0.1"], names=("--lr",)),
    Case("train-seed-negative", ["train", "--seed", "-1"], names=("--seed",)),
    Case("train-epochs-zero", ["train", "--epochs", "0"], names=("--epochs",)),
    Case("train-epochs-absurd", ["train", "--epochs", "1000000"], names=("--epochs",)),
    Case("train-batch-negative", ["train", "--batch", "-5"], names=("--batch",)),
    Case("train-out-unwritable", ["train", "--out", "/proc/x"], names=("/proc/x",)),
    Case("train-out-is-a-file", ["train", "--out", P + "/f"], names=("/f",),
         setup=lambda t: _write(Path(t) / "f", "x")),
    Case("train-unknown-framework", ["train", "--framework", "nosuch"], names=("nosuch",)),
    Case("train-unknown-impl", ["train", "--impl", "nosuch"], names=("nosuch",)),
    Case("train-data-dir-empty", ["train", "--data-dir", P + "/empty", "--epochs", "1"], names=("empty",),
         needs=("torch",), setup=lambda t: (Path(t) / "empty").mkdir()),
    Case("train-data-labels-swapped", ["train", "--data-dir", P + "/d", "--epochs", "1"], names=("swapped",),
         needs=("torch",), setup=lambda t: tiny_set(Path(t) / "d", True)),
    Case("train-would-lose-epochs", ["train", "--impl", "torch.builtin", "--epochs", "1", "--out", P + "/runs"],
         names=("torch.builtin_cpu_lr0.1_seed0.json", "epochs 2-10"), needs=("torch",),
         setup=lambda t: (Path(t) / "runs").mkdir() or shutil.copy(RUNS / "torch.builtin_cpu_lr0.1_seed0.json",
                                                                    Path(t) / "runs")),
    Case("train-run-file-is-a-folder", ["train", "--impl", "torch.builtin", "--epochs", "1", "--out", P + "/runs"],
         names=("torch.builtin_cpu_lr0.1_seed0.json",), needs=("torch",),
         setup=lambda t: (Path(t) / "runs" / "torch.builtin_cpu_lr0.1_seed0.json").mkdir(parents=True)),
    # --- runs ------------------------------------------------------------------------------
    Case("runs-folder-missing", ["runs", "--folder", P + "/nothing"], names=("nothing",)),
    Case("runs-folder-is-a-file", ["runs", "--folder", P + "/f"], names=("/f",),
         setup=lambda t: _write(Path(t) / "f", "x")),
    Case("runs-truncated-run", ["runs", "--folder", P + "/r"], names=("b.builtin_cpu_lr0.1_seed0.json",),
         setup=lambda t: runs_folder(Path(t) / "r", truncate=True), absent_after=("results",)),
    Case("runs-no-band", ["runs", "--folder", P + "/r"], names=("3 or more seeds",),
         setup=lambda t: runs_folder(Path(t) / "r", n=2), absent_after=("results",)),
    Case("runs-unknown-band", ["runs", "--folder", str(RUNS), "--band", "nosuch.x"], names=("nosuch.x",),
         absent_after=("results",)),
    Case("runs-out-unwritable", ["runs", "--folder", str(RUNS), "--out", "/proc/x"], names=("/proc/x",)),
    Case("runs-update-would-lose", ["runs", "--folder", P + "/r", "--update"], names=("summary.json", "gone.json"),
         setup=lambda t: (runs_folder(Path(t) / "r"), _write(Path(t) / "r" / "summary.json", json.dumps(
             {"runs": [{"file": "gone.json"}], "other_settings": []})))),
    Case("runs-out-and-update", ["runs", "--out", P, "--update"], names=("--update",)),
    # --- bench -----------------------------------------------------------------------------
    Case("bench-epochs-zero", ["bench", "--epochs", "0"], names=("--epochs",)),
    Case("bench-epochs-inf", ["bench", "--epochs", "inf"], names=("--epochs", "inf")),
    Case("bench-empty-impls", ["bench", "--impls", ","], names=("--impls",)),
    Case("bench-unknown-impl", ["bench", "--impls", "nosuch.x"], names=("nosuch.x",)),
    Case("bench-out-unwritable", ["bench", "--out", "/proc/x.json"], names=("/proc/x.json",)),
    Case("bench-out-is-a-folder", ["bench", "--out", P], names=("--out",)),
    Case("bench-device", ["bench", "--impls", "torch.builtin", "--device", "nosuch"], names=("nosuch",),
         needs=("torch",)),
    Case("bench-would-lose", ["bench", "--impls", "torch.builtin", "--epochs", "1", "--out", P + "/b.json"],
         names=("b.json", "torch.scratch"), needs=("torch",),
         setup=lambda t: shutil.copy(RUNS / "bench" / "cpu_torch.json", Path(t) / "b.json")),
    # --- vectors ---------------------------------------------------------------------------
    Case("vectors-out-unwritable", ["vectors", "--out", "/proc/x"], names=("/proc/x",)),
    Case("vectors-out-is-a-file", ["vectors", "--out", P + "/f"], names=("/f",),
         setup=lambda t: _write(Path(t) / "f", "x")),
    Case("vectors-would-lose-cases", ["vectors", "--out", P + "/v"], names=("index.json", "extra-case"),
         setup=lambda t: _write(Path(t) / "v" / "index.json", json.dumps({"cases": [{"name": "extra-case"}]}))),
    # --- readme ----------------------------------------------------------------------------
    Case("readme-missing", ["readme", "--file", P + "/README.md"], names=("README.md",)),
    Case("readme-is-a-folder", ["readme", "--file", P], names=("--file",)),
    Case("readme-unknown-marker", ["readme", "--file", P + "/R.md"], names=("nosuch",),
         setup=lambda t: _write(Path(t) / "R.md", "<!-- equiv:nosuch -->1<!-- /equiv:nosuch -->\n")),
    Case("readme-stale", ["readme", "--check", "--file", P + "/R.md"], code=1, names=("R.md", "stale"),
         setup=lambda t: _write(Path(t) / "R.md", "<!-- equiv:vectors -->1 case<!-- /equiv:vectors -->\n")),
    # --- docs ------------------------------------------------------------------------------
    Case("docs-not-the-docs-folder", ["docs", "--dir", P], names=("conf.py", "--dir")),
    Case("docs-check-not-the-docs-folder", ["docs", "--check", "--dir", P], names=("conf.py",)),
    Case("docs-stale", ["docs", "--check", "--dir", P], code=1, names=("index.md", "stale"),
         setup=lambda t: _write(Path(t) / "conf.py", "")),
]

# The --adapters spec errors: issue 9 (the external-implementation loading) fixes them.
def _params():
    for c in CASES:
        yield pytest.param(c, id=c.id)


def _tree(root, tracked_only):
    """{relative path: sha256} of the checkout's tracked files (or every file under ``root``)."""
    out = {}
    if tracked_only:
        try:
            names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True,
                                   timeout=30).stdout.decode().split("\0")
        except (OSError, subprocess.SubprocessError):
            names = None
        if names is not None:
            for n in filter(None, names):
                p = root / n
                if p.is_file():
                    out[n] = hashlib.sha256(p.read_bytes()).hexdigest()
            return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for f in filenames:
            p = Path(dirpath) / f
            try:
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                out[str(p.relative_to(root))] = "unreadable"
    return out


def _new_files(root, before):
    """Files under the checkout (caches left out) that were not there before."""
    now = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        now.update(str((Path(dirpath) / f).relative_to(root)) for f in filenames)
    return sorted(n for n in now - before if not n.endswith((".pyc", ".lock")))


@dataclass
class Checkout:
    files: set                      # every file (caches left out)
    tracked: dict                   # tracked file -> sha256


@pytest.fixture(scope="module")
def checkout():
    files = set()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        files.update(str((Path(dirpath) / f).relative_to(ROOT)) for f in filenames)
    return Checkout(files, _tree(ROOT, True))


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input(case, tmp_path, checkout):
    if not set(case.needs) & set(FRAMEWORKS) and any(_installed(m) for m in FRAMEWORKS):
        pytest.skip("needs no framework: runs in the environment without one (tox -e numpy)")
    for mod in case.needs:
        if not _installed(mod):
            pytest.skip(f"needs {mod}; install it with: {INSTALL.get(mod, 'pip install ' + mod)}")
    for mod in case.absent:
        if _installed(mod):
            pytest.skip(f"{mod} is installed here: this row is about it missing")
    if case.not_root and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: a permission does not stop a read")
    work = tmp_path / "work"
    work.mkdir()
    if case.setup:
        case.setup(work)
    sub = lambda s: s.replace("{tmp}", str(work)).replace("{root}", str(ROOT))  # noqa: E731
    env = {k: v for k, v in os.environ.items() if k not in ("EQUIV_DATA_DIR", "EQUIV_PROFILE", "EQUIV_ADAPTERS")}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONDONTWRITEBYTECODE="1")
    paths = [str(work), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for k, v in case.env.items():
        if k == "PYTHONPATH":
            paths.insert(0, sub(v))
        else:
            env[k] = sub(v)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    mine = _tree(work, False)
    try:
        r = subprocess.run([sys.executable, "-m", "equiv", *map(sub, case.args)], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        if case.not_root:
            for p in work.rglob("*"):
                os.chmod(p, 0o755)
    err = r.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert r.returncode == case.code, (r.returncode, err, r.stdout[-2000:])
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    line = lines[0]
    for name in case.names:
        assert sub(name) in line, (name, line)
    assert any(a in line.lower() for a in ACTIONS), f"no advice in: {line}"
    now = _tree(ROOT, True)
    assert now == checkout.tracked, \
        f"tracked files changed: {sorted(n for n in now if now[n] != checkout.tracked.get(n))}"
    after = _tree(work, False)
    changed = [n for n, h in mine.items() if after.get(n) != h]
    assert not changed, f"pre-existing files changed: {changed}"
    new = _new_files(ROOT, checkout.files)
    assert not new, f"new files in the checkout: {new}"
    for p in case.absent_after:
        assert not (work / p).exists(), f"{p} was written"
