"""Framework fingerprints: the installed release is compared with the fingerprint stored for
the same version (must be unchanged) or the nearest older one (changes are reported in
plain words). The comparison is tested on synthetic fingerprints, on the stored ones with a
drift planted in their outputs, and on NumPy batch norms with a planted change of numerics
(another eps, the other momentum convention, the fast variance, a drift of 10× the bound)."""
import copy
import json
import warnings

import numpy as np
import pytest

from equiv import fingerprint as fpr
from equiv import tolerance as tol
from equiv.external import declared_conventions, function_adapter
from equiv.vectors import DEFAULT_DIR, load_arrays, load_index
from tests import planted


def _fp(version="1.0"):
    return {"format": 2, "adapter": "x", "framework": "x", "version": version,
            "conventions": {"new_batch_weight": 0.1, "running_var": "unbiased", "default_eps": 1e-5},
            "cases": {"train-f32": {"status": "ran", "dtype": "float32", "bands": {"y": "≤1"},
                                    "outputs": {"y": [0.5, -1.0, 2.0]}},
                      "grad-f64": {"status": "skipped", "dtype": "float64", "reason": "no gradients"}}}


def test_bands_and_when_they_moved():
    assert [fpr.band(r) for r in (0.0, 0.29, 1.0, 1.0001, 8.0, 9.0, 64.0, 65.0, np.inf)] == \
        ["≤1", "≤1", "≤1", "≤8", "≤8", "≤64", "≤64", ">64", "non-finite"]
    assert fpr.band(tol.excess([np.nan], [1.0], [1e-7])) == "non-finite"
    assert not fpr.moved("≤8", "≤64") and not fpr.moved("≤64", ">64")      # one band of slack beyond the bound
    assert fpr.moved("≤1", "≤8") and fpr.moved("≤8", "≤1")                  # the bound itself has none
    assert fpr.moved("≤8", ">64") and fpr.moved(">64", "non-finite") and fpr.moved("non-finite", "≤1")


def test_compare_names_changes_in_plain_words():
    old, new = _fp(), _fp("1.1")
    assert fpr.compare(old, new) == []
    new["conventions"]["running_var"] = "biased"
    new["cases"]["train-f32"]["bands"]["y"] = "≤64"
    changes = fpr.compare(old, new)
    assert changes == ["running_var changed from unbiased to biased", "y on case train-f32: error band ≤1 -> ≤64"]


def test_raw_outputs_are_not_compared():
    """The outputs are one machine's observation: another CPU's last bits (or more) are no change."""
    old, new = _fp(), _fp()
    new["cases"]["train-f32"]["outputs"]["y"] = [0.5000001, -1.0, 2.1]
    new["observed_on"] = {"machine": "x86_64", "cpu": "another", "settings": {}}
    assert fpr.compare(old, new) == []
    del new["cases"]["train-f32"]["bands"]["y"]
    assert fpr.compare(old, new) == ["y on case train-f32 is no longer produced"]


def test_compare_reports_status_and_eps_changes():
    old, new = _fp(), copy.deepcopy(_fp())
    new["cases"]["grad-f64"] = {"status": "ran", "dtype": "float64", "bands": {"dx": "≤1"}}
    new["conventions"]["default_eps"] = 1e-3
    changes = fpr.compare(old, new)
    assert "case grad-f64: skipped -> ran" in changes
    assert "default_eps changed from 1e-05 to 0.001" in changes


def test_a_field_absent_from_an_older_fingerprint_is_no_change():
    """A probe added later (debias, initial_stats) is absent from fingerprints stored before it,
    and a format-1 fingerprint (raw outputs, no bands) has no bands: neither is compared."""
    old, new = _fp(), _fp("1.1")
    new["conventions"].update(debias="zero", initial_stats="0, 0")
    assert fpr.compare(old, new) == []
    stored = json.loads(fpr.path_for("flax.linen", "0.10.2").read_text())
    older = copy.deepcopy(stored)
    for field in ("debias", "initial_stats"):
        older["conventions"].pop(field, None)
    for case in older["cases"].values():
        case.pop("bands", None)
    newer = copy.deepcopy(stored)
    newer["conventions"].update(debias="none", initial_stats="0, 1")
    for case in newer["cases"].values():
        case["bands"] = {k: ">64" for k in case.get("bands", {})}
    assert fpr.compare(older, newer) == []
    newer["conventions"]["running_var"] = "unbiased"
    assert fpr.compare(older, newer) == ["running_var changed from biased to unbiased"]


