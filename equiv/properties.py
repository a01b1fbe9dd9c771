"""The properties every adapter is held to, each a plain function of (adapter class, case, device).

Against the oracle: training forward, batch statistics, inference forward, running
statistics after k steps, gradients. Metamorphic (no oracle): invariance to a
per-channel a·x + b, output moments, per-channel sums of dx, batch permutation.
A check raises AssertionError with the measured error when it fails, and returns
the largest error/bound ratio it saw (the error distribution in reports).
"""
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

import reference as ref
from equiv import options as opt
from equiv import tolerance as tol
from equiv.core import FrameworkMissing, Unsupported
from equiv.dtypes import representable
from equiv.strategies import affine_draw, cases, edge_cases, min_count


class Rejected(Exception):
    """The case says nothing about the implementation (e.g. its exact output overflows the dtype)."""


def require(condition):
    if not condition:
        raise Rejected()


class Unconfigurable(Exception):
    """The adapter's momentum or eps is hard-coded: a property needing another value does not apply."""


PASS_THROUGH = (Unconfigurable, Unsupported, FrameworkMissing)   # not failures: the property does not apply


@dataclass(frozen=True)
class Property:
    name: str
    doc: str
    check: Callable
    needs_gradients: bool = False
    max_steps: int = 1
    needs_running_stats: bool = False


PROPERTIES = {}


def prop(name, doc, *, needs_gradients=False, max_steps=1, needs_running_stats=False):
    def register(fn):
        PROPERTIES[name] = Property(name, doc, fn, needs_gradients, max_steps, needs_running_stats)
        return fn
    return register


def strategy_for(p, adapter_cls):
    return cases(dtypes=adapter_cls.dtypes, ndims=adapter_cls.ndims, max_steps=p.max_steps,
                 min_count=min_count(adapter_cls.conventions))


def build(adapter_cls, case, device, **overrides):
    settings = dict(new_batch_weight=case.new_batch_weight, eps=case.eps)
    if case.options:   # layer options (equiv.options); none: built exactly as always
        settings["options"] = case.options
    settings.update(overrides)
    a = adapter_cls(case.channels, case.ndim, dtype=case.dtype, device=device, **settings)
    # a case whose exact output the dtype cannot hold says nothing about the implementation
    require(representable(case.dtype, ref.batch_norm_train(case.x, case.gamma, case.beta, eps=a.eps)[0]))
    a.set_state(**case.state)
    return a


def _unbiased(a):
    return a.conventions.running_var == "unbiased"


def _expected_update(a, case, old_mean, old_var, mean, var, w):
    """The oracle's running statistics after one update; a batch of one says nothing about an unbiased
    running variance (÷ m − 1 = 0: undefined), so such a case is rejected for the running statistics.
    A layer that does not track its running statistics (equiv.options) keeps the old ones."""
    if not opt.tracks(case.options):
        return np.asarray(old_mean, dtype=np.float64), np.asarray(old_var, dtype=np.float64)
    require(case.count > 1 or not _unbiased(a))
    new_mean, new_var = ref.update_running_stats(old_mean, old_var, mean, var, case.count,
                                                  new_batch_weight=w, unbiased=_unbiased(a))
    require(representable(case.dtype, new_mean, new_var))
    return new_mean, new_var


@prop("train_forward", "training-mode output equals the oracle's")
def train_forward(A, case, device):
    a = build(A, case, device)
    y, _, _ = ref.batch_norm_train(case.x, case.gamma, case.beta, eps=a.eps)
    require(representable(case.dtype, y))
    return tol.assert_close("y", a.forward_train(case.x), y,
                            tol.train_forward(case.x, case.gamma, case.beta, a.eps, case.dtype))


@prop("batch_stats", "with new-batch weight 1 the running stats become the batch mean and (un)biased variance",
      needs_running_stats=True)
def batch_stats(A, case, device):
    a = build(A, case, device, new_batch_weight=1.0)
    if opt.weight_at(case.options, a.new_batch_weight, 1) != 1.0:
        raise Unconfigurable()
    a.train_step(case.x, case.dy)
    _, mean, var = ref.batch_norm_train(case.x, case.gamma, case.beta, eps=a.eps)
    exp_mean, exp_var = _expected_update(a, case, case.running_mean, case.running_var, mean, var, 1.0)
    s = a.get_state()
    # the old statistics enter the bound: an update written old + w·(batch − old) (a lerp) or
    # old − (old − batch)·(1 − momentum) (Keras 2's assign_sub) rounds them even at w = 1
    bm, bv = tol.running_stats(case.x, case.running_mean, case.running_var, exp_mean, exp_var, 1.0, case.dtype)
    return max(tol.assert_close("batch mean", s["running_mean"], exp_mean, bm),
               tol.assert_close("batch var", s["running_var"], exp_var, bv))


