"""The project's own tests. Adapter selection, device and profile come from the pytest plugin
``equiv.pytest_plugin`` (registered by the installed package; loaded from here when the package
is only on PYTHONPATH) and the fixtures of ``equiv.suite.fixtures``."""
import os
from importlib.metadata import entry_points

from hypothesis import settings

from equiv.strategies import default_profile, profile_error
from equiv.suite.fixtures import adapter, device, profile, registered_adapter  # noqa: F401

if not profile_error():
    settings.load_profile(default_profile())

if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") or not any(
        ep.value == "equiv.pytest_plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["equiv.pytest_plugin"]