def test_save_refuses_failed_probes_and_losing_cases(tmp_path):
    from equiv import io
    fpr.save(_fp("1.0"), tmp_path)
    fewer = _fp("1.0")
    del fewer["cases"]["grad-f64"]
    with pytest.raises(io.WouldLoseData, match="grad-f64"):
        fpr.save(fewer, tmp_path)
    with pytest.raises(ValueError, match="probes failed"):
        fpr.save(dict(_fp("1.1"), probe_failures={"default_eps": "AttributeError: x"}), tmp_path)
    assert not fpr.path_for("x", "1.1", tmp_path).exists()
    assert fpr.compare(_fp(), dict(_fp(), probe_failures={"default_eps": "E: x"})) == \
        ["default_eps: probe failed (E: x)"]


def test_baseline_picks_same_or_nearest_older(tmp_path):
    for v in ("0.9.0", "0.10.2", "0.12.8"):
        fpr.save(dict(_fp(v), adapter="a"), tmp_path)
    assert fpr.baseline("a", "0.10.2", tmp_path)[0] == "0.10.2"
    assert fpr.baseline("a", "0.11.0", tmp_path)[0] == "0.10.2"      # numeric, not string, order
    assert fpr.baseline("a", "0.13.0", tmp_path)[0] == "0.12.8"
    assert fpr.baseline("a", "0.8.0", tmp_path) == (None, None)


def _stored():
    return [(p, json.loads(p.read_text())) for p in sorted(fpr.DIR.glob("*/*.json"))]


def test_no_stored_fingerprint_holds_a_failed_probe():
    for path, fp in _stored():
        bad = [f for f, v in fp["conventions"].items() if isinstance(v, str) and v.startswith("probe failed")]
        assert "probe_failures" not in fp and not bad, (path, bad)


def _vectors():
    return {r["name"]: load_arrays(DEFAULT_DIR, r) for r in load_index()["cases"]}


def test_stored_fingerprints_hold_bands_that_their_outputs_give():
    """Every stored fingerprint is of format 2, names the machine its raw outputs were observed on,
    and each band is the one its outputs give against the stored oracle and bound."""
    vectors = _vectors()
    for path, fp in _stored():
        assert fp.get("format") == fpr.FORMAT and fp["observed_on"]["machine"], path
        est = fp["conventions"].get("running_var")
        for name, case in fp["cases"].items():
            if case["status"] == "ran":
                got = fpr.bands(case["outputs"], vectors[name], est)
                assert case["bands"] == got, (path, name)


def _drift(outputs, arrays, est, factor):
    """The outputs moved by factor × their bound (each element away from the oracle)."""
    moved = {}
    for key, value in outputs.items():
        stored = key.replace("running_var_", f"running_var_{est}_")
        want = arrays[stored]
        bound = np.broadcast_to(arrays[f"bound_{stored}"], want.shape)
        value = np.asarray(value, dtype=np.float64)
        moved[key] = value + np.where(value >= want, 1, -1) * factor * bound
    return moved


def test_a_drift_planted_in_stored_outputs_is_reported_and_rounding_is_not():
    """On every stored fingerprint: outputs moved by 10× their bound (an order of magnitude beyond
    the band "≤1") are reported, case by case; moved by a quarter of it (more than rounding moves them:
    every stored r is ≤ 0.3) they are not."""
    vectors = _vectors()
    for path, fp in _stored():
        est = fp["conventions"].get("running_var")
        far, near = copy.deepcopy(fp), copy.deepcopy(fp)
        for name, case in fp["cases"].items():
            if case["status"] == "ran":
                far["cases"][name]["bands"] = fpr.bands(_drift(case["outputs"], vectors[name], est, 10),
                                                        vectors[name], est)
                near["cases"][name]["bands"] = fpr.bands(_drift(case["outputs"], vectors[name], est, 0.25),
                                                         vectors[name], est)
        ran = [(n, k) for n, c in fp["cases"].items() if c["status"] == "ran" for k in c["bands"]]
        assert ran, path
        assert fpr.compare(fp, far) == [f"{k} on case {n}: error band ≤1 -> ≤64" for n, k in ran], path
        assert fpr.compare(fp, near) == [], path