@prop("infer_forward", "inference-mode output from given running stats equals the oracle's",
      needs_running_stats=True)
def infer_forward(A, case, device):
    a = build(A, case, device)
    if opt.infers_with_batch(case.options):   # no running statistics to use: the batch's own
        y = ref.batch_norm_train(case.x, case.gamma, case.beta, eps=a.eps)[0]
        require(representable(case.dtype, y))
        return tol.assert_close("y", a.forward_infer(case.x), y,
                                tol.train_forward(case.x, case.gamma, case.beta, a.eps, case.dtype))
    y = ref.batch_norm_infer(case.x, case.gamma, case.beta, case.running_mean, case.running_var, eps=a.eps)
    require(representable(case.dtype, y))
    return tol.assert_close("y", a.forward_infer(case.x), y,
                            tol.infer_forward(case.x, case.gamma, case.beta, case.running_mean,
                                              case.running_var, a.eps, case.dtype))


@prop("running_stats", "running mean and variance after k ≥ 1 training steps equal the oracle's",
      max_steps=4, needs_running_stats=True)
def running_stats(A, case, device):
    a = build(A, case, device)
    mean, var = case.running_mean, case.running_var
    bound_m = bound_v = 0.0
    worst = 0.0
    for i in range(case.steps):
        x = case.batch(i)
        a.train_step(x, case.dy)
        _, bmean, bvar = ref.batch_norm_train(x, case.gamma, case.beta, eps=a.eps)
        w = opt.weight_at(case.options, a.new_batch_weight, i + 1)
        new_mean, new_var = _expected_update(a, case, mean, var, bmean, bvar, w)
        dm, dv = tol.running_stats(x, mean, var, new_mean, new_var, w, case.dtype)
        # earlier errors are carried forward with factor (1 − w) ≤ 1
        bound_m, bound_v = bound_m + dm, bound_v + dv
        mean, var = new_mean, new_var
        s = a.get_state()
        worst = max(worst, tol.assert_close(f"running mean after step {i + 1}", s["running_mean"], mean, bound_m),
                    tol.assert_close(f"running var after step {i + 1}", s["running_var"], var, bound_v))
    return worst


@prop("gradients", "dx, dgamma, dbeta for a random upstream dy equal the oracle's", needs_gradients=True)
def gradients(A, case, device):
    a = build(A, case, device)
    rdx, rdgamma, rdbeta = ref.batch_norm_backward(case.x, case.gamma, case.dy, eps=a.eps)
    require(representable(case.dtype, rdx, rdgamma, rdbeta))
    _, dx, dgamma, dbeta = a.train_step(case.x, case.dy)
    bdx, bdgamma, bdbeta = tol.gradients(case.x, case.gamma, case.dy, a.eps, case.dtype)
    worst = tol.assert_close("dx", dx, rdx, bdx)
    # a layer without gamma or beta (equiv.options affine): no gradient of what it does not have
    for name, has, got, exp, bound in (("dgamma", opt.has_gamma, dgamma, rdgamma, bdgamma),
                                       ("dbeta", opt.has_beta, dbeta, rdbeta, bdbeta)):
        if not has(case.options):
            assert got is None, f"{name} from a layer without that parameter"
        else:
            worst = max(worst, tol.assert_close(name, got, exp, bound))
    return worst


@prop("affine_invariance", "a·x + b (a > 0, b per channel) leaves the training output unchanged, "
      "eps scaled by a²")
def affine_invariance(A, case, device):
    # Exact statement: BN_eps(x) = BN_{a²·eps}(a·x + b). A hard-coded eps admits a = 1 only.
    from equiv.dtypes import round_to
    a = build(A, case, device)
    scale, shift = affine_draw(case)
    try:
        b = build(A, case, device, eps=a.eps * scale ** 2)
    except Unsupported:               # an eps·a² the implementation refuses (MindSpore: eps ≤ 1 only)
        b = None
    if b is None or b.eps != a.eps * scale ** 2:   # eps hard-coded or refused: only a = 1 keeps it exact
        scale, b = 1.0, build(A, case, device)
    x2 = round_to(scale * case.x + shift, case.dtype)
    eps2 = b.eps
    y1 = a.forward_train(case.x)
    y2 = b.forward_train(x2)
    bound = (tol.train_forward(case.x, case.gamma, case.beta, a.eps, case.dtype)
             + tol.train_forward(x2, case.gamma, case.beta, eps2, case.dtype))
    return tol.assert_close("y(a·x+b) vs y(x)", y2, y1, bound)


@prop("output_moments", "per channel, the training output has mean beta and biased variance "
      "gamma²·var/(var + eps)")
