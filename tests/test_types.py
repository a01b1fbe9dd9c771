"""The public API is typed: `mypy` checks the annotated modules with the settings in pyproject.toml
([tool.mypy]: equiv's __init__, core, conventions, external, porting and port, and reference/), and both
packages ship the PEP 561 marker py.typed. The mypy test skips, printing the install command, when
mypy is absent; the numpy tox env installs it."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MYPY = "mypy==2.4.1"   # the release tox.ini's numpy env pins


def pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:   # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_mypy_is_clean_on_the_public_api(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip(f"needs mypy: pip install {MYPY} (the numpy tox env has it)")
    files = pyproject()["tool"]["mypy"]["files"]
    assert {"equiv/__init__.py", "equiv/core.py", "equiv/external.py", "reference"} <= set(files), files
    # the files and settings are [tool.mypy]'s; the cache goes to tmp_path, nothing into the checkout
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache")], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"mypy found problems:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("package", ["equiv", "reference"])
def test_packages_are_marked_typed_and_ship_the_marker(package):
    assert (ROOT / package / "py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"].get(package, []), \
        f"[tool.setuptools.package-data] does not ship {package}/py.typed in the wheel"
