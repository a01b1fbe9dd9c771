"""Fashion-MNIST from the canonical IDX files, read with NumPy alone.

The four files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte), each gzip-compressed (``.gz``) or raw, are looked for in

1. the ``data_dir`` argument (``--data-dir``),
2. the folder named by the environment variable ``EQUIV_DATA_DIR``,
3. ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu: ``apt-get install dataset-fashion-mnist``),
4. the user cache ``$XDG_CACHE_HOME/bn-equiv/fashion-mnist`` (default ``~/.cache/...``);

the first folder that holds all four is used. A folder the user names (1 or 2) is the
user's choice: when it lacks the files the search stops there with an error instead of
silently taking another copy. If no folder has them, ``download=True`` (``--download``)
fetches them from the canonical URLs (plain http: the data set's host serves no https; every
file is checked against its SHA-256 sum below before it is kept) into the named folder, or
else the user cache; otherwise ``DataError`` is raised.

Every file is checked: IDX header (magic 0x00000803 for images, 0x00000801 for labels),
length, shape (60000 x 28 x 28 / 10000 x 28 x 28 and as many labels), labels in 0..9, and
the SHA-256 of its decompressed bytes (skipped only with ``verify=False``). Any problem is
a ``DataError`` whose message says what is wrong and how to fix it.
"""
import gzip
import hashlib
import math
import os
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

# The canonical host (an S3 website endpoint) has no https; what it serves is checked against SHA256.
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "EQUIV_DATA_DIR"

