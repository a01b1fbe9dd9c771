"""Layer options as data (equiv.options): a case at default options prints and reads back as it always
has, options print and read back, an adapter refuses an option it does not declare, and what each value
means to the oracle."""
import pytest

from equiv import options as opt
from equiv.conventions import DECLARED
from equiv.core import Adapter, Unsupported
from equiv.known import KNOWN
from equiv.properties import PROPERTIES, applies
from equiv.strategies import EDGE_CASES, Case, parse_case


def test_cases_at_default_options_print_as_before():
    for d in KNOWN:
        text = repr(d.witness)
        assert "options" not in text and text.endswith(f"steps={d.witness.steps})"), d.id
        assert parse_case(text) == d.witness


def test_options_print_and_read_back_and_change_gamma_beta():
    base = EDGE_CASES[1]
    c = Case(**{k: getattr(base, k) for k in ("dtype", "shape", "seed", "log10_scale", "log10_offset",
                                              "constant_channel", "eps", "new_batch_weight")},
             options={"affine": False})
    assert repr(c).endswith("steps=1, options={'affine': False})")
    assert parse_case(repr(c)) == c and c != base
    assert list(c.gamma) == [1.0] and list(c.beta) == [0.0] and list(base.gamma) != [1.0]
    assert list(c.running_mean) == list(base.running_mean)          # the other draws are unchanged
    with pytest.raises(ValueError, match="no option 'afine'"):
        parse_case(repr(c).replace("affine", "afine"))


class _Stub(Adapter):
    name, conventions = "stub", DECLARED["torch.builtin"]

    def build(self, momentum, eps):
        self.built = (momentum, eps)


class _StubWithOptions(_Stub):
    supported_options = {"affine": (False,)}


def test_an_adapter_refuses_options_it_does_not_declare():
    assert _Stub(2, 2).options == {}
    with pytest.raises(Unsupported, match="stub does not take affine=False"):
        _Stub(2, 2, options={"affine": False})
    assert _StubWithOptions(2, 2, options={"affine": False}).options == {"affine": False}
    with pytest.raises(Unsupported, match="does not take momentum='cumulative'"):
        _StubWithOptions(2, 2, options={"momentum": "cumulative"})
    with pytest.raises(Unsupported, match="no value 'maybe'"):
        _StubWithOptions(2, 2, options={"affine": "maybe"})
    assert _StubWithOptions(2, 2, options={"affine": True}).options == {"affine": True}   # the default
    assert "does not take" in applies(PROPERTIES["gradients"], _Stub, {"affine": False})
    assert applies(PROPERTIES["gradients"], _StubWithOptions, {"affine": False}) is None


def test_what_each_value_means_to_the_oracle():
    assert [opt.weight_at({}, 0.1, k) for k in (1, 2, 3)] == [0.1, 0.1, 0.1]
    assert [opt.weight_at({"momentum": "cumulative"}, 0.1, k) for k in (1, 2, 4)] == [1.0, 0.5, 0.25]
    assert [opt.weight_at({"momentum": "cumulative_after_ema"}, 0.1, k) for k in (1, 2, 3)] == [0.1, 1.0, 0.5]
    assert opt.tracks({}) and not opt.tracks({"track_running_stats": "set_false"})
    assert opt.keeps_running_stats({"track_running_stats": "set_false"})
    assert not opt.keeps_running_stats({"track_running_stats": False})
    assert opt.infers_with_batch({"track_running_stats": False}) and not opt.affine({"affine": False})
    assert "keeps no running statistics" in opt.not_applicable(PROPERTIES["running_stats"],
                                                                {"track_running_stats": False})
    assert "does not change" in opt.not_applicable(PROPERTIES["gradients"], {"momentum": "cumulative"})
    assert opt.not_applicable(PROPERTIES["running_stats"], {"momentum": "cumulative"}) is None
    # reductions in the layer's dtype change nothing in the math, only the precision it is computed in
    low = {"force_float32_reductions": False}
    assert opt.weight_at(low, 0.1, 2) == 0.1 and opt.tracks(low) and opt.affine(low) and not opt.infers_with_batch(low)
    assert opt.not_applicable(PROPERTIES["running_stats"], low) is None
    assert len(opt.settings()) == sum(len(o.values) for o in opt.OPTIONS.values())
    for o in opt.OPTIONS.values():
        assert set(o.properties) <= set(PROPERTIES), o.name


def test_option_declarations_name_probes_and_registered_adapters():
    from equiv.conventions import OPTION_DECLARED
    from equiv.option_probes import OPTION_PROBES
    from equiv.registry import known_names
    for name, fields in OPTION_DECLARED.items():
        assert name in known_names() and set(fields) <= set(OPTION_PROBES), name
