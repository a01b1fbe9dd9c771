"""The pytest plugin (entry point ``pytest11``: ``bn_equiv``), so that an installed bn-equiv runs its
suite against any implementation, in any repository:

    pytest --pyargs equiv.suite --bn-equiv-impls mypkg.bn:batch_norm

Options, prefixed with the project's name as Hypothesis prefixes its own: ``--bn-equiv-impls a,b,...``
(alias ``--adapters``; env ``EQUIV_ADAPTERS``; default: every registered adapter whose framework is
installed; ``package.module:obj[@preset]`` for your own) and ``--bn-equiv-device cpu|cuda`` (alias
``--bn-device``; env ``EQUIV_DEVICE``). The Hypothesis profile is ``--hypothesis-profile`` or ``EQUIV_PROFILE``
(default ``ci``: derandomized, the same verdict on every run). Tests that take an ``adapter_name`` are run once
per selected adapter; the fixtures are in ``equiv.suite.fixtures``. Nothing here runs unless a
test asks for an adapter or the options are given, so other projects' test runs are unaffected.
"""
import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("bn-equiv", "bn-equiv: batch-norm implementations under test")
    group.addoption("--bn-equiv-impls", "--adapters", dest="bn_equiv_impls", default=None, metavar="NAMES",
                    help="comma-separated adapter names or package.module:obj[@preset] (alias --adapters; env "
                         "EQUIV_ADAPTERS); default: every registered adapter whose framework is installed")
    group.addoption("--bn-equiv-device", "--bn-device", dest="bn_equiv_device", default=None, metavar="DEVICE",
                    help="cpu or cuda (alias --bn-device; env EQUIV_DEVICE); default cpu")


def _explicit(config):
    return config.getoption("--bn-equiv-impls") is not None or os.environ.get("EQUIV_ADAPTERS") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    _register_profiles(config)
    config.addinivalue_line("markers", "registered_only: applies to the project's registered adapters only")
    if _explicit(config):
        from equiv.selection import SelectionError, adapter_names
        try:
            config.selected_adapters = adapter_names(config.getoption("--bn-equiv-impls"))
        except SelectionError as e:
            raise pytest.UsageError(str(e)) from e
        from equiv.strategies import profile_error
        if profile_error():
            raise pytest.UsageError(profile_error())


PROFILE_NAMES = ("dev", "ci", "thorough", "mutation")   # equiv.strategies.PROFILES, without importing it


def _register_profiles(config):
    """bn-equiv's Hypothesis profiles, registered before Hypothesis's own plugin loads the one named by
    ``--hypothesis-profile`` (``pytest --pyargs equiv.suite --hypothesis-profile thorough``); only when
    that name is one of them and not registered yet, so a project's own profile of the same name stands."""
    from hypothesis import settings
    from hypothesis.errors import InvalidArgument
    name = config.getoption("hypothesis_profile", None)
    if name not in PROFILE_NAMES:
        return
    try:
        settings.get_profile(name)
    except InvalidArgument:
        import equiv.strategies  # noqa: F401  registers them


def selected(config):
    """The selected adapter names (computed on first use when nothing was given explicitly)."""
    if not hasattr(config, "selected_adapters"):
        from equiv import registry
        config.selected_adapters = registry.available()
    return config.selected_adapters


def pytest_report_header(config):
    if _explicit(config) or os.path.exists(os.path.join(str(config.rootpath), "equiv", "pytest_plugin.py")):
        from equiv.strategies import default_profile
        names = ", ".join(selected(config)) or "(none installed)"
        profile = config.getoption("hypothesis_profile", None) or default_profile()
        return [f"bn-equiv adapters: {names}; hypothesis profile: {profile}"]
    return None


def pytest_generate_tests(metafunc):
    if "adapter_name" in metafunc.fixturenames:
        metafunc.parametrize("adapter_name", selected(metafunc.config))