# key -> canonical file name (without .gz)
FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
SHAPES = {
    "train_x": (60000, 28, 28),
    "train_y": (60000,),
    "test_x": (10000, 28, 28),
    "test_y": (10000,),
}
# SHA-256 of the decompressed files (those of Debian's dataset-fashion-mnist
# 0.0~git20200523.55506a9-1, identical in content to the canonical release).
SHA256 = {
    "train_x": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_y": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_x": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_y": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
NUM_CLASSES = 10
_IDX_UBYTE = 0x08


class DataError(Exception):
    """Fashion-MNIST is missing or damaged; the message says what and how to fix it."""


def cache_dir():
    """The user cache folder: $XDG_CACHE_HOME/bn-equiv/fashion-mnist (default ~/.cache/...)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "bn-equiv" / "fashion-mnist"


def _how_to_fix():
    return (f"pass --data-dir DIR, set {ENV_VAR}=DIR, run `apt-get install dataset-fashion-mnist`, "
            f"put the four files in {cache_dir()}, or use --download to fetch them (into --data-dir "
            "when given, else there; checksum-verified)")


def _bad_file(path, problem):
    return DataError(f"{path} {problem}; delete or replace that file, or use another copy: {_how_to_fix()}.")


def _candidates(name):
    """File names accepted for a canonical name: .gz or raw, '-idx' or '.idx' spelling."""
    dotted = name.replace("-idx", ".idx")
    return [name + ".gz", name, dotted + ".gz", dotted]


def _find_file(folder, name):
    for cand in _candidates(name):
        p = Path(folder) / cand
        try:
            if p.is_file():
                return p
        except OSError:                  # an unreadable folder holds nothing we can use
            return None
    return None


def _named(data_dir):
    """(folder, how the user named it): --data-dir, else $EQUIV_DATA_DIR; (None, None) when neither."""
    if data_dir is not None:
        return Path(data_dir), f"--data-dir {data_dir}"
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]), f"{ENV_VAR}={os.environ[ENV_VAR]}"
    return None, None


def _folders(data_dir):
    folder, _ = _named(data_dir)
    return [folder] if folder is not None else [SYSTEM_DIR, cache_dir()]


def _complete(folder):
    return all(_find_file(folder, name) for name in FILES.values())


def _check_named(folder, named):
    """DataError unless the folder the user named is a readable folder."""
    if not folder.exists():
        raise DataError(f"{named}: {folder} does not exist; {_how_to_fix()}.")
    if not folder.is_dir():
        raise DataError(f"{named}: {folder} is a file, not a folder; {_how_to_fix()}.")
    try:
        os.listdir(folder)
    except OSError as e:
        raise DataError(f"{named}: cannot read the folder {folder} ({e.strerror or e}); {_how_to_fix()}.") from None


def find_data_dir(data_dir=None):
    """The first folder in the lookup order that holds all four files, or None.

    A folder the user names (``data_dir``, else ``$EQUIV_DATA_DIR``) is the user's choice:
    when it lacks the files the search stops there (None) instead of silently taking
    another copy.
    """
    for folder in _folders(data_dir):
        if _complete(folder):
            return folder
    return None


def _read_bytes(path):
    """The decompressed bytes of an IDX file (gunzipped when named .gz or gzip-magic)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _bad_file(path, f"cannot be read ({e.strerror or e})") from None
    if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except EOFError:
            raise _bad_file(path, "is a truncated gzip file") from None
        except (OSError, zlib.error) as e:
            raise _bad_file(path, f"is a corrupt gzip file ({e})") from None
    return data


def _check_magic(data, path, ndim_expected=None):
    """The IDX magic number: unsigned bytes, and ``ndim_expected`` dimensions when given."""
    if len(data) < 4:
        raise _bad_file(path, f"is truncated ({len(data)} bytes, shorter than an IDX header)")
    magic = int.from_bytes(data[:4], "big")
    ndim = data[3]
    if data[:2] != b"\x00\x00" or data[2] != _IDX_UBYTE or ndim == 0:
        raise _bad_file(path, f"has the wrong magic number 0x{magic:08x} (an unsigned-byte IDX "
                              f"file starts with 0x00000801 for labels or 0x00000803 for images)")
    if ndim_expected is not None and ndim != ndim_expected:
        kinds = {1: "labels", 3: "images"}
        raise _bad_file(path, f"has the magic number 0x{magic:08x} of {ndim}-dimensional data "
                              f"({kinds.get(ndim, 'not Fashion-MNIST')}) where a {kinds[ndim_expected]} file "
                              f"(0x{0x800 + ndim_expected:08x}) is expected: the files are swapped or mislabelled")
    return ndim


def _parse_idx(data, path, ndim_expected=None):
    ndim = _check_magic(data, path, ndim_expected)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _bad_file(path, f"is truncated (its {ndim}-dimensional IDX header needs {header} bytes, "
                              f"the file has {len(data)})")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(shape)
    body = len(data) - header
    if body < size:
        raise _bad_file(path, f"is truncated (header says {'x'.join(map(str, shape))} = {size} "
                              f"bytes of data, the file has {body})")
    if body > size:
        raise _bad_file(path, f"is corrupt ({body - size} bytes after the "
                              f"{'x'.join(map(str, shape))} data its header announces)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path):
    """An unsigned-byte IDX file (gzip or raw) as a uint8 array of the header's shape."""
    return _parse_idx(_read_bytes(path), Path(path)).copy()


def write_idx(path, array, gz=True):
    """Write a uint8 array as an IDX file (gzip-compressed when ``gz``); returns the path."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
    data = header + a.tobytes()
    path = Path(path)
    from equiv import io
    return io.write_bytes(path, gzip.compress(data) if gz else data)


def _load_file(path, key, verify, data=None):
    data = _read_bytes(path) if data is None else data
    arr = _parse_idx(data, path, len(SHAPES[key]))
    if arr.shape != SHAPES[key]:
        raise _bad_file(path, f"has the wrong shape {arr.shape} (expected {SHAPES[key]})")
    if key.endswith("_y") and arr.size and arr.max() >= NUM_CLASSES:
        raise _bad_file(path, f"has labels outside 0..{NUM_CLASSES - 1} (max {arr.max()})")
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[key]:
            raise _bad_file(path, f"fails its checksum (SHA-256 of the decompressed bytes is "
                                  f"{digest}, expected {SHA256[key]})")
    return arr.copy()


def fetch(dest=None, base_url=None, verify=True):
    """Fetch the missing files from ``base_url`` (default ``BASE_URL``) into ``dest``.

    ``dest`` defaults to the user cache. Each file is written to a temporary file in
    ``dest``, checked (checksum of its decompressed bytes when ``verify``), then renamed,
    so an interrupted or bad download never leaves a file under the final name.
    """
    dest = Path(dest) if dest is not None else cache_dir()
    base_url = base_url or BASE_URL
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the download folder {dest} ({e.strerror or e}); "
                        f"{_how_to_fix()}.") from None
    for key, name in FILES.items():
        if _find_file(dest, name):
            continue
        url = base_url.rstrip("/") + "/" + name + ".gz"
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".gz.part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
            try:
                data = _read_bytes(tmp)
            except DataError:
                raise DataError(f"the file downloaded from {url} is not a valid gzip file; "
                                f"{_how_to_fix()}.") from None
            if verify:
                digest = hashlib.sha256(data).hexdigest()
                if digest != SHA256[key]:
                    raise DataError(f"the file downloaded from {url} fails its checksum (SHA-256 "
                                    f"{digest}, expected {SHA256[key]}); {_how_to_fix()}.")
            os.replace(tmp, dest / (name + ".gz"))
        except DataError:
            raise
        except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
            raise DataError(f"could not download {url} into {dest} ({getattr(e, 'reason', None) or e}); "
                            f"{_how_to_fix()}.") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return dest


def load_fashion_mnist(data_dir=None, *, download=False, verify=True):
    """Fashion-MNIST as dict(train_x, train_y, test_x, test_y) of uint8 arrays.

    Images are (N, 28, 28), labels (N,) in 0..9, N = 60000 (train) and 10000 (test).
    ``download=True`` fetches the missing files when no folder has them: into the folder the
    user named (``data_dir`` or ``$EQUIV_DATA_DIR``), else into the user cache;
    ``verify=False`` skips the checksums (headers and shapes are always checked).
    """
    names = ", ".join(n + "[.gz]" for n in FILES.values())
    named_folder, named = _named(data_dir)
    if named_folder is not None:
        if not (download and not named_folder.exists()):
            _check_named(named_folder, named)
        if _complete(named_folder):
            folder = named_folder
        elif download:
            folder = fetch(named_folder, verify=verify)
        else:
            raise DataError(f"{named}: {named_folder} does not hold all of {names}; {_how_to_fix()}.")
    else:
        folder = find_data_dir()
        if folder is None:
            if not download:
                searched = ", ".join(str(f) for f in _folders(None))
                raise DataError(f"Fashion-MNIST not found (no folder among {searched} holds all of "
                                f"{names}); {_how_to_fix()}.")
            folder = fetch(cache_dir(), verify=verify)
    paths = {key: _find_file(folder, name) for key, name in FILES.items()}
    raw = {key: _read_bytes(p) for key, p in paths.items()}
    for key, p in paths.items():         # every file's kind first: swapped files are named as such
        _check_magic(raw[key], p, len(SHAPES[key]))
    return {key: _load_file(p, key, verify, raw[key]) for key, p in paths.items()}
