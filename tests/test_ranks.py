"""The input ranks an adapter declares (``Adapter.ndims``, equiv.core.RANKS): the cases draw exactly those,
each with enough values per channel, and a printed Case of any rank reads back."""
import pytest
from hypothesis import given, settings

from equiv.core import RANKS
from equiv.strategies import cases, parse_case


def _drawn(ndims, min_count=2):
    seen = []

    @settings(max_examples=60, derandomize=True, database=None, deadline=None)
    @given(case=cases(ndims=ndims, min_count=min_count))
    def draw(case):
        assert case.count >= min_count and case.gamma.shape == (case.channels,)
        seen.append(case.ndim)
    draw()
    return set(seen)


def test_default_ranks_are_two_and_four():
    assert _drawn((2, 4)) == {2, 4}


@pytest.mark.parametrize("min_count", [1, 2])
def test_every_declared_rank_is_drawn(min_count):
    assert _drawn(tuple(RANKS), min_count) == set(RANKS) == {2, 3, 4, 5}


def test_printed_cases_of_every_rank_read_back():
    for shape in [(4, 2), (4, 2, 3), (2, 2, 1, 3), (2, 1, 2, 2, 3)]:
        text = (f"Case(dtype='float64', shape={shape!r}, seed=1, log10_scale=0.0, log10_offset=None, "
                "constant_channel=False, eps=1e-05, new_batch_weight=0.1)")
        assert parse_case(text).shape == shape
    with pytest.raises(ValueError, match="2-D to 5-D"):
        parse_case("Case(dtype='float64', shape=(2, 1, 1, 1, 1, 2), seed=1, log10_scale=0.0, log10_offset=None, "
                   "constant_channel=False, eps=1e-05, new_batch_weight=0.1)")


def test_explicit_cases_only_of_the_declared_ranks():
    """The explicit cases every property starts with are 2-D and 4-D: an adapter without those ranks gets
    none of them (it would otherwise be refused the whole property)."""
    from equiv.strategies import edge_cases
    assert {c.ndim for c in edge_cases(("float64", "float32"))} == {2, 4}
    assert edge_cases(("float64", "float32"), ndims=(3, 5)) == []
    assert {c.ndim for c in edge_cases(("float64", "float32"), ndims=(2, 3))} == {2}