def output_moments(A, case, device):
    a = build(A, case, device)
    y = a.forward_train(case.x)
    x = case.x
    red = (0,) + tuple(range(2, case.ndim))
    var = x.var(axis=red)
    e = tol.train_forward(x, case.gamma, case.beta, a.eps, case.dtype).max(axis=red)
    sd = np.abs(case.gamma) * np.sqrt(var / (var + a.eps))
    f64 = tol.K * tol.UNIT_ROUNDOFF["float64"] * tol.growth(case.count) * (np.abs(case.beta) + sd) ** 2
    return max(tol.assert_close("mean(y)", y.mean(axis=red), case.beta, e + f64),
               tol.assert_close("var(y)", y.var(axis=red), sd ** 2, 2 * sd * e + e ** 2 + f64))


@prop("dx_sums_zero", "per channel, Σ dx = 0", needs_gradients=True)
def dx_sums_zero(A, case, device):
    a = build(A, case, device)
    require(representable(case.dtype, *ref.batch_norm_backward(case.x, case.gamma, case.dy, eps=a.eps)))
    _, dx, _, _ = a.train_step(case.x, case.dy)
    red = (0,) + tuple(range(2, case.ndim))
    e = tol.gradients(case.x, case.gamma, case.dy, a.eps, case.dtype)[0].max(axis=red)
    return tol.assert_close("Σ dx", dx.sum(axis=red), np.zeros(case.channels), case.count * e)


@prop("batch_permutation", "permuting the batch permutes the training output")
def batch_permutation(A, case, device):
    perm = np.random.default_rng([case.seed, 7]).permutation(case.shape[0])
    a = build(A, case, device)
    y = a.forward_train(case.x)
    y_perm = build(A, case, device).forward_train(case.x[perm])
    bound = 2 * tol.train_forward(case.x, case.gamma, case.beta, a.eps, case.dtype)[perm]
    return tol.assert_close("y(x[perm]) vs y(x)[perm]", y_perm, y[perm], bound)


CALLS = (("training forward", "forward_train"), ("inference forward", "forward_infer"),
         ("default call", "forward_default"), ("training step", "train_step"))


def _updates(conv, method):
    """Whether a call of ``method`` moves the running statistics, by the declared conventions;
    None where the call is not defined (a default mode of "error" or "n/a")."""
    when = conv.stats_update.split("+")[0]   # "never": no call updates them
    if method == "forward_default":
        if conv.default_mode not in ("training", "inference"):
            return None
        method = "forward_train" if conv.default_mode == "training" else "forward_infer"
    return {"forward_train": when == "forward", "forward_infer": False,
            "train_step": when in ("forward", "backward")}[method]


@prop("state_after_calls", "after each call (training forward, inference forward, default call, "
      "training step) gamma, beta and the running statistics are what the oracle says: updated "
      "where the declared conventions update them, unchanged everywhere else")
def state_after_calls(A, case, device):
    worst = 0.0
    keys = ("gamma", "beta") if A.conventions.running_var == "none" or not opt.keeps_running_stats(case.options) \
        else ("gamma", "beta", "running_mean", "running_var")   # a layer without running statistics
    for label, method in CALLS:
        updates = _updates(A.conventions, method)
        if updates is None:
            continue
        a = build(A, case, device)
        getattr(a, method)(*((case.x, case.dy) if method == "train_step" else (case.x,)))
        expected = dict(case.state)
        bound = {k: 0.0 for k in expected}          # unchanged: exactly what was set
        if updates:
            # a layer with hard-coded momentum runs it in a plain call, whatever the adapter was asked
            w = opt.weight_at(case.options, a.new_batch_weight, 1) \
                if method != "forward_default" or A.conventions.configurable \
                else A.conventions.default_new_batch_weight
            _, mean, var = ref.batch_norm_train(case.x, case.gamma, case.beta, eps=a.eps)
            m, v = _expected_update(a, case, case.running_mean, case.running_var, mean, var, w)
            expected.update(running_mean=m, running_var=v)
            bound["running_mean"], bound["running_var"] = tol.running_stats(
                case.x, case.running_mean, case.running_var, m, v, w, case.dtype)
        state = a.get_state()
        for k in keys:
            worst = max(worst, tol.assert_close(f"{k} after the {label}", state[k], expected[k], bound[k]))
    return worst


class PropertyFailure(AssertionError):
    """A property failed: the statement, the minimal case, what was measured, and how to replay it."""

    def __init__(self, p, adapter_cls, case, cause):
        self.property, self.adapter, self.case, self.cause = p, adapter_cls.name, case, cause
        super().__init__(self.block())

    def replay_command(self, device="cpu"):
        dev = "" if device == "cpu" else f" --device {device}"
        return f"equiv replay \"{self.case!r}\" --property {self.property.name} --adapters {self.adapter}{dev}"

    def block(self):
        cause = self.cause if isinstance(self.cause, AssertionError) else \
            f"{type(self.cause).__name__}: {self.cause}"
        return (f"{self.adapter} fails {self.property.name}: {self.property.doc}\n"
                f"  case:   {self.case!r}\n"
                f"  error:  {cause}\n"
                f"  replay: {self.replay_command()}")


