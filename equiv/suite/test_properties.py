"""Every property of equiv.properties against every selected adapter, under Hypothesis."""
import pytest

from equiv.core import Unsupported
from equiv.properties import PROPERTIES, Unconfigurable, applies, run


@pytest.mark.parametrize("prop_name", list(PROPERTIES))
def test_property(adapter, prop_name, device, profile):
    p = PROPERTIES[prop_name]
    reason = applies(p, adapter)
    if reason:
        pytest.skip(reason)
    if device not in adapter.devices:
        pytest.skip(f"{adapter.name} has no device {device}")
    try:
        stats = run(p, adapter, device, profile)
    except Unconfigurable:
        pytest.skip(f"{adapter.name}: momentum is hard-coded, {prop_name} needs new-batch weight 1")
    except Unsupported as e:
        pytest.skip(str(e))
    if "everywhere" in stats:
        pytest.skip(f"{adapter.name}: {prop_name} is documented divergence {stats['everywhere']} for every "
                    "input (equiv/known/; its witness runs as a strict xfail)")
    assert stats["examples"] > 0, f"no example ran ({stats['excluded']} in known-divergence regions)"
