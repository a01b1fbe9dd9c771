"""Golden vectors (reference/data/vectors, made by equiv.vectors): they are what the oracle
gives, their checksums hold, and every selected adapter and an external implementation
pass the stored cases they can run (the per-adapter test is in equiv/suite/test_vectors.py). Only
test_regenerated_vectors_are_identical writes, into tmp_path."""
import hashlib
import os

import numpy as np
import pytest

from equiv import vectors
from equiv.registry import load

FOLDER = vectors.DEFAULT_DIR
INDEX = vectors.load_index(FOLDER)
RECORDS = INDEX["cases"]


def stored(record):
    return vectors.load_arrays(FOLDER, record)


def assert_same_arrays(actual, expected, what):
    assert sorted(actual) == sorted(expected), what
    for k in expected:
        a, e = actual[k], expected[k]
        assert a.dtype == e.dtype and a.shape == e.shape, (what, k)
        assert a.tobytes() == e.tobytes(), f"{what}: {k} differs (max |diff| {np.abs(a - e).max():.3g})"


def test_index_lists_the_modes_and_edge_cases():
    assert 30 <= len(RECORDS) <= 60
    assert len({r["name"] for r in RECORDS}) == len(RECORDS)
    assert {r["mode"] for r in RECORDS} == set(vectors.MODES)
    s = [r["settings"] for r in RECORDS]
    assert {x["dtype"] for x in s} == {"float64", "float32"} and {len(x["shape"]) for x in s} == {2, 4}
    assert any(x["shape"][0] == 2 for x in s) and any(x["constant_channel"] for x in s)
    assert {2.0, 4.0} <= {x["log10_offset"] for x in s} and {-3.0, 3.0} <= {x["log10_scale"] for x in s}
    assert {1e-12, 0.1} <= {x["eps"] for x in s}
    assert {0.0, 1.0} <= {x["new_batch_weight"] for x in s if x["steps"] == 3}


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["name"])
def test_stored_outputs_are_the_oracles(record):
    """From the stored inputs, the oracle and the tolerance model give the stored outputs and bounds,
    bit for bit (under any numpy)."""
    arrays = stored(record)
    recomputed = vectors.expected(vectors.case_of(record, arrays), record["mode"])
    assert_same_arrays(recomputed, arrays, record["name"])


def test_regenerated_vectors_are_identical(tmp_path):
    """Generating again gives the same index.json, byte for byte, and the same arrays."""
    vectors.generate(str(tmp_path))
    with open(os.path.join(FOLDER, vectors.INDEX), "rb") as f, open(tmp_path / vectors.INDEX, "rb") as g:
        assert f.read() == g.read()
    for record in RECORDS:
        assert_same_arrays(vectors.load_arrays(str(tmp_path), record), stored(record), record["name"])
    assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(FOLDER))


def test_checksums_match_the_files():
    files = {r["file"] for r in RECORDS}
    assert sorted(os.listdir(FOLDER)) == sorted(files | {vectors.INDEX})
    assert sum(os.path.getsize(os.path.join(FOLDER, f)) for f in os.listdir(FOLDER)) < 2 * 2 ** 20
    for record in RECORDS:
        arrays = stored(record)
        assert all(a.dtype == np.float64 for a in arrays.values())
        assert {k: hashlib.sha256(a.astype("<f8").tobytes()).hexdigest() for k, a in arrays.items()} \
            == record["arrays"], record["name"]


def run_all(adapter_cls, device="cpu"):
    return vectors.check_all(adapter_cls, device)


def test_external_correct_passes():
    results, failed = run_all(load("tests.planted:correct"))
    assert not failed, "\n".join(failed)
    status = {r["case"]: r["status"] for r in results}
    assert all(s == ("skipped" if n.startswith("gradients") else "passed") for n, s in status.items()), status


def test_external_planted_bug_fails():
    _, failed = run_all(load("tests.planted:eps_outside_sqrt"))
    assert failed


def test_check_reports_skips_and_documented(monkeypatch):
    """A hard-coded eps is a skip, a dtype the adapter lacks is a skip, a known divergence is 'documented'."""
    from equiv import known

    A = load("tests.planted:correct")
    record = next(r for r in RECORDS if r["name"] == "train-f64-2d")
    arrays = stored(record)
    assert vectors.check(A, record, arrays)["status"] == "passed"

    class HardCoded(A):
        def build(self, momentum, eps):
            super().build(momentum, eps)
            self.eps = 1e-3
    assert vectors.check(HardCoded, record, arrays)["status"] == "skipped"

    class Float32Only(A):
        dtypes = ("float32",)
    assert vectors.check(Float32Only, record, arrays)["status"] == "skipped"

    d = known.Divergence(id="test-region", implementations=(A.name,), properties=("train_forward",), reason="",
                         region=lambda c, p: c.channels == 3 and bool(np.array_equal(c.x, arrays["x"])),
                         witness=None, witness_property="train_forward")
    monkeypatch.setattr(known, "KNOWN", known.KNOWN + [d])
    assert vectors.check(A, record, arrays) == dict(case=record["name"], status="documented",
                                                     reason="test-region", worst=0.0)
