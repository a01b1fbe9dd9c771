"""Framework fingerprints: the installed release is compared with the fingerprint stored for
the same version (must be unchanged) or the nearest older one (changes are reported in
plain words); the comparison itself is tested on synthetic fingerprints."""
import copy
import warnings


from equiv import fingerprint as fpr


def _fp(version="1.0"):
    return {"adapter": "x", "framework": "x", "version": version,
            "conventions": {"new_batch_weight": 0.1, "running_var": "unbiased", "default_eps": 1e-5},
            "cases": {"train-f32": {"status": "ran", "dtype": "float32", "outputs": {"y": [0.5, -1.0, 2.0]}},
                      "grad-f64": {"status": "skipped", "dtype": "float64", "reason": "no gradients"}}}


def test_compare_names_changes_in_plain_words():
    old, new = _fp(), _fp("1.1")
    assert fpr.compare(old, new) == []
    new["conventions"]["running_var"] = "biased"
    new["cases"]["train-f32"]["outputs"]["y"][1] = -1.000003
    changes = fpr.compare(old, new)
    assert "running_var changed from unbiased to biased" in changes
    assert "max |Δy| 3e-06 on case train-f32" in changes


def test_compare_tolerates_a_few_ulps_only():
    old, new = _fp(), _fp()
    new["cases"]["train-f32"]["outputs"]["y"][2] = 2.0 * (1 + 4 * 2.0 ** -24)   # 4 ulps of float32
    assert fpr.compare(old, new) == []
    new["cases"]["train-f32"]["outputs"]["y"][2] = 2.0 * (1 + 64 * 2.0 ** -24)
    assert fpr.compare(old, new) == ["max |Δy| 8e-06 on case train-f32"]


def test_compare_reports_status_and_eps_changes():
    old, new = _fp(), copy.deepcopy(_fp())
    new["cases"]["grad-f64"] = {"status": "ran", "dtype": "float64", "outputs": {"dx": [0.0]}}
    new["conventions"]["default_eps"] = 1e-3
    changes = fpr.compare(old, new)
    assert "case grad-f64: skipped -> ran" in changes
    assert "default_eps changed from 1e-05 to 0.001" in changes


def test_a_field_absent_from_an_older_fingerprint_is_no_change():
    """A probe added later (debias, initial_stats) is absent from fingerprints stored before it
    (flax 0.10.2's, torch releases not installed here): not compared, not a change."""
    import json
    old, new = _fp(), _fp("1.1")
    new["conventions"].update(debias="zero", initial_stats="0, 0")
    assert fpr.compare(old, new) == []
    stored = json.loads(fpr.path_for("flax.linen", "0.10.2").read_text())
    assert "debias" not in stored["conventions"]
    newer = copy.deepcopy(stored)
    newer["conventions"].update(debias="none", initial_stats="0, 1")
    assert fpr.compare(stored, newer) == []
    newer["conventions"]["running_var"] = "unbiased"
    assert fpr.compare(stored, newer) == ["running_var changed from biased to unbiased"]


def test_save_refuses_failed_probes_and_losing_cases(tmp_path):
    import pytest
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


def test_no_stored_fingerprint_holds_a_failed_probe():
    import json
    for path in sorted(fpr.DIR.glob("*/*.json")):
        fp = json.loads(path.read_text())
        bad = [f for f, v in fp["conventions"].items() if isinstance(v, str) and v.startswith("probe failed")]
        assert "probe_failures" not in fp and not bad, (path, bad)


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
        warnings.warn(f"{adapter.name} {fp['version']} against {version}: " + "; ".join(changes))
