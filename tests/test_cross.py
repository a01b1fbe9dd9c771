"""Pairwise: after translation two implementations agree step by step, as far as their
remaining declared differences allow; without translation they do not; a ported
checkpoint gives the same inference. Runs for every ordered pair of selected adapters
(the tox env `cross` installs torch, TensorFlow and JAX/Flax together)."""
import itertools
from dataclasses import replace

import numpy as np
import pytest

import reference as ref
from equiv import port_state, registry
from equiv import tolerance as tol
from equiv.adapters import ADAPTERS
from equiv.core import FrameworkMissing, MomentumRequired, same_weight
from equiv.known import excluded
from equiv.pytest_plugin import selected
from equiv.strategies import Case


def pytest_generate_tests(metafunc):
    if "pair" in metafunc.fixturenames:
        names = [n for n in selected(metafunc.config) if n in ADAPTERS]
        pairs = list(itertools.permutations(names, 2))
        metafunc.parametrize("pair", pairs, ids=[f"{a}>{b}" for a, b in pairs])


def _load(name):
    try:
        return registry.load(name)
    except FrameworkMissing as e:
        pytest.skip(str(e))


def _dtype(A, B):
    return "float64" if "float64" in A.dtypes and "float64" in B.dtypes else "float32"


def _case(A, B, ndim, seed=0):
    shape = (8, 3) if ndim == 2 else (4, 3, 3, 3)
    case = Case(dtype=_dtype(A, B), shape=shape, seed=seed, log10_scale=0.3, log10_offset=0.5,
                constant_channel=False, eps=1e-3, new_batch_weight=0.25, steps=3)
    _skip_documented(A, B, case)
    return case


def _skip_documented(A, B, case):
    """Skip, naming it, where a documented divergence of either layer covers the case."""
    for name in (A.name, B.name):
        for prop in ("train_forward", "running_stats", "gradients"):
            d = excluded(name, prop, case)
            if d:
                pytest.skip(f"{name}: documented divergence {d.id} covers this input")


def _own_defaults(X, case, ndim):
    """X built with its own defaults; a layer without a default momentum (Haiku's decay_rate, the moving
    average a user writes around tf.nn.moments) with the case's new-batch weight."""
    try:
        return X(case.channels, ndim, dtype=case.dtype)
    except MomentumRequired:
        return X(case.channels, ndim, dtype=case.dtype, new_batch_weight=case.new_batch_weight)


def _same_setting(x, w, eps):
    """The layer ``x`` uses weight ``w`` and ``eps``."""
    return x.eps == eps and same_weight(x.new_batch_weight, w)


def _pair_built(A, B, case):
    """Both built for the case's setting; a hard-coded layer imposes its own on both."""
    a = A(case.channels, case.ndim, dtype=case.dtype, new_batch_weight=case.new_batch_weight, eps=case.eps)
    b = B(case.channels, case.ndim, dtype=case.dtype, new_batch_weight=case.new_batch_weight, eps=case.eps)
    if not _same_setting(b, a.new_batch_weight, a.eps):
        fixed = b if _same_setting(a, case.new_batch_weight, case.eps) else a
        w, eps = fixed.new_batch_weight, fixed.eps
        a = A(case.channels, case.ndim, dtype=case.dtype, new_batch_weight=w, eps=eps)
        b = B(case.channels, case.ndim, dtype=case.dtype, new_batch_weight=w, eps=eps)
        if not _same_setting(b, a.new_batch_weight, a.eps):
            pytest.skip(f"{A.name} and {B.name} hard-code different settings")
    for x in (a, b):
        x.set_state(**case.state)
    return a, b


