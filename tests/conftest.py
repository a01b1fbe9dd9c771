"""The project's own tests. Adapter selection, device and profile come from the pytest plugin
``equiv.pytest_plugin`` (registered by the installed package; loaded from here when the package
is only on PYTHONPATH) and the fixtures of ``equiv.suite.fixtures``."""
import os
from importlib.metadata import entry_points

import numpy as np
import pytest
from hypothesis import settings

from equiv.strategies import default_profile, profile_error
from equiv.suite.fixtures import adapter, device, profile, registered_adapter  # noqa: F401

if not profile_error():
    settings.load_profile(default_profile())

if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") or not any(
        ep.value == "equiv.pytest_plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["equiv.pytest_plugin"]


@pytest.fixture(scope="module")
def fashion_mnist():
    """The real Fashion-MNIST training images and labels (Debian's dataset-fashion-mnist), or a skip
    that says how to install it: the BN-LeNet lockstep tests on real data."""
    from equiv.data import DataError, load_fashion_mnist
    try:
        d = load_fashion_mnist()
    except DataError as e:
        pytest.skip(f"Fashion-MNIST not installed ({str(e).splitlines()[0]}); "
                    "install it with: apt-get install dataset-fashion-mnist")
    return d["train_x"], d["train_y"].astype(np.int64)


def pytest_terminal_summary(terminalreporter):
    """How many drawn states each route test left out, and by which finding (tests/route_helpers.py); the
    largest error/bound ratio of each route test, as JSON to $EQUIV_ROUTE_RATIOS where it is set."""
    from tests.route_helpers import LARGEST, LEFT_OUT
    path = os.environ.get("EQUIV_ROUTE_RATIOS")
    if path and LARGEST:
        from equiv import io
        io.write_json(path, {t: float(f"{r:.3g}") for t, r in sorted(LARGEST.items())})
        terminalreporter.write_line(f"route ratios: {len(LARGEST)} tests, written to {path}")
    rows = {t: c for t, c in LEFT_OUT.items() if set(c) - {"ran"}}
    if rows:
        terminalreporter.section("route states left out of the properties (a finding's region, or not representable)")
        for t, c in sorted(rows.items()):
            out = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != "ran")
            terminalreporter.write_line(f"{t}: ran {c['ran']}; left out: {out}")
