"""Known divergences (equiv.known): each witness runs as a strict xfail.

A strict xfail turns red when the witness stops diverging: then a framework release
changed behaviour, and the finding must be re-measured and the list updated.
"""
import pytest

from equiv.known import KNOWN
from equiv.pytest_plugin import selected
from equiv.properties import PROPERTIES


def pytest_generate_tests(metafunc):
    if "divergence" in metafunc.fixturenames:
        params = [pytest.param(name, d, id=f"{name}-{d.id}",
                               marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=d.reason))
                  for d in KNOWN for name in selected(metafunc.config) if name in d.adapters]
        metafunc.parametrize("witness_adapter,divergence", params)


def test_witness_diverges(witness_adapter, divergence, device):
    from equiv import adapters
    from equiv.core import FrameworkMissing
    try:
        A = adapters.load(witness_adapter)
    except FrameworkMissing as e:
        pytest.skip(str(e))
    PROPERTIES[divergence.witness_property].check(A, divergence.witness, device)


@pytest.mark.parametrize("d", KNOWN, ids=lambda d: d.id)
def test_witness_lies_in_its_region(d):
    assert d.region(d.witness, d.witness_property)


def test_every_divergence_names_registered_adapters_and_properties():
    from equiv.adapters import known_names
    for d in KNOWN:
        assert set(d.adapters) <= set(known_names()), d.id
        assert set(d.properties) <= set(PROPERTIES), d.id
        assert d.witness_property in d.properties, d.id