@pytest.mark.parametrize("ndim", [2, 4])
def test_translated_pair_agrees_step_by_step(pair, ndim):
    A, B = _load(pair[0]), _load(pair[1])
    case = _case(A, B, ndim)
    a, b = _pair_built(A, B, case)
    w, eps = a.new_batch_weight, a.eps
    if (w, eps) != (case.new_batch_weight, case.eps):   # a hard-coded layer imposed its setting on both
        _skip_documented(A, B, replace(case, new_batch_weight=w, eps=eps))
    # a layer without running statistics (jax.stax): outputs and gradients only
    no_stats = "none" in (A.conventions.running_var, B.conventions.running_var)
    means = {n: case.running_mean for n in ("a", "b")}
    vars_ = {n: case.running_var for n in ("a", "b")}
    for step in range(case.steps):
        x = case.batch(step)
        ya, dxa, dga, dba = a.train_step(x, case.dy)
        yb, dxb, dgb, dbb = b.train_step(x, case.dy)
        tol.assert_close(f"step {step + 1}: y", ya, yb,
                         2 * tol.train_forward(x, case.gamma, case.beta, eps, case.dtype))
        if A.has_gradients and B.has_gradients:
            bdx, bdg, bdb = tol.gradients(x, case.gamma, case.dy, eps, case.dtype)
            tol.assert_close(f"step {step + 1}: dx", dxa, dxb, 2 * bdx)
            tol.assert_close(f"step {step + 1}: dgamma", dga, dgb, 2 * bdg)
            tol.assert_close(f"step {step + 1}: dbeta", dba, dbb, 2 * bdb)
        if no_stats:
            continue
        _, bm, bv = ref.batch_norm_train(x, case.gamma, case.beta, eps=eps)
        for n, adapter in (("a", a), ("b", b)):
            old_m, old_v = means[n], vars_[n]
            means[n], vars_[n] = ref.update_running_stats(
                old_m, old_v, bm, bv, case.count, new_batch_weight=w,
                unbiased=adapter.conventions.running_var == "unbiased")
        sa, sb = a.get_state(), b.get_state()
        dm, dv = tol.running_stats(x, case.running_mean, case.running_var, means["a"], vars_["a"], w, case.dtype)
        bound_m, bound_v = 2 * (step + 1) * dm, 2 * (step + 1) * dv
        tol.assert_close(f"step {step + 1}: running mean", sa["running_mean"], sb["running_mean"], bound_m)
        # the estimator is the one declared difference that no argument translates:
        # the two running variances differ by exactly what the oracle predicts
        tol.assert_close(f"step {step + 1}: running var difference", sa["running_var"] - sb["running_var"],
                         vars_["a"] - vars_["b"], bound_v)


def test_untranslated_momentum_disagrees(pair):
    """The porting trap: the same momentum number passed to both frameworks."""
    A, B = _load(pair[0]), _load(pair[1])
    ca, cb = A.conventions, B.conventions
    if not (ca.configurable and cb.configurable) or ca.momentum_is == cb.momentum_is:
        pytest.skip("same momentum meaning, or a hard-coded layer: nothing to confuse")
    case = _case(A, B, 2)
    m = 0.1
    a = A(case.channels, 2, dtype=case.dtype, new_batch_weight=ca.new_batch_weight(m), eps=case.eps)
    b = B(case.channels, 2, dtype=case.dtype, new_batch_weight=cb.new_batch_weight(m), eps=case.eps)
    for x in (a, b):
        x.set_state(**case.state)
        x.train_step(case.x, case.dy)
    diff = np.abs(a.get_state()["running_mean"] - b.get_state()["running_mean"])
    _, bm, _ = ref.batch_norm_train(case.x, case.gamma, case.beta, eps=case.eps)
    expected = np.abs(0.8 * (bm - case.running_mean))          # weights 0.1 and 0.9 apart by 0.8
    np.testing.assert_allclose(diff, expected, rtol=1e-3)
    assert diff.max() > 0.1 * np.abs(bm - case.running_mean).max()


@pytest.mark.parametrize("ndim", [2, 4])
def test_ported_state_gives_same_inference(pair, ndim):
    A, B = _load(pair[0]), _load(pair[1])
    for X in (A, B):
        if X.conventions.running_var == "none":
            pytest.skip(f"{X.name} keeps no running statistics: there is no checkpoint to port, no inference mode")
    case = _case(A, B, ndim, seed=1)
    a, b = _own_defaults(A, case, ndim), _own_defaults(B, case, ndim)   # each with its own defaults
    a.set_state(**case.state)
    for step in range(2):
        a.train_step(case.batch(step), case.dy)
    state, notes = port_state(a.get_state(), A.name, B.name, src_eps=a.eps, dst_eps=b.eps)
    if a.eps != b.eps and any("build" in n for n in notes):
        b = B(case.channels, ndim, dtype=case.dtype, eps=a.eps, new_batch_weight=b.new_batch_weight)
        if b.eps != a.eps:
            pytest.skip(f"{B.name} hard-codes eps {b.eps:g}; {A.name}'s state cannot be folded: {notes}")
        state, notes = port_state(a.get_state(), A.name, B.name)
    b.set_state(**state)
    x = case.batch(2)
    s = a.get_state()
    bound = 2 * tol.infer_forward(x, s["gamma"], s["beta"], s["running_mean"], s["running_var"], a.eps, case.dtype)
    tol.assert_close("inference after porting", b.forward_infer(x), a.forward_infer(x), bound)
