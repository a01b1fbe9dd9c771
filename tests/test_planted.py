"""The properties can fail: each planted bug is caught, the correct twin passes.

The implementations are external NumPy functions (tests/planted.py), loaded through
the same ``package.module:obj`` path a user would give to ``--adapters``.
"""
import pytest

from equiv.properties import PROPERTIES, applies, run
from equiv.registry import load
from tests.planted import CORRECT, PLANTED


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_is_caught(bug):
    A = load(f"tests.planted:{bug}")
    with pytest.raises(AssertionError):
        run(PROPERTIES[PLANTED[bug]], A, profile="mutation")


@pytest.mark.parametrize("prop_name", list(PROPERTIES))
@pytest.mark.parametrize("name", CORRECT)
def test_correct_implementation_written_differently_passes(name, prop_name):
    """Every correct implementation (another update form, variance algorithm, accumulation precision
    and order, in-place updates, channels last under each preset, an adapter class) passes every
    property: a bound that flags one of them is wrong, not the implementation."""
    A = load(f"tests.planted:{name}")
    p = PROPERTIES[prop_name]
    if applies(p, A):
        pytest.skip(applies(p, A))
    # ci here (the mutation profile for the first one); dev seeds and thorough: scripts/sweep.py
    assert run(p, A, profile="mutation" if name == "correct" else "ci")["examples"] > 0


def test_a_batch_of_one_is_drawn_where_the_conventions_define_it():
    """Batches of one (2-D and 4-D with N·H·W = 1) run for a layer declaring batch_of_one "beta", never
    for one that raises (PyTorch's preset); one returning NaN there is caught."""
    from equiv.properties import strategy_for
    from equiv.strategies import edge_cases
    keras, torch = load("tests.planted:correct_assign_sub_keras"), load("tests.planted:correct")
    assert keras.conventions.batch_of_one == "beta" and torch.conventions.batch_of_one == "error"
    ones = [c for c in edge_cases(keras.dtypes, keras.conventions) if c.count == 1]
    assert {c.ndim for c in ones} == {2, 4}
    assert not [c for c in edge_cases(torch.dtypes, torch.conventions) if c.count == 1]
    seen = []
    from hypothesis import given, settings
    @settings(settings.get_profile("ci"))
    @given(strategy_for(PROPERTIES["train_forward"], keras))
    def draw(case):
        seen.append(case.count)
    draw()
    assert 1 in seen and min(seen) == 1
    with pytest.raises(AssertionError, match="NaN"):
        run(PROPERTIES["train_forward"], load("tests.planted:nan_for_a_batch_of_one"), profile="ci")


def test_declared_conventions_are_what_the_oracle_holds_code_to():
    """The same Keras-style maths passes declared as "keras" and fails declared as "torch"."""
    keras = load("tests.planted:keras_style")
    assert keras.conventions.channel_axis == -1 and keras.conventions.running_var == "biased"
    assert run(PROPERTIES["running_stats"], keras, profile="mutation")["examples"] > 0
    with pytest.raises(AssertionError, match=r"batch mean: max \|error\| \S+ is \S+× the bound"):
        run(PROPERTIES["batch_stats"], load("tests.planted:keras_style_declared_torch"), profile="mutation")


def test_a_preset_in_the_spec_and_fields_on_the_object_combine():
    A = load("tests.planted:correct@mxnet")
    assert (A.conventions.momentum_is, A.conventions.default_momentum, A.conventions.stats_update) == \
        ("old_weight", 0.9, "forward")    # a function returns its statistics: they change in the forward
    assert load("tests.planted:fast_variance_declared@torch").conventions.variance == "fast"


def test_declared_fast_variance_is_excused_where_flax_is():
    stats = run(PROPERTIES["train_forward"], load("tests.planted:fast_variance_declared"), profile="mutation")
    assert stats["examples"] > 0 and stats["excluded"] > 0


@pytest.mark.parametrize("spec, message", [
    (":fn", "give package.module:obj"),
    ("tests.planted:", "give package.module:obj"),
    ("tests.planted:nosuch", "has no 'nosuch'"),
    ("tests.no_such_module:fn", "no module named 'tests.no_such_module'"),
    ("tests.planted:correct@pytorch", "unknown conventions preset 'pytorch'"),
    ("tests.planted:keras_style@torch", "the spec names preset 'torch', the object declares 'keras'"),
    ("tests.planted:PLANTED", "neither an adapter class nor a function"),
])
def test_a_bad_spec_is_one_line_saying_what_to_do(spec, message):
    from equiv.external import SpecError
    with pytest.raises(SpecError) as e:
        load(spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_module_that_fails_to_import_is_named(tmp_path, monkeypatch):
    from equiv.external import SpecError
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "bad_syntax.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError, match="importing raises_on_import raised RuntimeError: no GPU here"):
        load("raises_on_import:fn")
    with pytest.raises(SpecError, match=r"bad_syntax.py, line 1: syntax error"):
        load("bad_syntax:f")


def test_one_verdict_per_commit_and_a_seeded_search():
    """The default profile is derandomized (ci): two runs draw the same cases; a random profile with a
    seed draws the same again, and another seed draws others."""
    from equiv.strategies import default_profile
    A, p = load("tests.planted:correct_lerp"), PROPERTIES["running_stats"]
    assert default_profile() in ("ci", "mutation") or __import__("os").environ.get("EQUIV_PROFILE")
    same = [run(p, A, profile="ci")["ratios"] for _ in range(2)]
    assert same[0] == same[1]
    seeded = [run(p, A, profile="dev", seed=s)["ratios"] for s in (7, 7, 8)]
    assert seeded[0] == seeded[1] != seeded[2]


def test_the_search_profiles_draw_at_random_even_where_ci_is_set():
    import os
    import subprocess
    import sys
    code = ("import equiv.strategies; from hypothesis import settings as s; print([s.get_profile(p).derandomize "
            "for p in ('dev', 'thorough', 'thorough-compile', 'ci', 'mutation')])")
    for ci in ("true", ""):
        out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, CI=ci), capture_output=True,
                             text=True, check=True)
        assert out.stdout.strip() == "[False, False, False, True, True]", (ci, out.stdout, out.stderr)
