"""Fixtures of the suite: the adapter under test, its device, the Hypothesis profile."""
import os

import pytest

from equiv import registry
from equiv.core import FrameworkMissing


@pytest.fixture
def adapter(adapter_name):
    """The adapter class; a missing framework is a skip that prints the install command."""
    try:
        return registry.load(adapter_name)
    except FrameworkMissing as e:
        pytest.skip(f"{adapter_name}: framework not installed; install it with: {e.install}")


@pytest.fixture
def registered_adapter(adapter):
    """The adapter, for tests of what the project keeps about its own adapters (committed records,
    fingerprints, documented divergences): an external implementation has none of these."""
    if adapter.external:
        pytest.skip(f"{adapter.name} is an external implementation: this test is about the project's "
                    "registered adapters (committed records, fingerprints), which it has none of")
    return adapter


@pytest.fixture
def device(request):
    return request.config.getoption("bn_equiv_device", None) or os.environ.get("EQUIV_DEVICE", "cpu")


@pytest.fixture
def profile(request):
    """The Hypothesis profile the properties run under."""
    from equiv.strategies import default_profile
    return request.config.getoption("hypothesis_profile", None) or default_profile()
