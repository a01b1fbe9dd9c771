"""The committed measured conventions (reference/data/conventions.json, .md) are what the
probes measure now, for every installed adapter; the Markdown is generated from the JSON.
Regenerate with `equiv conventions` in each tox env (records merge)."""
import json
from pathlib import Path

import pytest

import reference
from equiv.probes import PROBES, matches, measure
from equiv.registry import known_names
from equiv.tables import conventions_markdown

DATA = Path(reference.__file__).parent / "data"


def _committed():
    path = DATA / "conventions.json"
    if not path.exists():
        pytest.fail("reference/data/conventions.json is missing: run `equiv conventions` in each tox env")
    return json.loads(path.read_text())


def test_markdown_is_generated_from_json():
    assert (DATA / "conventions.md").read_text() == conventions_markdown(_committed())


def test_no_failed_probe_is_committed():
    failed = [(n, f, v) for n, r in _committed().items() for f, v in r.items()
              if f == "probe_failures" or (isinstance(v, str) and v.startswith("probe failed"))]
    assert not failed, f"failed probes in reference/data/conventions.json: {failed}"


def test_every_registered_adapter_has_a_record():
    """Adapters and execution paths (equiv.paths) alike."""
    assert sorted(_committed()) == sorted(known_names())


def test_committed_record_matches_measurement(registered_adapter):
    adapter = registered_adapter
    committed = _committed().get(adapter.name)
    assert committed, f"no committed record for {adapter.name}: run `equiv conventions --adapters {adapter.name}`"
    measured = measure(adapter)
    assert "probe_failures" not in measured, measured.get("probe_failures")
    diffs = [f"{f}: committed {committed[f]!r}, measured {measured[f]!r}"
             for f in PROBES if not matches(f, measured[f], committed[f])]
    assert not diffs, f"{adapter.name}: " + "; ".join(diffs)


def test_findings_md_is_generated_from_data():
    from equiv.findings import render
    from equiv.known import KNOWN
    assert (DATA / "findings.md").read_text() == render(_committed(), KNOWN), \
        "reference/data/findings.md is stale: run `equiv findings`"


def test_porting_guide_is_generated_from_data():
    from equiv.porting import guide
    path = Path(reference.__file__).parent.parent / "docs" / "porting.md"
    assert path.read_text() == guide(_committed()), "docs/porting.md is stale: run `equiv porting`"


def test_two_envs_writing_at_once_keep_both_rows(tmp_path):
    """`equiv conventions --data D` from two processes at the same time (one per tox env):
    both print "written" and the file holds both rows (the merge runs under a lock)."""
    import importlib.util
    import os
    import subprocess
    import sys
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch; install it with: pip install torch==2.13.0")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent)]
                                                      + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    procs = [subprocess.Popen([sys.executable, "-m", "equiv", "conventions", "--adapters", name, "--data",
                               str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("torch.builtin", "torch.scratch")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    merged = json.loads((tmp_path / "conventions.json").read_text())
    assert sorted(merged) == ["torch.builtin", "torch.scratch"]
    assert (tmp_path / "conventions.md").read_text() == conventions_markdown(merged)


def test_conventions_refuse_an_older_release(tmp_path, capsys):
    """Rows measured with a newer release are not replaced by an older one's (the jax-old env)."""
    import importlib.util

    from equiv import cli
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch; install it with: pip install torch==2.13.0")
    row = dict(_committed()["torch.scratch"], version="99.0")
    (tmp_path / "conventions.json").write_text(json.dumps({"torch.scratch": row}))
    before = (tmp_path / "conventions.json").read_bytes()
    assert cli.main(["conventions", "--adapters", "torch.scratch", "--data", str(tmp_path)]) == 2
    assert "newer release" in capsys.readouterr().err
    assert (tmp_path / "conventions.json").read_bytes() == before and not (tmp_path / "conventions.md").exists()


def test_each_preset_declares_what_its_built_in_measures():
    """A preset is its framework's built-in layer as measured (reference/data/conventions.json): the
    running variance, default eps and momentum, variance algorithm and what a batch of one gives (an
    error in PyTorch, beta in Keras, Flax and MXNet), not a declaration of its own."""
    from equiv.conventions import PRESETS
    committed = _committed()
    built_in = {"torch": "torch.builtin", "keras": "tf.keras", "flax": "flax.linen", "mxnet": "mxnet.gluon"}
    assert set(PRESETS) == set(built_in)
    for preset, adapter in built_in.items():
        measured, conv = committed[adapter], PRESETS[preset]
        for field in ("batch_of_one", "running_var", "variance", "channel_axis"):
            assert getattr(conv, field) == measured[field], (preset, field, measured[field])
        assert matches("default_eps", measured["default_eps"], conv.default_eps), preset
        assert matches("new_batch_weight", measured["new_batch_weight"], conv.default_new_batch_weight), preset
