"""Fashion-MNIST loading (equiv/data.py): tiny IDX files through every path, and the real set."""
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from equiv import data

TINY_SHAPES = {"train_x": (8, 28, 28), "train_y": (8,), "test_x": (4, 28, 28), "test_y": (4,)}
REAL_DIR = Path("/usr/share/datasets/fashion-mnist")


def tiny_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.integers(0, 256 if k.endswith("_x") else 10, size=s, dtype=np.uint8)
            for k, s in TINY_SHAPES.items()}


def idx_bytes(a):
    """The decompressed IDX bytes of a uint8 array (as write_idx writes them)."""
    return bytes([0, 0, 8, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()


def write_set(folder, arrays, gz=True):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in data.FILES.items():
        data.write_idx(folder / (name + (".gz" if gz else "")), arrays[key], gz=gz)
    return folder


def assert_actionable(err, *words):
    msg = str(err.value)
    assert isinstance(err.value, data.DataError)
    assert "\n" not in msg and msg.endswith(".")
    for opt in ("--data-dir", "EQUIV_DATA_DIR", "apt-get install dataset-fashion-mnist",
                str(data.cache_dir()), "--download"):
        assert opt in msg, (opt, msg)
    for w in words:
        assert w in msg, (w, msg)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Isolated lookup folders, tiny expected shapes and their checksums; returns the arrays."""
    arrays = tiny_arrays()
    monkeypatch.setattr(data, "SHAPES", TINY_SHAPES)
    monkeypatch.setattr(data, "SHA256", {k: hashlib.sha256(idx_bytes(a)).hexdigest()
                                         for k, a in arrays.items()})
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(data, "BASE_URL", "http://invalid.invalid/")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("EQUIV_DATA_DIR", raising=False)
    return arrays


def check_equal(loaded, arrays):
    assert set(loaded) == {"train_x", "train_y", "test_x", "test_y"}
    for k, a in arrays.items():
        assert loaded[k].dtype == np.uint8
        np.testing.assert_array_equal(loaded[k], a)


# --- IDX format -----------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_and_header(tmp_path, gz):
    imgs = tiny_arrays()["train_x"]
    labels = tiny_arrays()["train_y"]
    p = data.write_idx(tmp_path / "imgs", imgs, gz=gz)
    raw = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:16] == bytes.fromhex("00000008 0000001c 0000001c")
    np.testing.assert_array_equal(data.read_idx(p), imgs)
    q = data.write_idx(tmp_path / "labels", labels, gz=gz)
    raw = gzip.decompress(q.read_bytes()) if gz else q.read_bytes()
    assert raw[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x08"
    np.testing.assert_array_equal(data.read_idx(q), labels)


# --- loading and lookup ---------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_load_explicit_dir(tiny, tmp_path, gz):
    folder = write_set(tmp_path / "explicit", tiny, gz=gz)
    assert data.find_data_dir(folder) == folder
    check_equal(data.load_fashion_mnist(folder), tiny)


def test_dotted_file_names(tiny, tmp_path):
    folder = tmp_path / "dotted"
    folder.mkdir()
    for key, name in data.FILES.items():
        data.write_idx(folder / name.replace("-idx", ".idx"), tiny[key], gz=False)
    check_equal(data.load_fashion_mnist(folder), tiny)


def test_lookup_order(tiny, tmp_path, monkeypatch):
    explicit, env, system = (write_set(tmp_path / n, tiny) for n in ("explicit", "env", "system"))
    xdg = write_set(tmp_path / "xdg" / "bn-equiv" / "fashion-mnist", tiny)
    home = write_set(tmp_path / "home" / ".cache" / "bn-equiv" / "fashion-mnist", tiny)
    monkeypatch.setenv("EQUIV_DATA_DIR", str(env))
    assert data.find_data_dir(explicit) == explicit
    assert data.find_data_dir() == env
    assert data.find_data_dir(tmp_path / "empty") is None         # an explicit folder is strict
    monkeypatch.delenv("EQUIV_DATA_DIR")
    assert data.find_data_dir() == system
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "nothing")
    assert data.find_data_dir() == xdg
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.find_data_dir() == home
    check_equal(data.load_fashion_mnist(), tiny)
    (home / "t10k-labels-idx1-ubyte.gz").unlink()                   # an incomplete folder is skipped
    assert data.find_data_dir() is None


def test_missing_everywhere(tiny, tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist()
    assert_actionable(err, "not found", str(data.SYSTEM_DIR), str(data.cache_dir()))


# --- download -------------------------------------------------------------------------

def test_download_file_url(tiny, tmp_path, monkeypatch):
    server = write_set(tmp_path / "server", tiny)
    monkeypatch.setattr(data, "BASE_URL", server.as_uri() + "/")
    check_equal(data.load_fashion_mnist(download=True), tiny)
    cache = tmp_path / "xdg" / "bn-equiv" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(n + ".gz" for n in data.FILES.values())
    assert data.find_data_dir() == cache
    (server / "train-images-idx3-ubyte.gz").unlink()                # now served from the cache
    check_equal(data.load_fashion_mnist(download=True), tiny)


def test_download_unreachable(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "BASE_URL", (tmp_path / "no-server").as_uri() + "/")
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(download=True)
    assert_actionable(err, "could not download", "train-images-idx3-ubyte.gz")


def test_download_bad_checksum_leaves_nothing(tiny, tmp_path, monkeypatch):
    server = write_set(tmp_path / "server", tiny_arrays(seed=1))    # other content
    monkeypatch.setattr(data, "BASE_URL", server.as_uri() + "/")
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(download=True)
    assert_actionable(err, "fails its checksum")
    assert list((tmp_path / "xdg" / "bn-equiv" / "fashion-mnist").iterdir()) == []


# --- damaged files --------------------------------------------------------------------

def damage(folder, key, raw=None, gz_bytes=None):
    """Replace one file of a set by given decompressed bytes (written gzipped) or gzip bytes."""
    p = folder / (data.FILES[key] + ".gz")
    p.write_bytes(gz_bytes if gz_bytes is not None else gzip.compress(raw))
    return p


def load_error(folder, **kw):
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(folder, **kw)
    return err


def test_truncated_data(tiny, tmp_path):
    folder = write_set(tmp_path / "d", tiny)
    p = damage(folder, "train_x", raw=idx_bytes(tiny["train_x"])[:-100])
    assert_actionable(load_error(folder), str(p), "truncated")


def test_truncated_header(tiny, tmp_path):
    folder = write_set(tmp_path / "d", tiny)
    p = damage(folder, "test_x", raw=b"\x00\x00\x08\x03\x00\x00")
    assert_actionable(load_error(folder), str(p), "truncated")


def test_truncated_gzip(tiny, tmp_path):
    folder = write_set(tmp_path / "d", tiny)
    gz = gzip.compress(idx_bytes(tiny["train_x"]))
    p = damage(folder, "train_x", gz_bytes=gz[: len(gz) // 2])
    assert_actionable(load_error(folder), str(p), "truncated gzip")


@pytest.mark.parametrize("how", ["flipped", "not-gzip"])
def test_corrupt_gzip(tiny, tmp_path, how):
    folder = write_set(tmp_path / "d", tiny)
    gz = bytearray(gzip.compress(idx_bytes(tiny["train_x"])))
    if how == "flipped":
        gz[-6] ^= 0xFF                                              # inside the CRC32 trailer
    else:
        gz = b"<html>not found</html>"
    p = damage(folder, "train_x", gz_bytes=bytes(gz))
    assert_actionable(load_error(folder), str(p), "corrupt gzip")


def test_wrong_magic(tiny, tmp_path):
    folder = write_set(tmp_path / "d", tiny)
    raw = bytearray(idx_bytes(tiny["train_y"]))
    raw[2] = 0x09                                                   # signed byte, not ubyte
    p = damage(folder, "train_y", raw=bytes(raw))
    assert_actionable(load_error(folder), str(p), "wrong magic number", "0x00000901")


def test_wrong_shape(tiny, tmp_path):
    folder = write_set(tmp_path / "d", tiny)
    p = damage(folder, "test_x", raw=idx_bytes(np.zeros((4, 27, 27), np.uint8)))
    assert_actionable(load_error(folder, verify=False), str(p), "wrong shape", "(4, 27, 27)")


def test_extra_bytes(tiny, tmp_path):
    folder = write_set(tmp_path / "d", tiny)
    p = damage(folder, "test_y", raw=idx_bytes(tiny["test_y"]) + b"\x00")
    assert_actionable(load_error(folder), str(p), "corrupt")


def test_labels_out_of_range(tiny, tmp_path):
    folder = write_set(tmp_path / "d", tiny)
    p = damage(folder, "test_y", raw=idx_bytes(np.array([0, 1, 10, 2], np.uint8)))
    assert_actionable(load_error(folder, verify=False), str(p), "labels outside 0..9")


def test_checksum_mismatch_and_verify_false(tiny, tmp_path):
    folder = write_set(tmp_path / "d", tiny)
    changed = tiny["train_x"].copy()
    changed[3, 10, 10] ^= 1
    p = damage(folder, "train_x", raw=idx_bytes(changed))
    assert_actionable(load_error(folder), str(p), "fails its checksum", data.SHA256["train_x"])
    np.testing.assert_array_equal(data.load_fashion_mnist(folder, verify=False)["train_x"], changed)


def test_unreadable_file(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.read_idx(tmp_path)                                     # a folder, not a file
    assert_actionable(err, "cannot be read")


def test_cache_dir_honours_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert data.cache_dir() == tmp_path / "x" / "bn-equiv" / "fashion-mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert data.cache_dir() == tmp_path / "h" / ".cache" / "bn-equiv" / "fashion-mnist"


# --- the real data set ----------------------------------------------------------------

@pytest.mark.skipif(not REAL_DIR.is_dir(), reason="Fashion-MNIST not installed; install it with: "
                    "apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist():
    d = data.load_fashion_mnist(REAL_DIR)                           # verifies the checksums
    assert d["train_x"].shape == (60000, 28, 28) and d["test_x"].shape == (10000, 28, 28)
    assert d["train_y"].shape == (60000,) and d["test_y"].shape == (10000,)
    assert all(v.dtype == np.uint8 for v in d.values())
    np.testing.assert_array_equal(np.bincount(d["train_y"], minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(d["test_y"], minlength=10), [1000] * 10)
    assert d["train_x"].max() == 255 and d["train_x"].min() == 0


def test_explicit_folder_without_files_is_an_error(tmp_path):
    with pytest.raises(data.DataError, match="does not hold all of"):
        data.load_fashion_mnist(tmp_path)


def test_cli_missing_data_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "equiv", "data", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("equiv: error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "--data-dir" in r.stderr and "dataset-fashion-mnist" in r.stderr


# --- a folder the user names is the user's choice ---------------------------------------

def test_env_folder_is_strict(tiny, tmp_path, monkeypatch):
    write_set(tmp_path / "system", tiny)                            # a copy that must not be taken
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("EQUIV_DATA_DIR", str(tmp_path / "empty"))
    assert data.find_data_dir() is None
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist()
    assert_actionable(err, "EQUIV_DATA_DIR=", "does not hold all of")
    monkeypatch.setenv("EQUIV_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist()
    assert_actionable(err, "does not exist")


def test_download_fills_the_named_folder(tiny, tmp_path, monkeypatch):
    server = write_set(tmp_path / "server", tiny)
    monkeypatch.setattr(data, "BASE_URL", server.as_uri() + "/")
    check_equal(data.load_fashion_mnist(tmp_path / "mine", download=True), tiny)
    assert data.find_data_dir(tmp_path / "mine") == tmp_path / "mine"
    assert not data.cache_dir().exists()


def test_named_folder_is_a_file_or_unreadable(tiny, tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(tmp_path / "f")
    assert_actionable(err, "is a file, not a folder")
    (tmp_path / "locked").mkdir()

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(data.os, "listdir", denied)              # as root a chmod would not stop us
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(tmp_path / "locked")
    assert_actionable(err, "cannot read the folder", "Permission denied")


def test_labels_with_the_images_magic_are_named_swapped(tiny, tmp_path):
    folder = write_set(tmp_path / "d", tiny)
    data.write_idx(folder / "train-labels-idx1-ubyte.gz", tiny["train_x"])     # an images file
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(folder)
    assert_actionable(err, "train-labels-idx1-ubyte.gz", "0x00000803", "swapped")
    assert "bytes of data" not in str(err.value)
