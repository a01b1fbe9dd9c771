"""`equiv port SRC DST`: the plan of every ordered pair of built-in layers, from the declarations
alone (no framework), its text, the generated porting pages, and the page in a headless browser."""
import html
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import reference as ref
from equiv import Setting, setting_of
from equiv.cli import main
from equiv.conventions import ARGUMENTS, COUNTERS, DEBIAS_STATE, DECLARED, STATE_NAMES
from equiv.port import PORTABLE, ROLES, all_plans, not_covered, plan
from equiv.port_pages import layer_page, page

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAIRS = [(s, d) for s in PORTABLE for d in PORTABLE if s != d]


def _momentum(src, w=0.25):
    return DECLARED[src].momentum_for(w)


def test_every_declared_layer_is_covered_or_excluded_with_a_reason():
    assert len(PAIRS) == 156   # 13 layers
    out = not_covered()
    assert set(out) | set(PORTABLE) == set(DECLARED) and not set(out) & set(PORTABLE)
    assert "hard-codes its momentum and eps" in out["torch.scratch"]
    assert "no running statistics" in out["jax.stax"]


@pytest.mark.parametrize("src,dst", PAIRS, ids=[f"{s}>{d}" for s, d in PAIRS])
def test_plan_names_both_layers_arguments_and_every_target_state_entry(src, dst):
    p = plan(src, dst, _momentum(src), 1e-3)
    text = p.text()
    assert p.setting == Setting(0.25, 1e-3)
    # the target built with these arguments computes with the source's setting
    assert setting_of(dst, **p.dst_arguments) == p.setting
    assert setting_of(src, **p.src_arguments) == p.setting
    for kwargs, layer in ((p.src_arguments, src), (p.dst_arguments, dst)):
        assert set(kwargs) >= {ARGUMENTS[layer]["momentum"], ARGUMENTS[layer]["eps"]}
        assert f"{layer}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" in text
    targets = list(STATE_NAMES[dst]) + [n for names in DEBIAS_STATE.get(dst, {}).values() for n in names]
    assert [e.target for e in p.state] == list(dict.fromkeys(targets))
    for e in p.state:
        assert f"{e.target}" in text and e.value in text
        assert e.source in STATE_NAMES[src] or e.source == ""
    ported = p.apply({k: np.full(3, 2.0) for k in ROLES})
    assert list(ported) == [e.target for e in p.state]
    assert p.continues == (DECLARED[src].running_var == DECLARED[dst].running_var)
    assert p.running_var == DECLARED[dst].running_var
    for word in ("momentum", "eps", "running variance"):
        assert f"  - {word}: " in text


def test_known_pair_and_the_momentum_trap():
    p = plan("torch.builtin", "tf.keras")
    assert p.dst_arguments == {"momentum": 0.9, "epsilon": 1e-5, "axis": -1}
    assert [(e.target, e.source) for e in p.state] == [
        ("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var")]
    assert not p.continues and p.running_var == "biased"
    assert "the same number 0.1 would weigh the new batch 0.9" in p.text()
    assert "pass epsilon=1e-05" in p.text()
    assert plan("tf.keras", "torch.builtin", 0.8, 1e-3).dst_arguments == {"momentum": pytest.approx(0.2), "eps": 1e-3}
    assert plan("flax.linen", "flax.nnx").continues


def test_target_eps_folds_into_the_running_variance_and_keeps_inference_exact():
    rng = np.random.default_rng(0)
    s = dict(gamma=rng.standard_normal(4), beta=rng.standard_normal(4), running_mean=rng.standard_normal(4),
             running_var=rng.uniform(0.5, 2, 4))
    p = plan("torch.builtin", "tf.keras", dst_eps=1e-3)
    assert p.dst_arguments["epsilon"] == 1e-3 and p.fold == pytest.approx(1e-5 - 1e-3)
    assert not p.continues and "+ -0.00099" in p.text()
    out = p.vectors(s)
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(ref.batch_norm_infer(x, *(out[k] for k in ROLES), eps=1e-3),
                               ref.batch_norm_infer(x, *(s[k] for k in ROLES), eps=1e-5), rtol=1e-13, atol=1e-13)
    s["running_var"][0] = 1e-6
    with pytest.raises(ValueError, match="build tf.keras with eps 1e-05 instead"):
        p.vectors(s)


