"""The committed measured conventions (reference/data/conventions.json, .md) are what the
probes measure now, for every installed adapter; the Markdown is generated from the JSON.
Regenerate with `equiv conventions` in each tox env (records merge)."""
import json
from pathlib import Path

import pytest

import reference
from equiv.adapters import known_names
from equiv.probes import PROBES, matches, measure
from equiv.tables import conventions_markdown

DATA = Path(reference.__file__).parent / "data"


def _committed():
    path = DATA / "conventions.json"
    if not path.exists():
        pytest.fail("reference/data/conventions.json is missing: run `equiv conventions` in each tox env")
    return json.loads(path.read_text())


def test_markdown_is_generated_from_json():
    assert (DATA / "conventions.md").read_text() == conventions_markdown(_committed())


def test_every_registered_adapter_has_a_record():
    """Adapters and execution paths (equiv.paths) alike."""
    assert sorted(_committed()) == sorted(known_names())


def test_committed_record_matches_measurement(registered_adapter):
    adapter = registered_adapter
    committed = _committed().get(adapter.name)
    assert committed, f"no committed record for {adapter.name}: run `equiv conventions --adapters {adapter.name}`"
    measured = measure(adapter)
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
