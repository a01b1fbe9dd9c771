"""Writing results: output locations checked before the work, every file written
atomically (a temporary file in the same folder, then a rename), shared files merged under
a lock, and committed evidence never replaced by less.

- ``check_dir(folder, option)`` / ``check_file(path, option)``: raise ``OutputError`` (one
  line naming the option and the path) unless the location can be written, before any work
  is done. Nothing is created: a probe file is made in the nearest existing folder and removed.
- ``write_bytes`` / ``write_text`` / ``write_json`` / ``atomic_path``: the file appears
  complete under its name or not at all; an interrupted write leaves the old file.
- ``locked_update(path, update)``: read, update and replace a JSON file while holding a
  lock (``filelock``), so writers started at the same time (one per tox env) all count.
- ``WORK``: the working folder (under the current folder) where commands write by default;
  committed evidence under ``reference/data`` is written only when asked for by name.
"""
import contextlib
import json
import os
import tempfile
from pathlib import Path

WORK = Path("results")          # default output of every command that writes results


class OutputError(ValueError):
    """An output location cannot be written; the message says which and what to do."""


class WouldLoseData(ValueError):
    """Writing would replace a file with fewer or older rows; the message says what would be lost."""


def _nearest_existing(p):
    p = Path(os.path.abspath(p))
    while not os.path.lexists(p):
        p = p.parent
    return p


def _probe(folder, option, target):
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".equiv-write-check-")
    except OSError as e:
        raise OutputError(f"{option} {target}: cannot write in {folder} ({e.strerror or e}); "
                          "give a location you can write to") from None
    os.close(fd)
    os.unlink(tmp)


def check_dir(folder, option="--out"):
    """Raise OutputError unless ``folder`` is, or can be created as, a folder we can write in."""
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{option} {p} is a file, not a folder; give a folder")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise OutputError(f"{option} {p}: {base} is a file, not a folder; give a folder")
    _probe(base, option, p)
    return p


def check_file(path, option="--out"):
    """Raise OutputError unless ``path`` can be written as a file (its folder created if need be)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{option} {p} is a folder, not a file; give a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{option} {p} is not writable; give a location you can write to")
    base = _nearest_existing(p.parent)
    if not base.is_dir():
        raise OutputError(f"{option} {p}: {base} is a file, not a folder; give a file in a folder")
    _probe(base, option, p)
    return p


def _mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary file name beside ``path`` (same suffix); on success it replaces ``path``.

    For writers that take a file name (``savefig``, ``np.savez``); on an exception the
    temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f"{path.suffix}")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path, text):
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, **kw):
    return write_text(path, json.dumps(obj, **{"indent": 1, **kw}) + "\n")


def lock(path, timeout=600):
    """A lock beside ``path`` (``path.lock``), for read-merge-write of a shared file."""
    from filelock import FileLock
    return FileLock(str(path) + ".lock", timeout=timeout)


def read_json(path, default=None):
    """The JSON content of ``path`` (``default`` when it does not exist); ValueError naming the
    file when it is not valid JSON."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); repair it or restore it with git") from None


def locked_update(path, update, **kw):
    """Under the lock: read ``path`` (JSON, {} when absent), ``new = update(current)``, replace
    the file atomically with ``new``; returns ``new``. ``update`` may raise to write nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock(path):
        new = update(read_json(path, {}))
        write_json(path, new, **kw)
    return new
