"""`equiv port` against the frameworks: for every ordered pair of built-in layers installed
together (torch, tf.keras and flax in the tox env `cross`; the JAX layers in `jax`), the source
built with a momentum and eps of its own trains a few steps on the oracle's data, its state is
ported by the plan (the one its text is rendered from), and the target, built with the plan's
arguments, computes what the oracle computes: in inference, and in continued training with the
estimator and eps the plan names."""
import itertools

import pytest

import reference as ref
from equiv import registry, setting_of
from equiv import tolerance as tol
from equiv.conventions import DECLARED
from equiv.known import excluded
from equiv.port import PORTABLE, plan
from equiv.pytest_plugin import selected
from equiv.strategies import Case
from tests.test_cross import _dtype, _load

W, EPS = 0.25, 1e-3        # the source's setting: new-batch weight and eps, away from every default


def pytest_generate_tests(metafunc):
    if "pair" in metafunc.fixturenames:
        names = [n for n in selected(metafunc.config) if n in PORTABLE and registry.is_known(n) and "+" not in n]
        pairs = list(itertools.permutations(names, 2))
        metafunc.parametrize("pair", pairs, ids=[f"{a}>{b}" for a, b in pairs])


def _case(A, B, ndim, seed):
    """Inputs with a mean small against their std (a fast variance loses nothing here), unless a
    documented divergence of either layer covers their running statistics or inference (one that
    covers the training output only leaves that out: Oracle.train)."""
    shape = (8, 3) if ndim == 2 else (4, 3, 3, 3)
    case = Case(dtype=_dtype(A, B), shape=shape, seed=seed, log10_scale=0.3, log10_offset=-1.0,
                constant_channel=False, eps=EPS, new_batch_weight=W, steps=4)
    for name in (A.name, B.name):
        for prop in ("running_stats", "infer_forward"):
            d = excluded(name, prop, case)
            if d:
                pytest.skip(f"{name}: documented divergence {d.id} covers this input")
    return case


class Oracle:
    """The oracle's running statistics, step by step, with one estimator."""

    def __init__(self, case, mean, var):
        self.case, self.mean, self.var = case, mean, var

    def train(self, a, x, w, eps, estimator, what):
        """One training step of adapter ``a`` on ``x``, checked against the oracle."""
        case = self.case
        y, *_ = a.train_step(x, case.dy)
        y_ref, bm, bv = ref.batch_norm_train(x, case.gamma, case.beta, eps=eps)
        if not excluded(a.name, "train_forward", case):
            tol.assert_close(f"{what}: y", y, y_ref, tol.train_forward(x, case.gamma, case.beta, eps, case.dtype))
        old_m, old_v = self.mean, self.var
        self.mean, self.var = ref.update_running_stats(old_m, old_v, bm, bv, case.count, new_batch_weight=w,
                                                       unbiased=estimator == "unbiased")
        dm, dv = tol.running_stats(x, old_m, old_v, self.mean, self.var, w, case.dtype)
        s = a.get_state()
        self.slack = getattr(self, "slack", 0) + 1          # bounds add up over the steps
        tol.assert_close(f"{what}: running mean", s["running_mean"], self.mean, self.slack * dm)
        tol.assert_close(f"{what}: running var", s["running_var"], self.var, self.slack * dv)


@pytest.mark.parametrize("ndim", [2, 4])
def test_ported_by_the_plan_computes_what_the_oracle_computes(pair, ndim):
    src, dst = pair
    A, B = _load(src), _load(dst)
    case = _case(A, B, ndim, seed=2)
    p = plan(src, dst, DECLARED[src].momentum_for(W), EPS)
    w, eps = p.setting.new_batch_weight, p.setting.eps
    a = A(case.channels, ndim, dtype=case.dtype, new_batch_weight=w, eps=eps)
    a.set_state(**case.state)
    oracle = Oracle(case, case.running_mean, case.running_var)
    for step in range(2):
        oracle.train(a, case.batch(step), w, eps, DECLARED[src].running_var, f"{src} step {step + 1}")

    built = setting_of(dst, **p.dst_arguments)           # the target, built from the plan's arguments
    assert (built.new_batch_weight, built.eps) == (w, eps)
    b = B(case.channels, ndim, dtype=case.dtype, new_batch_weight=built.new_batch_weight, eps=built.eps)
    b.set_state(**p.vectors(a.get_state()))
    x = case.batch(2)
    y_ref = ref.batch_norm_infer(x, case.gamma, case.beta, oracle.mean, oracle.var, eps=eps)
    bound = tol.infer_forward(x, case.gamma, case.beta, oracle.mean, oracle.var, eps, case.dtype)
    tol.assert_close(f"{dst} inference after porting", b.forward_infer(x), y_ref, 2 * bound)

    # continued training: the target updates with the estimator the plan names; where the plan says
    # training continues as in the source, the source's next steps give the same numbers
    assert p.continues == (p.running_var == DECLARED[src].running_var)
    after = Oracle(case, oracle.mean, oracle.var)
    after.slack = oracle.slack + 1                        # the ported state carries the source's rounding
    for step in range(2, 4):
        after.train(b, case.batch(step), w, eps, p.running_var, f"{dst} step {step - 1} after porting")
        if p.continues:
            oracle.train(a, case.batch(step), w, eps, DECLARED[src].running_var, f"{src} step {step + 1}")


def test_target_eps_folded_by_the_plan_keeps_inference(pair):
    src, dst = pair
    A, B = _load(src), _load(dst)
    e_dst = DECLARED[dst].default_eps
    if e_dst == EPS:
        pytest.skip(f"{dst}'s default eps is {EPS:g}: nothing to fold")
    case = _case(A, B, 2, seed=3)
    p = plan(src, dst, DECLARED[src].momentum_for(W), EPS, dst_eps=e_dst)
    a = A(case.channels, 2, dtype=case.dtype, new_batch_weight=p.setting.new_batch_weight, eps=EPS)
    a.set_state(**case.state)
    a.train_step(case.batch(0), case.dy)
    s = a.get_state()
    built = setting_of(dst, **p.dst_arguments)
    assert built.eps == e_dst
    b = B(case.channels, 2, dtype=case.dtype, new_batch_weight=built.new_batch_weight, eps=built.eps)
    b.set_state(**p.vectors(s))
    x = case.batch(1)
    y_ref = ref.batch_norm_infer(x, s["gamma"], s["beta"], s["running_mean"], s["running_var"], eps=EPS)
    bound = tol.infer_forward(x, s["gamma"], s["beta"], s["running_mean"], s["running_var"], EPS, case.dtype)
    tol.assert_close(f"{dst} inference, eps folded", b.forward_infer(x), y_ref, 2 * bound)
