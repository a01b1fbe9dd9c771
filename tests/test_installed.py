"""bn-equiv installed, not cloned: the wheel `python -m build` makes, in a fresh virtual environment,
used from a folder outside the repository exactly as the README's "Testing your own implementation"
says (its `mybn.py` and its commands are read from the README and run as written)."""
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from equiv.readme import own_implementation_example

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.skipif(shutil.which("pyproject-build", path=os.path.dirname(sys.executable)) is None,
                       reason="needs the build package: pip install build (the numpy tox env has it)"),
    pytest.mark.skipif(bool(os.environ.get("EQUIV_WHOLE_SUITE_CHILD")), reason="inside the whole-suite run"),
]


def readme_section():
    return own_implementation_example((ROOT / "README.md").read_text())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(folder outside the repository with mybn.py, environment whose PATH starts with the venv)."""
    base = tmp_path_factory.mktemp("installed")
    source = base / "source"   # a copy: building leaves build/ and *.egg-info behind, not in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".tox", "build", "dist", "*.egg-info", "results", "report", ".hypothesis", "__pycache__"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(base / "dist"),
                    str(source)], check=True, capture_output=True, timeout=600)
    wheel = next((base / "dist").glob("bn_equiv-*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {"equiv/py.typed", "reference/py.typed"} <= shipped, "the wheel lacks the PEP 561 markers py.typed"
    venv.create(base / "venv", with_pip=True)
    bindir = base / "venv" / "bin"
    # nothing of this checkout or of the test run's environment leaks in (PYTHONPATH, tox's variables)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EQUIV_", "PYTHON", "VIRTUAL_ENV", "TOX"))}
    env.update(PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", CI="true")
    subprocess.run([str(bindir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    f"{wheel}[test]"], check=True, capture_output=True, timeout=600, env=env)
    user = base / "user-project"
    user.mkdir()
    code, _ = readme_section()
    (user / "mybn.py").write_text(code)
    return user, env, bindir


def sh(command, cwd, env, timeout=900):
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_readme_commands_run_as_written_outside_the_repository(installed):
    user, env, _ = installed
    _, commands = readme_section()
    assert commands[0].startswith("pip install "), "the README's first command installs bn-equiv"
    for command in commands[1:]:
        r = sh(command, user, env)
        assert r.returncode == 0, f"{command}\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stdout + r.stderr, command
    assert not (user / "equiv").exists() and not (user / "reference").exists()


def test_installed_package_runs_from_site_packages_with_its_data(installed):
    user, env, bindir = installed
    r = sh("python -c 'import equiv, reference; print(equiv.__file__); print(reference.__file__)'", user, env)
    assert r.returncode == 0 and str(ROOT) not in r.stdout and "site-packages" in r.stdout, r.stdout + r.stderr
    r = sh("python -c 'from equiv import vectors, fingerprint; "
           "print(len(vectors.load_index()[\"cases\"]), sum(1 for _ in fingerprint.DIR.glob(\"*/*.json\")))'",
           user, env)
    n_cases, n_fingerprints = map(int, r.stdout.split())
    assert n_cases >= 30 and n_fingerprints >= 10, r.stdout
    # the whole suite on a correct function and on planted bugs, through the plugin
    (user / "planted.py").write_text((ROOT / "tests" / "planted.py").read_text())
    from tests.planted import CORRECT, PLANTED
    specs = ",".join(f"planted:{name}" for name in CORRECT)
    r = sh(f"pytest -q -p no:cacheprovider --pyargs equiv.suite --adapters {specs}", user, env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    specs = ",".join(f"planted:{bug}" for bug in PLANTED)
    r = sh(f"pytest -q -rf -p no:cacheprovider --pyargs equiv.suite -k test_property --adapters {specs}", user, env)
    missed = [bug for bug, prop in PLANTED.items() if f"test_property[planted:{bug}-{prop}]" not in r.stdout]
    assert r.returncode == 1 and not missed, (missed, r.stdout[-3000:])
