"""Convention probes measure each adapter's conventions; they must equal its declaration."""
import pytest

from equiv.probes import PROBES, describe, expected, matches


@pytest.mark.parametrize("field", list(PROBES))
def test_measured_convention_equals_declared(adapter, field):
    measured = PROBES[field](adapter)
    declared = expected(adapter, field)
    assert matches(field, measured, declared), f"{adapter.name}: {describe(field, measured, declared)}"


def test_translation_round_trip(adapter):
    conv = adapter.conventions
    for w in (0.0, 0.01, 0.1, 0.5, 1.0):
        assert conv.new_batch_weight(conv.momentum_for(w)) == pytest.approx(w)
    a = adapter(2, 2, dtype="float32", new_batch_weight=0.25)
    if conv.configurable:
        assert a.new_batch_weight == 0.25
