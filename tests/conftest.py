"""Adapter selection, device and Hypothesis profile for the test suite.

--adapters a,b,...  or env EQUIV_ADAPTERS (default: every adapter whose framework is
installed); an external implementation is ``package.module:obj``. --device cpu|cuda or
env EQUIV_DEVICE. Hypothesis profile: --hypothesis-profile or env EQUIV_PROFILE.
"""
import os

import pytest
from hypothesis import settings

from equiv import adapters as registry
from equiv.core import FrameworkMissing
from equiv.strategies import default_profile

settings.load_profile(default_profile())


def pytest_addoption(parser):
    parser.addoption("--adapters", default=None,
                     help="comma-separated adapter names or package.module:obj (env EQUIV_ADAPTERS); "
                          "default: every adapter whose framework is installed")
    parser.addoption("--device", default=None, help="cpu or cuda (env EQUIV_DEVICE); default cpu")


def selected_adapters(config):
    spec = config.getoption("--adapters") or os.environ.get("EQUIV_ADAPTERS")
    if not spec:
        return registry.available()
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if ":" not in n and n not in registry.REGISTRY]
    if unknown:
        raise pytest.UsageError(f"unknown adapter(s) {', '.join(unknown)}; known adapters: "
                                f"{', '.join(registry.known_names())} (or package.module:obj)")
    return names


def pytest_configure(config):
    config.selected_adapters = selected_adapters(config)


def pytest_report_header(config):
    return [f"bn-equiv adapters: {', '.join(config.selected_adapters) or '(none installed)'}; "
            f"hypothesis profile: {settings.default._current_profile if hasattr(settings.default, '_current_profile') else default_profile()}"]


def pytest_generate_tests(metafunc):
    if "adapter_name" in metafunc.fixturenames:
        metafunc.parametrize("adapter_name", metafunc.config.selected_adapters)


@pytest.fixture
def adapter(adapter_name):
    """The adapter class; a missing framework is a skip that prints the install command."""
    try:
        return registry.load(adapter_name)
    except FrameworkMissing as e:
        pytest.skip(f"{adapter_name}: framework not installed; install it with: {e.install}")


@pytest.fixture
def device(request):
    return request.config.getoption("--device") or os.environ.get("EQUIV_DEVICE", "cpu")
