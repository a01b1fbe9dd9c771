"""equiv.io: locations checked before work, atomic writes, merges under a lock. NumPy only."""
import json
import multiprocessing

import pytest

from equiv import io


def test_check_dir_and_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(io.OutputError, match="is a file, not a folder"):
        io.check_dir(tmp_path / "f")
    with pytest.raises(io.OutputError, match="is a file, not a folder"):
        io.check_dir(tmp_path / "f" / "sub")
    with pytest.raises(io.OutputError, match="is a folder, not a file"):
        io.check_file(tmp_path)
    with pytest.raises(io.OutputError, match="cannot write"):
        io.check_dir("/proc/x")
    assert io.check_dir(tmp_path / "new" / "deeper") and not (tmp_path / "new").exists()   # nothing created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]                               # probe removed


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = io.write_text(tmp_path / "a.json", "old\n")
    with pytest.raises(RuntimeError):
        with io.atomic_path(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def _writer(path, key, n):
    for i in range(n):
        io.locked_update(path, lambda cur: {**cur, f"{key}{i}": i})  # noqa: B023


def test_concurrent_merges_keep_every_row(tmp_path):
    path = tmp_path / "shared.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, k, 20)) for k in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(json.loads(path.read_text())) == sorted(f"{k}{i}" for k in "ab" for i in range(20))
