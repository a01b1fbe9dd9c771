"""The whole suite, run as a user runs it (a subprocess, ``--adapters package.module:obj``): a correct
external function and a correct external adapter class pass everything (exit 0); planted bugs fail
(non-zero), each named by the property that caught it; ``equiv check`` prints a failure block whose
replay command reproduces the case with the oracle's values beside the implementation's."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from equiv import registry

ROOT = Path(__file__).resolve().parent.parent

CHILD = "EQUIV_WHOLE_SUITE_CHILD"   # set in the child run: this module does not recurse into itself
pytestmark = pytest.mark.skipif(bool(os.environ.get(CHILD)), reason="inside the whole-suite run itself")
# The whole suite runs where a user without any framework runs it (the numpy env); in a framework's
# env it would run that framework's own tests a second time.
whole = pytest.mark.skipif(bool(registry.available()), reason="runs in the env without frameworks (tox -e numpy)")


def run(*args, timeout=900):
    env = dict(os.environ, **{CHILD: "1", "CI": "true"})
    env.pop("EQUIV_ADAPTERS", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@whole
def test_correct_function_and_adapter_class_pass_the_whole_suite():
    r = run("-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests", "equiv/suite",
            "--adapters", "tests.planted:correct_with_backward,tests.planted:CorrectAdapter")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
    # the registered-only tests say why they do not apply
    assert "tests.planted:CorrectAdapter is an external implementation" in r.stdout, r.stdout[-3000:]


def test_plugin_knows_the_profiles_strategies_registers():
    from equiv.pytest_plugin import PROFILE_NAMES
    from equiv.strategies import PROFILES
    assert set(PROFILE_NAMES) == set(PROFILES)


def test_hypothesis_profile_option_selects_a_bn_equiv_profile():
    # Hypothesis's plugin loads the named profile before any test module imports equiv.strategies:
    # the plugin registers bn-equiv's profiles first (an unknown name was an INTERNALERROR)
    r = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "equiv/suite", "-k", "train_forward",
            "--adapters", "tests.planted:correct", "--hypothesis-profile", "thorough", "--hypothesis-seed", "0")
    assert r.returncode == 0 and "INTERNALERROR" not in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    assert "1 passed" in r.stdout.strip().splitlines()[-1], r.stdout[-1000:]


PLANTED = {   # external implementation -> the test id part that must fail
    "tests.planted:eps_outside_sqrt": "test_property[tests.planted:eps_outside_sqrt-train_forward]",
    "tests.planted:dgamma_sign_flipped": "test_property[tests.planted:dgamma_sign_flipped-gradients]",
    "tests.planted:keras_style_declared_torch":
        "test_measured_convention_equals_declared[tests.planted:keras_style_declared_torch-new_batch_weight]",
}


@whole
def test_planted_bugs_fail_the_suite_named_by_their_property():
    r = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", "--pyargs", "equiv.suite",
            "--adapters", ",".join(PLANTED))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    failed = set(re.findall(r"^FAILED \S+::(\S+)", r.stdout, re.M))
    for spec, test_id in PLANTED.items():
        assert test_id in failed, (spec, sorted(failed))
    # correct properties of a buggy implementation still pass: only what is wrong fails
    assert "test_property[tests.planted:dgamma_sign_flipped-train_forward]" not in failed
    assert "declared a new-batch weight of 0.1 for the default momentum; measured a new-batch weight of 0.9" \
        in r.stdout


@whole
def test_check_prints_a_block_whose_replay_reproduces_the_case():
    r = run("-m", "equiv", "check", "--adapters", "tests.planted:eps_outside_sqrt")
    assert r.returncode == 1, r.stdout + r.stderr
    block = r.stdout[r.stdout.index("FAIL tests.planted:eps_outside_sqrt fails train_forward"):]
    assert "training-mode output equals the oracle's" in block.splitlines()[0]
    case = re.search(r"^  case:   (Case\(.*\))$", block, re.M).group(1)
    assert re.search(r"error:  y: max \|error\| \S+ is \S+× the bound .* worst at index \(\d+, \d+\) \(channel \d+\)",
                     block)
    replay = re.search(r"^  replay: equiv replay \"(Case\(.*\))\" --property (\w+) --adapters (\S+)$", block, re.M)
    assert replay and replay.group(1) == case and replay.group(2) == "train_forward"
    r2 = run("-m", "equiv", "replay", case, "--property", "train_forward", "--adapters", replay.group(3))
    assert r2.returncode == 1, r2.stdout + r2.stderr
    assert "train_forward: FAIL" in r2.stdout and re.search(r"index\s+oracle\s+implementation", r2.stdout)


@whole
def test_in_place_updates_and_wrong_outputs_are_judged_on_their_merits(tmp_path):
    """A function that writes its running statistics in place passes (it gets copies); one that returns
    a list, or the wrong shape, fails with one clear message in every property."""
    (tmp_path / "mybn.py").write_text(
        "import numpy as np\n"
        "from tests.planted import correct\n"
        "def inplace(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):\n"
        "    y, rm, rv = correct(x, gamma, beta, running_mean, running_var, "
        "training=training, momentum=momentum, eps=eps)\n"
        "    running_mean[...] = rm\n"
        "    running_var[...] = rv\n"
        "    return y, running_mean, running_var\n"
        "def as_list(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):\n"
        "    y, rm, rv = correct(x, gamma, beta, running_mean, running_var, "
        "training=training, momentum=momentum, eps=eps)\n"
        "    return y.tolist(), rm, rv\n"
        "def flat(x, gamma, beta, running_mean, running_var, *, training, momentum, eps):\n"
        "    y, rm, rv = correct(x, gamma, beta, running_mean, running_var, "
        "training=training, momentum=momentum, eps=eps)\n"
        "    return y.reshape(-1), rm, rv\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), CI="true")
    ok = subprocess.run([sys.executable, "-m", "equiv", "check", "--adapters", "mybn:inplace"], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for name, message in (("as_list", "returned list for y; expected a NumPy array"),
                          ("flat", "returned y of shape")):
        bad = subprocess.run([sys.executable, "-m", "equiv", "check", "--adapters", f"mybn:{name}"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        errors = [line for line in bad.stdout.splitlines() if line.startswith("  error:")]
        assert len(errors) >= 7 and all(message in line for line in errors), errors
        assert "Traceback" not in bad.stdout + bad.stderr


def test_example_autograd_function_adapter_passes_through_the_plugin():
    """examples/torch_autograd_bn.py: a custom torch.autograd.Function batch norm and its adapter."""
    pytest.importorskip("torch", reason="the example needs torch: pip install torch==2.13.0")
    spec = "examples.torch_autograd_bn:AutogradBatchNormAdapter"
    r = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--pyargs", "equiv.suite", "--adapters", spec)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    # the properties' skips (the option runs of equiv/suite/test_options.py skip for a layer without options)
    skipped = "".join(line for line in r.stdout.splitlines()
                      if line.startswith("SKIPPED") and "test_properties" in line)
    assert "gradients" not in skipped, "the example has a backward: its gradient properties must run"


@whole
def test_external_fingerprint_is_stored_where_save_puts_it_and_compared_later(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), CI="true")
    cmd = [sys.executable, "-m", "equiv", "fingerprint", "--adapters", "tests.planted:correct"]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "no fingerprint of it in results/fingerprints yet" in first.stdout, first
    saved = subprocess.run(cmd + ["--save"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert saved.returncode == 0 and list((tmp_path / "results" / "fingerprints").glob("*/*.json")), saved
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "(same version): no change" in again.stdout, again
