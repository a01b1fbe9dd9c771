"""Translation of the canonical setting and checkpoint porting, from the declarations alone
(no framework needed)."""
import numpy as np
import pytest

from equiv import Setting, port_state, remaining_differences, setting_of, translate
from equiv.conventions import ARGUMENTS, DECLARED
from equiv.porting import NotConfigurable

# in neither list: the configurable layers without a momentum argument to translate (tf.nn.moments and
# tf.nn.weighted_moments: the decay is the user's own moving average; jax.stax keeps no running statistics)
CONFIGURABLE = [n for n in DECLARED if ARGUMENTS[n]["momentum"]]
FIXED = [n for n in DECLARED if not DECLARED[n].configurable and DECLARED[n].running_var != "none"]


@pytest.mark.parametrize("name", CONFIGURABLE)
@pytest.mark.parametrize("w,eps", [(0.1, 1e-5), (0.01, 1e-3), (0.0, 1e-12), (1.0, 0.1)])
def test_translate_round_trip(name, w, eps):
    kwargs = translate(Setting(w, eps), name)
    assert setting_of(name, **kwargs) == Setting(w, eps)


def test_translate_known_values():
    assert translate(Setting(0.1, 1e-5), "torch.builtin") == {"momentum": 0.1, "eps": 1e-5}
    assert translate(Setting(0.1, 1e-5), "tf.keras") == {"momentum": 0.9, "epsilon": 1e-5, "axis": -1}
    assert translate(Setting(0.1, 1e-5), "mxnet.gluon") == {"momentum": 0.9, "epsilon": 1e-5, "axis": 1}
    # the porting trap: PyTorch's momentum 0.1 read as Keras' momentum weighs the new batch 0.9
    assert setting_of("tf.keras", momentum=0.1).new_batch_weight == pytest.approx(0.9)
    assert setting_of("tf.keras") == Setting(0.01, 1e-3)


def test_a_layer_without_a_default_momentum_says_what_to_give():
    with pytest.raises(ValueError, match="haiku has no default momentum: give decay_rate="):
        setting_of("haiku")
    assert setting_of("haiku", decay_rate=0.9).new_batch_weight == pytest.approx(0.1)
    with pytest.raises(ValueError, match="jax.stax keeps no running statistics"):
        setting_of("jax.stax")


@pytest.mark.parametrize("name", FIXED)
def test_hard_coded_layers(name):
    conv = DECLARED[name]
    assert translate(Setting(conv.default_new_batch_weight, conv.default_eps), name) == {}
    with pytest.raises(NotConfigurable):
        translate(Setting(0.5, conv.default_eps), name)


def test_a_layer_without_running_statistics_takes_eps_only():
    """jax.stax has no momentum at all: any new-batch weight translates to its eps alone."""
    assert translate(Setting(0.5, 1e-3), "jax.stax") == {"epsilon": 1e-3}
    assert translate(Setting(0.1, 1e-3), "haiku") == {"decay_rate": 0.9, "eps": 1e-3}


def test_remaining_differences():
    assert remaining_differences("torch.builtin", "torch.builtin") == []
    assert any(d.startswith("running_var") for d in remaining_differences("torch.builtin", "tf.keras"))


def _state(c=4, seed=0):
    rng = np.random.default_rng(seed)
    return dict(gamma=rng.standard_normal(c), beta=rng.standard_normal(c),
                running_mean=rng.standard_normal(c), running_var=rng.uniform(0.5, 2, c))


def test_port_state_notes_estimator_and_folds_eps():
    import reference as ref
    s = _state()
    out, notes = port_state(s, "torch.builtin", "tf.keras", src_eps=1e-5, dst_eps=1e-3)
    assert any(n.startswith("running_var") for n in notes)
    x = np.random.default_rng(1).standard_normal((5, 4))
    y_src = ref.batch_norm_infer(x, s["gamma"], s["beta"], s["running_mean"], s["running_var"], eps=1e-5)
    y_dst = ref.batch_norm_infer(x, out["gamma"], out["beta"], out["running_mean"], out["running_var"], eps=1e-3)
    np.testing.assert_allclose(y_dst, y_src, rtol=1e-13, atol=1e-13)


def test_port_state_refuses_to_fold_into_negative_variance():
    s = _state()
    s["running_var"][0] = 1e-6
    out, notes = port_state(s, "tf.keras", "torch.builtin", src_eps=1e-5, dst_eps=1e-3)
    np.testing.assert_array_equal(out["running_var"], s["running_var"])
    assert any("build torch.builtin with eps" in n for n in notes)