# NumPy batch norms with PyTorch's conventions and a planted change of numerics, each with the correct
# backward; fingerprinted as an external implementation would be, the correct one saved and read back


def _plant(**kw):
    def fn(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
        return planted._bn(x, gamma, beta, running_mean, running_var, training=training, momentum=momentum,
                           eps=kw.get("eps", eps), **{k: v for k, v in kw.items() if k != "eps"})
    return fn


def _drifted(factor):
    """y moved by factor × the train_forward bound in training mode."""
    def fn(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):
        y, m, v = planted.correct(x, gamma, beta, running_mean, running_var, training=training,
                                  momentum=momentum, eps=eps)
        if training:
            y = y + factor * tol.train_forward(x, gamma, beta, eps, x.dtype.name)
        return y.astype(x.dtype), m, v
    return fn


PLANTED = {"correct": _plant(), "eps 1e-3 whatever the layer is told": _plant(eps=1e-3),
           "momentum weighs the old value": _plant(flip_momentum=True),
           "fast variance E[x²] − E[x]²": _plant(var_fn=planted._fast_var),
           "y drifted by 10× the bound": _drifted(10.0), "y drifted by 1/4 of the bound": _drifted(0.25)}


def _take(what):
    fn = PLANTED[what]
    fn.backward = planted._backward
    A = function_adapter("planted:" + what, fn, declared_conventions(None, for_function=True))
    with np.errstate(all="ignore"):
        return fpr.take(A)


@pytest.fixture(scope="module")
def stored_correct(tmp_path_factory):
    root = tmp_path_factory.mktemp("fingerprints")
    fp = _take("correct")
    fpr.save(dict(fp, adapter="planted"), root)
    version, stored = fpr.baseline("planted", fp["version"], root)
    assert version == fp["version"] and fpr.compare(stored, fp) == []
    return stored


@pytest.mark.parametrize("what,reported", [
    ("eps 1e-3 whatever the layer is told", ["default_eps changed from 1e-05 to 0.001",
                                             "y on case train-f64-2d: error band ≤1 -> >64",
                                             "y on case infer-f32-2d: error band ≤1 -> >64"]),
    ("momentum weighs the old value", ["new_batch_weight changed from 0.1 to 0.9",
                                       "running_mean_step1 on case running-f64-2d: error band ≤1 -> >64",
                                       "running_var_step3 on case running-f32-4d: error band ≤1 -> >64"]),
    ("fast variance E[x²] − E[x]²", ["variance changed from two-pass to fast",
                                     "y on case train-f32-offset1e4: error band ≤1 -> non-finite",
                                     "running_var_step1 on case running-f32-offset1e4: error band ≤1 -> >64"]),
    ("y drifted by 10× the bound", ["y on case train-f64-2d: error band ≤1 -> ≤64",
                                    "y on case train-f32-offset1e4: error band ≤1 -> ≤64"]),
    ("y drifted by 1/4 of the bound", []),
])
def test_a_planted_change_of_numerics_is_reported(stored_correct, what, reported):
    changes = fpr.compare(stored_correct, _take(what))
    assert set(reported) <= set(changes), changes
    assert bool(changes) == bool(reported), changes


def test_installed_release_matches_its_fingerprint(registered_adapter):
    adapter = registered_adapter
    fp = fpr.take(adapter)
    version, stored = fpr.baseline(adapter.name, fp["version"])
    assert stored is not None, (f"no fingerprint for {adapter.name} {fp['version']} or older: "
                                f"run `equiv fingerprint --save --adapters {adapter.name}`")
    changes = fpr.compare(stored, fp)
    if version == fp["version"]:
        assert not changes, f"{adapter.name} {version} changed: " + "; ".join(changes)
    elif changes:
        warnings.warn(f"{adapter.name} {fp['version']} against {version}: " + "; ".join(changes), stacklevel=1)
