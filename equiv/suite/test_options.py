"""The properties under each layer option (equiv.options) the adapter declares it takes: a setting it
does not take, or that does not change what a property states, is a skip that says so; the documented
divergences under options (equiv.known.OPTION_KNOWN) are left out as equiv.known's are."""
import pytest

from equiv import options as opt
from equiv.conventions import OPTION_DECLARED
from equiv.core import Unsupported
from equiv.option_probes import OPTION_PROBES
from equiv.properties import PROPERTIES, applies, run


def test_declared_options_are_options(adapter):
    """``supported_options`` names declared options and non-default values only, and the adapter builds
    a layer with each; a value it does not declare is refused."""
    for name, values in adapter.supported_options.items():
        assert name in opt.OPTIONS, f"{adapter.name}: no option {name!r}"
        assert set(values) <= set(opt.OPTIONS[name].values), f"{adapter.name}: {name} values {values}"
        for v in values:
            adapter(2, 2, dtype=adapter.dtypes[0], new_batch_weight=0.1, options={name: v})
    for setting in opt.settings():
        if opt.unsupported(adapter, setting):
            with pytest.raises(Unsupported, match="does not take"):
                adapter(2, 2, dtype=adapter.dtypes[0], new_batch_weight=0.1, options=setting)


@pytest.mark.parametrize("setting", opt.settings(), ids=opt.setting_id)
@pytest.mark.parametrize("prop_name", list(PROPERTIES))
def test_property_with_option(adapter, prop_name, setting, device, profile):
    p = PROPERTIES[prop_name]
    reason = applies(p, adapter, setting)
    if reason:
        pytest.skip(reason)
    if device not in adapter.devices:
        pytest.skip(f"{adapter.name} has no device {device}")
    stats = run(p, adapter, device, profile, options=setting)
    if "everywhere" in stats:
        pytest.skip(f"{adapter.name}: {prop_name} under {opt.setting_id(setting)} is documented divergence "
                    f"{stats['everywhere']} (equiv/known/torch.py; its witness runs as a strict xfail)")
    assert stats["examples"] > 0, f"no example ran ({stats['excluded']} in known-divergence regions)"


@pytest.mark.parametrize("field", list(OPTION_PROBES))
def test_option_probe_equals_declared(adapter, field):
    """What a probe measures about an option equals the declaration (equiv.conventions.OPTION_DECLARED);
    an adapter that does not take the option measures and declares nothing."""
    measured = OPTION_PROBES[field](adapter)
    declared = OPTION_DECLARED.get(adapter.name, {}).get(field, "n/a")   # a path takes no options by inheritance
    assert measured == declared, f"{adapter.name}: {field}: declared {declared!r}; measured {measured!r}"
