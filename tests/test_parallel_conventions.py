"""The declared data-parallel conventions are data (equiv.parallel.conventions): one row for every
registered implementation, read by its class, rendered by `equiv findings` without importing any
framework (so reference/data/findings.md is the same whatever is installed). NumPy only."""
import subprocess
import sys

import pytest

from equiv import registry
from equiv.conventions import DECLARED as SINGLE
from equiv.parallel import IMPLEMENTATIONS
from equiv.parallel.conventions import BASE, DECLARED, ENGINE

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "mxnet")


def test_every_registered_implementation_has_one_row():
    assert set(DECLARED) == set(BASE) == set(ENGINE) == set(IMPLEMENTATIONS)
    assert set(BASE.values()) <= set(SINGLE)


@pytest.mark.parametrize("name", registry.available(registry.PARALLEL) or [pytest.param(None, marks=pytest.mark.skip(
    reason="no data-parallel framework installed"))])
def test_the_class_reads_its_row(name):
    A = registry.load_parallel(name)
    assert (A.name, A.conventions, A.base, A.engine) == (name, DECLARED[name], BASE[name], ENGINE[name])


def test_findings_render_without_any_framework():
    """In a process where importing any framework fails, the data-parallel section of `equiv
    findings` (and `equiv list`'s) is the one rendered here."""
    from equiv.findings import parallel_section
    block = ("import sys, importlib.abc\n"
             "class Block(importlib.abc.MetaPathFinder):\n"
             f"    def find_spec(self, name, path, target=None):\n"
             f"        if name.split('.')[0] in {FRAMEWORKS!r}: raise ImportError('blocked: ' + name)\n"
             "sys.meta_path.insert(0, Block())\n"
             "from equiv.findings import parallel_section\n"
             "print('\\n'.join(parallel_section()))\n")
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "\n".join(parallel_section()) + "\n"
    assert all(f"| {name} |" in out.stdout for name in IMPLEMENTATIONS)


def test_equiv_list_shows_the_data_parallel_implementations():
    out = subprocess.run([sys.executable, "-m", "equiv", "list"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    section = out.stdout.split("\ndata-parallel ", 1)[1].splitlines()[1:]
    assert [line.split()[0] for line in section] == registry.known_names(registry.PARALLEL)
    for line in section:
        name, state = line.split()[:2]
        assert state == ("installed" if registry.framework_installed(name, registry.PARALLEL) else "missing"), line
        assert ENGINE[name] in line
