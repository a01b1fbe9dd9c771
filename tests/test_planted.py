"""The properties can fail: each planted bug is caught, the correct twin passes.

The implementations are external NumPy functions (tests/planted.py), loaded through
the same ``package.module:obj`` path a user would give to ``--adapters``.
"""
import pytest

from equiv.adapters import load
from equiv.properties import PROPERTIES, applies, run
from tests.planted import PLANTED


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_is_caught(bug):
    A = load(f"tests.planted:{bug}")
    with pytest.raises(AssertionError):
        run(PROPERTIES[PLANTED[bug]], A, profile="mutation")


@pytest.mark.parametrize("prop_name", list(PROPERTIES))
def test_correct_external_function_passes(prop_name):
    A = load("tests.planted:correct")
    p = PROPERTIES[prop_name]
    if applies(p, A):
        pytest.skip(applies(p, A))
    assert run(p, A, profile="mutation")["examples"] > 0