def applies(p, adapter_cls, options=None):
    """None when the property applies to the adapter (built with the layer ``options``), else the reason
    it does not."""
    if options:
        why = opt.unsupported(adapter_cls, options) or opt.not_applicable(p, options)
        if why:
            return why
    if p.needs_gradients and not adapter_cls.has_gradients:
        hint = " (a function provides them as fn.backward: see the README)" if adapter_cls.external else ""
        return f"{adapter_cls.name} computes no gradients{hint}"
    if p.needs_running_stats and adapter_cls.conventions.running_var == "none":
        return (f"{adapter_cls.name} keeps no running statistics (no inference mode, no moving averages): "
                f"{p.name} does not apply")
    return None


def run(p, adapter_cls, device="cpu", profile=None, seed=None, options=None):
    """Run one property under Hypothesis against one adapter; raises on a counterexample.

    Cases in the region of a known divergence (``equiv.known``) are left out and counted, per
    divergence and dtype ("excluded_by": {id: {dtype: n}}).
    Returns {"examples", "excluded", "excluded_by", "worst", "ratios"}: worst is the largest error/bound
    ratio seen, ratios the ratio of every example by dtype (the error distributions). ``seed`` fixes
    a random profile's draws (Hypothesis's ``seed``); a derandomized one draws the same without it.
    ``options``: the layer options (equiv.options) every case carries, under the profile's smaller
    "<profile>-options" budget; the documented divergences of equiv.known.OPTION_KNOWN then count too.
    """
    from hypothesis import assume, example, given, settings
    from hypothesis import seed as hypothesis_seed

    from equiv.known import divergences, everywhere, excluded, option_divergences

    stats = {"examples": 0, "excluded": 0, "worst": 0.0, "ratios": {}, "excluded_by": {}}
    extra = option_divergences(adapter_cls, p.name, options)
    whole = [d.id for d in divergences(adapter_cls, p.name) if d.region is everywhere] + \
        [d.id for d in extra if d.region.whole]
    if whole:   # documented for every input: nothing to run (the witness runs as a strict xfail)
        return dict(stats, everywhere=whole[0])
    failing = {}
    if p.name == "batch_stats":   # needs new-batch weight 1: measured once, not shrunk by Hypothesis
        probe = adapter_cls(1, adapter_cls.ndims[0], dtype=adapter_cls.dtypes[0], device=device,
                            new_batch_weight=1.0)
        if probe.new_batch_weight != 1.0:
            raise Unconfigurable()

    def test(case):
        if options:
            case = replace(case, options=dict(options), arrays=None)
        known = excluded(adapter_cls, p.name, case) or next((d for d in extra if d.region(case, p.name)), None)
        if known is not None:
            stats["excluded"] += 1
            by = stats["excluded_by"].setdefault(known.id, {})
            by[case.dtype] = by.get(case.dtype, 0) + 1
            assume(False)
        try:
            ratio = p.check(adapter_cls, case, device)
        except Rejected:
            assume(False)
        except PASS_THROUGH:
            raise
        except Exception:
            failing["case"] = case   # the last failure Hypothesis replays is the minimal one
            raise
        stats["examples"] += 1
        stats["worst"] = max(stats["worst"], ratio)
        stats["ratios"].setdefault(case.dtype, []).append(float(f"{ratio:.3g}"))

    test.__name__ = test.__qualname__ = p.name
    test = given(case=strategy_for(p, adapter_cls))(test)
    for case in edge_cases(adapter_cls.dtypes, adapter_cls.conventions, adapter_cls.ndims):
        test = example(case=case)(test)
    if profile is not None or getattr(adapter_cls, "example_budget", None) or options:
        from equiv.strategies import profile_for
        test = settings(settings.get_profile(profile_for(adapter_cls, profile, options=bool(options))))(test)
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    try:
        test()
    except PASS_THROUGH:
        raise
    except Exception as e:
        if "case" not in failing:
            raise
        raise PropertyFailure(p, adapter_cls, failing["case"], e) from e
    return stats


def replay(p, adapter_cls, case, device="cpu"):
    """Run one property on one case. Returns ("pass", ratio), ("n/a", why) or ("fail", exception)."""
    why = applies(p, adapter_cls, case.options)
    if why:
        return "n/a", why
    try:
        return "pass", p.check(adapter_cls, case, device)
    except Rejected:
        return "n/a", "the case says nothing about the implementation (its exact result overflows the dtype)"
    except Unconfigurable:
        return "n/a", f"{adapter_cls.name} hard-codes its momentum or eps"
    except Exception as e:
        return "fail", e
