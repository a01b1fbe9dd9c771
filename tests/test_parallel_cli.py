"""``equiv distributed`` as a user runs it (a subprocess, from the repository root): a correct
data-parallel implementation of one's own passes (exit 0), planted bugs fail (exit 1) naming what
caught them, usage errors are one line (exit 2), and a registered implementation runs the same way."""
import json
import os
import subprocess
import sys

import pytest

from equiv import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "equiv", "distributed", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_correct_implementation_of_ones_own_passes(tmp_path):
    out = tmp_path / "dp.json"
    r = _run("--impls", "tests.planted_parallel:Correct", "--examples", "4", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    rec, = json.loads(out.read_text())["records"]
    assert rec["status"] == "pass" and rec["examples"] == 4 and rec["differences"] == []
    assert set(rec["worst_by"]) == {"y", "dx", "dgamma", "dbeta", "running mean", "running var"}
    assert rec["measured"]["weighting"] == "count"
    again = _run("--impls", "tests.planted_parallel:Correct", "--examples", "1", "--out", str(out))
    assert again.returncode == 2 and "exists; not overwritten" in again.stderr


@pytest.mark.parametrize("impl,caught", [
    ("WrongDeclaration", "declared param_grads 'sum', measured 'local'"),
    ("EqualWeighting", "declared weighting 'count', measured 'equal'")])
def test_a_planted_bug_fails_naming_what_caught_it(impl, caught):
    r = _run("--impls", f"tests.planted_parallel:{impl}", "--examples", "10")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"CONVENTION tests.planted_parallel:{impl}: {caught}" in r.stdout
    assert f"FAIL tests.planted_parallel:{impl}:" in r.stdout and "ParallelCase(case=Case(" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize("args,message", [
    (("--impls", "no.such"), "unknown data-parallel implementation 'no.such'"),
    (("--impls", ","), "names no implementation"),
    (("--impls", "tests.planted_parallel:SYNC"), "is not a subclass of equiv.parallel.ParallelAdapter"),
    (("--impls", "nomodule:X"), "no module named 'nomodule'"),
    (("--examples", "0"), "give a positive number")])
def test_usage_errors_are_one_line(args, message):
    r = _run(*args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


CHEAPEST = ("mxnet.sync", "torch.ddp", "flax.linen.jit", "tf.mirrored")


def test_a_registered_implementation_runs_the_same_way():
    name = next((n for n in CHEAPEST if registry.framework_installed(n, registry.PARALLEL)), None)
    if name is None:
        pytest.skip("no data-parallel framework installed here")
    r = _run("--impls", name, "--examples", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert name in r.stdout and "pass" in r.stdout
