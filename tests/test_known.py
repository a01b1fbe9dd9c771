"""Known divergences (equiv.known): each witness runs as a strict xfail.

A strict xfail turns red when the witness stops diverging: then a framework release
changed behaviour, and the finding must be re-measured and the list updated.
"""
import numpy as np
import pytest
from hypothesis import settings

from equiv.known import KNOWN
from equiv.properties import PROPERTIES
from equiv.pytest_plugin import selected
from equiv.strategies import cases


def pytest_generate_tests(metafunc):
    if "divergence" in metafunc.fixturenames:
        params = [pytest.param(name, d, id=f"{name}-{d.id}",
                               marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=d.reason))
                  for d in KNOWN for name in selected(metafunc.config) if name in d.implementations]
        metafunc.parametrize("witness_adapter,divergence", params)


def test_witness_diverges(witness_adapter, divergence, device):
    from equiv import registry
    from equiv.core import FrameworkMissing
    try:
        A = registry.load(witness_adapter)
    except FrameworkMissing as e:
        pytest.skip(str(e))
    PROPERTIES[divergence.witness_property].check(A, divergence.witness, device)


@pytest.mark.parametrize("d", KNOWN, ids=lambda d: d.id)
def test_witness_lies_in_its_region(d):
    assert d.region(d.witness, d.witness_property)


def test_every_divergence_names_registered_adapters_or_paths_and_properties():
    from equiv.registry import known_names
    for d in KNOWN:
        assert set(d.implementations) <= set(known_names()), d.id
        assert set(d.properties) <= set(PROPERTIES), d.id
        assert d.witness_property in d.properties, d.id


def test_every_documentation_finding_names_registered_adapters_and_a_test_that_exists():
    from pathlib import Path

    from equiv.known import DOC_FINDINGS
    from equiv.registry import known_names
    root = Path(__file__).resolve().parent.parent
    for f in DOC_FINDINGS:
        assert set(f.implementations) <= set(known_names()), f.id
        path, name = f.test.split("::")
        assert f"def {name}(" in (root / path).read_text(), f.id


# Draws that failed a run, as the failure printed them, each with the documented divergence whose
# region explains it: the properties leave it out, and (where its adapter is selected) it still
# diverges, a strict xfail.
FAILED_DRAWS = [
    # a·x + b rounds channel 1 to a constant −11000 in float16 and eps·a² = 4.7e-9 rounds to 0: NaN
    ("mlx.builtin", "affine_invariance", "mlx-fp16-eps-underflow",
     "Case(dtype='float16', shape=(4, 3), seed=1, log10_scale=0.0, log10_offset=np.float64(3.4771212547196626), "
     "constant_channel=False, eps=1e-10, new_batch_weight=0.0, steps=1)"),
    # one value per channel in float16: x's two cotangents ±dy·gamma/sqrt(eps) = ±126884 cast to ±inf, dx NaN
    ("flax.linen.two_pass", "gradients", "flax-fp16-dx-cotangent-overflow",
     "Case(dtype='float16', shape=(1, 1), seed=0, log10_scale=0.0, log10_offset=None, constant_channel=False, "
     "eps=1e-11, new_batch_weight=0.0, steps=1)"),
]


@pytest.mark.parametrize("name,prop,finding,line", FAILED_DRAWS, ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in FAILED_DRAWS])
def test_failed_draw_lies_in_the_region_that_explains_it(name, prop, finding, line):
    from equiv.known import excluded
    from equiv.strategies import parse_case
    d = excluded(name, prop, parse_case(line))
    assert d is not None and d.id == finding, d and d.id


@pytest.mark.parametrize("name,prop,finding,line", [
    pytest.param(*r, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=r[2])) for r in FAILED_DRAWS],
    ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in FAILED_DRAWS])
def test_failed_draw_still_diverges(request, name, prop, finding, line, device):
    from equiv import registry
    from equiv.core import FrameworkMissing
    from equiv.strategies import parse_case
    if name not in selected(request.config):
        pytest.skip(f"{name} is not selected")
    try:
        A = registry.load(name)
    except FrameworkMissing as e:
        pytest.skip(str(e))
    PROPERTIES[prop].check(A, parse_case(line), device)


def test_a_drawn_case_with_a_clipped_offset_prints_as_a_line_that_reads_back():
    """An offset clipped to the dtype's range (min with np.log10(MAX_ABS) − scale − 1) was a np.float64,
    printed as np.float64(...), which parse_case (equiv replay) refused; a draw holds a Python float."""
    from hypothesis import find

    from equiv.strategies import MAX_ABS, parse_case
    top = lambda c: float(np.log10(MAX_ABS[c.dtype])) - c.log10_scale - 1  # noqa: E731
    case = find(cases(dtypes=("float16",)), lambda c: c.log10_offset is not None and c.log10_offset == top(c),
                settings=settings(max_examples=5000, derandomize=True, database=None, deadline=None))
    assert type(case.log10_offset) is float, repr(case)
    assert parse_case(repr(case)) == case