def test_debiasing_targets_get_hidden_values_and_a_large_counter():
    s = {k: np.full(2, 3.0) for k in ROLES}
    into_haiku = plan("torch.builtin", "haiku").apply(s)
    assert into_haiku["state/batch_norm/~/mean_ema/counter"] == COUNTERS["haiku"]
    np.testing.assert_array_equal(into_haiku["state/batch_norm/~/var_ema/hidden"], 3.0)   # 0.9^(2^30) = 0
    into_eqx = plan("torch.builtin", "equinox.batch").apply(s)
    assert into_eqx["state[batch_counter]"] == COUNTERS["equinox.batch"]
    np.testing.assert_array_equal(into_eqx["state[batch_state_index][0]"], 3.0)
    decay = 1 - 1e-9        # so close to 1 that decay^counter does not vanish: hidden is scaled
    into_haiku = plan("torch.builtin", "haiku", 1 - decay).apply(s)
    scale = 1 - decay ** COUNTERS["haiku"]
    assert 0.5 < scale < 0.8
    np.testing.assert_allclose(into_haiku["state/batch_norm/~/mean_ema/hidden"], 3.0 * scale, rtol=1e-6)
    np.testing.assert_array_equal(into_haiku["state/batch_norm/~/mean_ema/average"], 3.0)
    assert plan("torch.builtin", "equinox.ema").apply(s)["state[ema_first_time_index]"] is False
    text = plan("equinox.batch", "torch.builtin").text()
    assert "state[batch_state_index][0] / (1 − momentum^state[batch_counter])" in text


@pytest.mark.parametrize("argv,message", [
    (["port", "torch.builtin", "nope"], "unknown layer 'nope'; equiv port knows torch.builtin"),
    (["port", "jax.stax", "tf.keras"], "jax.stax is not covered by equiv port: keeps no running statistics"),
    (["port", "haiku", "tf.keras"], "haiku has no default momentum: give --momentum (its decay_rate)"),
    (["port", "torch.builtin", "tf.keras", "--momentum", "1.5"], "momentum 1.5 must lie in [0, 1]"),
])
def test_cli_usage_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err


def test_cli_prints_the_plan(capsys):
    assert main(["port", "torch.builtin", "tf.keras", "--momentum", "0.2", "--eps", "1e-3"]) == 0
    out = capsys.readouterr().out
    assert out == plan("torch.builtin", "tf.keras", 0.2, 1e-3).text()
    assert "Build:  tf.keras(momentum=0.8, epsilon=0.001, axis=-1)" in out


def test_generated_pages_are_current():
    assert (DOCS / "pick-two.html").read_text() == page(), "docs/pick-two.html is stale: run `equiv porting`"
    pages = sorted((DOCS / "layers").glob("*.md"))
    assert [p.stem for p in pages] == sorted(DECLARED), "docs/layers is stale: run `equiv porting`"
    for p in pages:
        assert p.read_text() == layer_page(p.stem), f"{p} is stale: run `equiv porting`"


def test_page_embeds_every_plan_and_no_network():
    text = page()
    assert text.count('"text":') == len(all_plans()) == 156
    assert "http" not in text and "<script src" not in text


def test_page_shows_the_pair_of_its_url_fragment_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("install it with: apt-get install chromium")
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    for pair in ("torch.builtin/tf.keras", "haiku/mxnet.gluon"):
        url = (DOCS / "pick-two.html").as_uri() + "#" + pair
        dom = subprocess.run(args + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        assert f'data-pair="{pair}"' in dom, dom[-500:]
        shown = dom[dom.index("<pre id=\"plan\">"):]
        assert html.escape(all_plans()[pair].text(), quote=False) in shown


def test_a_plan_names_the_routes_that_carry_a_whole_model_to_the_targets_framework():
    from equiv.adapters import ADAPTERS
    from equiv.routes import ROUTES
    p = plan("flax.linen", "tf.keras")
    assert p.routes == ("flax.linen+jax2tf",)
    assert "Or convert the whole model" in p.text() and "  - flax.linen+jax2tf: keeps inference" in p.text()
    # a folder stays in its framework: no plan names it; a converter is named in every plan it can serve
    named = {r for p in all_plans().values() for r in p.routes}
    for n, r in ROUTES.items():
        targets = [d for d in PORTABLE if ADAPTERS[d][2] == r.lands]
        serves = r.source_adapter in PORTABLE and targets and r.lands != ADAPTERS[r.source_adapter][2]
        assert (n in named) == bool(serves), n
