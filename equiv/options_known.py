"""Documented divergences under layer options (equiv.options), in the shape of equiv.known's
``Divergence``: each region holds only for cases that carry its setting, and each witness (a case
with that setting) runs as a strict xfail (tests/test_options_torch.py)."""
from equiv.known import everywhere


def under(setting, region=everywhere):
    """The region of a divergence that shows only with the layer options ``setting`` (then where
    ``region`` holds); ``.whole``: for every case with the setting (the property is not run)."""
    def holds(case, prop):
        return all(case.options.get(k) == v for k, v in setting.items()) and region(case, prop)
    holds.setting, holds.whole = dict(setting), region is everywhere
    return holds


KNOWN = []


def option_divergences(adapter, property_name, options):
    """The documented divergences of an adapter (class or name) for a property under ``options``."""
    if not options:
        return []
    from equiv.paths import PATHS
    name = adapter if isinstance(adapter, str) else adapter.name
    names = {name, PATHS[name].base} if name in PATHS else {name}
    return [d for d in KNOWN if names & set(d.adapters) and property_name in d.properties
            and all(options.get(k) == v for k, v in d.region.setting.items())]
