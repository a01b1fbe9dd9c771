"""Hypothesis strategies: every random input the properties see is drawn here.

A drawn ``Case`` holds a few scalars (shape, dtype, scale, offset, eps, weight, seed);
the arrays are generated from them with NumPy, so a failing example prints as a short,
reproducible line (``Case(...)``) and shrinks on the scalars. Data are rounded to the
case's dtype before anyone sees them, so the oracle gets exactly the framework's input.

Profiles: ``ci`` (derandomized, fixed example budget: the same cases on every run, on any
machine; the default everywhere), ``dev`` (quick, random) and ``thorough`` (many random examples),
the search for new cases, asked for by name: ``--hypothesis-profile``, ``--profile`` or
``EQUIV_PROFILE`` (``scripts/sweep.py`` records such a search).
"""
import os
from dataclasses import dataclass, field, fields

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from equiv.dtypes import round_to

_common = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
# dev and thorough say derandomize=False: a profile registered without it inherits Hypothesis's
# default, which is derandomized wherever a CI variable is set (even empty), so a search there drew
# the same cases every run and recorded no seed
settings.register_profile("dev", max_examples=25, derandomize=False, **_common)
settings.register_profile("ci", max_examples=40, derandomize=True, database=None, **_common)
settings.register_profile("thorough", max_examples=400, derandomize=False, **_common)
# for the tests that plant bugs: deterministic, and enough examples to reach the rare regions
PROFILES = ("dev", "ci", "thorough")   # the ones a user picks (--profile, EQUIV_PROFILE)
settings.register_profile("mutation", max_examples=200, derandomize=True, database=None, **_common)

# A smaller budget for implementations that compile or trace a graph per example: torch.compile
# recompiles for every new eps and momentum (constants of the graph) and every new dtype, rank and
# size-0/1 specialization, ~0.5 s warm and several seconds cold on the CPU; torch.export traces a
# program per shape and mode. An adapter that sets ``example_budget = "compile"`` runs the
# "<profile>-compile" profile: the same strategies (derandomized where ci is), with 4 examples under
# dev and ci (on a cold inductor cache every example is a compile of a few seconds: ~2.5 minutes for
# torch.builtin+compile's share of the torch env), 100 under thorough, 50 under mutation.
COMPILE_EXAMPLES = {"dev": 4, "ci": 4, "thorough": 100, "mutation": 50}
for _name, _n in COMPILE_EXAMPLES.items():
    settings.register_profile(f"{_name}-compile", parent=settings.get_profile(_name), max_examples=_n)
# The runs with a layer option (equiv.options; one run per property and setting): a smaller budget, as
# the option changes one aspect of the layer that the full runs hold at its default.
OPTION_EXAMPLES = {"dev": 8, "ci": 8, "thorough": 100, "mutation": 50}
for _name, _n in OPTION_EXAMPLES.items():
    settings.register_profile(f"{_name}-options", parent=settings.get_profile(_name), max_examples=_n)


PROFILES = ("dev", "ci", "thorough", "mutation")


def default_profile():
    """``EQUIV_PROFILE``, else ``ci``: one verdict per commit; a random search is asked for by name."""
    return os.environ.get("EQUIV_PROFILE") or "ci"


def profile_for(adapter_cls, name=None, options=False):
    """The profile an adapter runs under: ``name`` (default: ``default_profile()``), or its smaller
    "<name>-compile" variant when the adapter declares ``example_budget = "compile"``, or "<name>-options"
    for a run with layer options (``options``)."""
    name = name or default_profile()
    budget = "options" if options else getattr(adapter_cls, "example_budget", None)
    return f"{name}-{budget}" if budget and name in COMPILE_EXAMPLES else name   # same keys in OPTION_EXAMPLES


def profile_error():
    """None, or what is wrong with $EQUIV_PROFILE."""
    name = os.environ.get("EQUIV_PROFILE")
    if name and name not in PROFILES:
        return f"EQUIV_PROFILE={name!r} is not a Hypothesis profile; use one of {', '.join(PROFILES)}"
    return None


# Ranges per dtype: log10 of the data scale, and the largest |value| the data may reach.
SCALE_RANGE = {"float64": (-3, 3), "float32": (-3, 3), "float16": (-2, 2), "bfloat16": (-3, 3)}
MAX_ABS = {"float64": 1e12, "float32": 1e12, "float16": 3e4, "bfloat16": 1e12}


@dataclass
class Case:
    dtype: str
    shape: tuple
    seed: int
    log10_scale: float           # data std ~ 10**log10_scale
    log10_offset: float          # per-channel |mean|/std ~ 10**log10_offset; None for zero mean
    constant_channel: bool       # channel 0 has zero variance
    eps: float
    new_batch_weight: float
    steps: int = 1
    arrays: dict = field(default=None, repr=False, compare=False)
    # layer options (equiv.options): name -> value; empty: every option at its default, and the case
    # prints as it always has
    options: dict = field(default_factory=dict, repr=False)

    def __repr__(self):
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr]
        if self.options:
            shown.append(f"options={self.options!r}")
        return f"Case({', '.join(shown)})"

    @staticmethod
    def pow10(u):
        return 10.0 ** u

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def channels(self):
        return self.shape[1]

    @property
    def count(self):
        """Values per channel (N·H·W)."""
        return int(np.prod(self.shape)) // self.shape[1]

    def batch(self, i=0):
        """Batch i (0 ≤ i < steps) as float64 data rounded to the dtype."""
        rng = np.random.default_rng([self.seed, 1 + i])
        c = self.channels
        scale = self.pow10(self.log10_scale)
        bshape = (1, c) + (1,) * (self.ndim - 2)
        std = scale * self.pow10(rng.uniform(-0.5, 0.5, size=c))
        mean = np.zeros(c) if self.log10_offset is None else \
            rng.choice([-1.0, 1.0], size=c) * std * self.pow10(self.log10_offset + rng.uniform(-0.3, 0))
        x = mean.reshape(bshape) + std.reshape(bshape) * rng.standard_normal(self.shape)
        if self.constant_channel:
            x[:, 0] = mean[0] if mean[0] != 0 else scale
        return round_to(x, self.dtype)

    @property
    def x(self):
        return self.batch(0)

    def _vectors(self):
        if self.arrays is None:
            rng = np.random.default_rng([self.seed, 0])
            c = self.channels
            r = lambda a: round_to(a, self.dtype)  # noqa: E731
            gamma = rng.choice([-1.0, 1.0], size=c) * self.pow10(rng.uniform(-1, 1, size=c))
            beta = rng.standard_normal(c) * self.pow10(rng.uniform(-1, 1, size=c))
            if self.options.get("affine", True) in (False, "no_scale"):   # no gamma: gamma 1
                gamma = np.ones(c)
            if self.options.get("affine", True) in (False, "no_center"):  # no beta: beta 0
                beta = np.zeros(c)
            self.arrays = dict(
                gamma=r(gamma),
                beta=r(beta),
                running_mean=r(rng.standard_normal(c) * self.pow10(rng.uniform(-1, 1, size=c))),
                running_var=r(self.pow10(rng.uniform(-1, 1, size=c))),
                dy=r(rng.standard_normal(self.shape) * self.pow10(rng.uniform(-1, 1))),
            )
        return self.arrays

    @property
    def gamma(self):
        return self._vectors()["gamma"]

    @property
    def beta(self):
        return self._vectors()["beta"]

    @property
    def running_mean(self):
        return self._vectors()["running_mean"]

    @property
    def running_var(self):
        return self._vectors()["running_var"]

    @property
    def dy(self):
        return self._vectors()["dy"]

    @property
    def state(self):
        return dict(gamma=self.gamma, beta=self.beta, running_mean=self.running_mean,
                    running_var=self.running_var)

    def max_kappa(self):
        from equiv.tolerance import kappa
        return float(max(kappa(self.batch(i), self.eps).max() for i in range(self.steps)))


@st.composite
def cases(draw, dtypes=("float64", "float32"), ndims=(2, 4), max_steps=1, min_count=2):
    """A batch-norm case: shape, dtype, data scale and offset, eps, new-batch weight. ``ndims``: the ranks
    drawn (equiv.core.RANKS; an adapter's ``ndims``); 2 and 4 draw as they always have."""
    dtype = draw(st.sampled_from(dtypes))
    ndim = draw(st.sampled_from(ndims))
    c = draw(st.integers(1, 5))
    if ndim == 2:
        n = draw(st.integers(max(min_count, 1), 16))
        shape = (n, c)
    elif ndim == 3:   # (N, C, L): at most 48 values per channel
        n = draw(st.integers(1, 6))
        length = draw(st.integers(1 if n >= min_count else min_count, 8))
        shape = (n, c, length)
    elif ndim == 5:   # (N, C, D, H, W): at most 108 values per channel
        n, d, h = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        shape = (n, c, d, h, draw(st.integers(1 if n * d * h >= min_count else min_count, 3)))
    else:
        n = draw(st.integers(1, 6))
        h = draw(st.integers(1, 6))
        w = draw(st.integers(1 if n * h >= min_count else min_count, 6))
        shape = (n, c, h, w)
    lo, hi = SCALE_RANGE[dtype]
    log10_scale = draw(st.floats(lo, hi))
    log10_offset = draw(st.one_of(st.none(), st.floats(-1, 4)))
    if log10_offset is not None:   # keep |x| within what the dtype can hold
        log10_offset = float(min(log10_offset, np.log10(MAX_ABS[dtype]) - log10_scale - 1))
    eps = 10.0 ** draw(st.floats(-12, -1))
    weight = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.1, 0.01]), st.floats(0, 1)))
    return Case(dtype=dtype, shape=shape, seed=draw(st.integers(0, 2**32 - 1)),
                log10_scale=log10_scale, log10_offset=log10_offset,
                constant_channel=draw(st.booleans()), eps=eps, new_batch_weight=weight,
                steps=draw(st.integers(1, max_steps)))


def affine_draw(case):
    """The a > 0 and per-channel b that affine_invariance applies to a case (a·x + b): a in [1, 10],
    b standard normal times max|x|, from the case's seed. The documented regions (equiv.known) that
    depend on a·x + b draw them here too."""
    rng = np.random.default_rng([case.seed, 99])
    scale = 10.0 ** rng.uniform(0, 1)   # a ≥ 1: var + eps only grows, no new underflow
    shift = rng.standard_normal((1, case.channels) + (1,) * (case.ndim - 2)) * np.abs(case.x).max()
    return scale, shift


# Cases every property starts with (Hypothesis explicit examples, in every profile), for inputs the
# derandomized draws do not reach: a tiny new-batch weight against a wide batch, where a layer that
# holds its momentum in float32 weighs the batch by 1 − float32(1 − w) rather than w (1.00136e-5 for
# 1e-5) and the adapter must report the weight applied; in float64, a weight that 1 − w does not hold.
EDGE_CASES = (
    Case(dtype="float32", shape=(2, 1), seed=2, log10_scale=1.0, log10_offset=None, constant_channel=False,
         eps=0.1, new_batch_weight=1e-05),
    Case(dtype="float64", shape=(2, 1), seed=2, log10_scale=0.0, log10_offset=None, constant_channel=False,
         eps=0.1, new_batch_weight=1.192092896e-07),
)


# A batch of one (one value per channel: the last batch of an epoch, per-example fine-tuning, a 1×1
# feature map with batch 1), in 2-D and in 4-D, for implementations whose conventions define it as the
# oracle does (batch_of_one "beta": var 0, x̂ = 0, y = beta); the strategy draws it too (min_count=1).
BATCH_OF_ONE = (
    Case(dtype="float32", shape=(1, 3), seed=3, log10_scale=0.0, log10_offset=1.0, constant_channel=False,
         eps=1e-5, new_batch_weight=0.1),
    Case(dtype="float64", shape=(1, 2, 1, 1), seed=3, log10_scale=2.0, log10_offset=None, constant_channel=False,
         eps=1e-3, new_batch_weight=1.0),
)


# What the random draws stop short of, and why: channels 1–5 and at most 16 (2-D), 48 (3-D), 216 (4-D) or
# 108 (5-D) values per channel, because every new shape costs a compiling implementation a trace and a
# compile (77–146 ms warm per shape for the JAX adapters: scripts/shape_cost.py). Two explicit cases reach
# beyond, in every profile: many values per channel at an offset, where the order and precision of float32
# accumulation matter (4,096 values per channel, |mean|/std ~ 300: the fast variance E[x²] − E[x]² loses
# all of it), and a wide layer (256 channels, one row of a batch of 4 each).
LARGE_CASES = (
    Case(dtype="float32", shape=(64, 2, 8, 8), seed=4, log10_scale=0.0, log10_offset=2.5, constant_channel=False,
         eps=1e-5, new_batch_weight=0.1),
    Case(dtype="float64", shape=(4, 256), seed=5, log10_scale=0.0, log10_offset=0.0, constant_channel=True,
         eps=1e-5, new_batch_weight=0.1),
)


def min_count(conventions):
    """The fewest values per channel a case may have for an implementation: 1 where its conventions
    define a batch of one as the oracle does (batch_of_one "beta"), else 2 (PyTorch raises; Paddle returns
    the input: measured by the batch_of_one probe, not by the properties)."""
    return 1 if conventions.batch_of_one == "beta" else 2


def edge_cases(dtypes, conventions=None, ndims=(2, 4)):
    """The EDGE_CASES of the given dtypes and ranks, and the BATCH_OF_ONE cases where the conventions define
    one."""
    ones = BATCH_OF_ONE if conventions is not None and min_count(conventions) == 1 else ()
    return [c for c in EDGE_CASES + LARGE_CASES + ones if c.dtype in dtypes and c.ndim in ndims]


def parse_case(text):
    """The Case a failure printed (``Case(dtype='float32', shape=(4, 2), ...)``), read back without
    eval: every argument must be a literal. Raises ValueError naming what is wrong."""
    import ast
    from dataclasses import fields as dc_fields
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"not a Case(...) line: {e.msg} at column {e.offset}") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Case"):
        raise ValueError("not a Case(...) line: give it as printed, e.g. \"Case(dtype='float64', shape=(4, 2), ...)\"")
    if node.args:
        raise ValueError("Case(...) takes keyword arguments only, as printed")
    names = {f.name for f in dc_fields(Case)} - {"arrays"}
    kwargs = {}
    for kw in node.keywords:
        if kw.arg not in names:
            raise ValueError(f"Case has no field {kw.arg!r}; fields: {', '.join(sorted(names))}")
        value = kw.value
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "float64"
                and isinstance(value.func.value, ast.Name) and value.func.value.id in ("np", "numpy")
                and len(value.args) == 1 and not value.keywords):
            value = value.args[0]   # np.float64(3.47...): NumPy 2's repr, printed by draws before float(min(...))
        try:
            kwargs[kw.arg] = ast.literal_eval(value)
        except ValueError:
            raise ValueError(f"Case field {kw.arg} must be a literal value") from None
    missing = sorted(names - set(kwargs) - {"steps", "options"})
    if missing:
        raise ValueError(f"Case(...) lacks {', '.join(missing)}")
    kwargs["shape"] = tuple(kwargs["shape"])
    from equiv.options import unknown
    if not isinstance(kwargs.get("options", {}), dict) or unknown(kwargs.get("options")):
        raise ValueError(f"Case options: {unknown(kwargs['options']) or 'a mapping, name -> value'}")
    from equiv.core import RANKS
    if kwargs["dtype"] not in SCALE_RANGE or len(kwargs["shape"]) not in RANKS or min(kwargs["shape"]) < 1:
        raise ValueError(f"Case dtype must be one of {', '.join(SCALE_RANGE)} and shape 2-D to 5-D with sizes >= 1")
    return Case(**kwargs)


@dataclass
class ParallelCase:
    """A data-parallel case: ``case`` is the global batch (its dtype, shape, data, eps, weight,
    steps); ``sizes`` the rows of it each replica gets, in order (Σ sizes = N)."""
    case: Case
    sizes: tuple

    @property
    def replicas(self):
        return len(self.sizes)

    def shards(self, a):
        return np.split(np.asarray(a), np.cumsum(self.sizes)[:-1], axis=0)

    def steps(self):
        """[(x shards, dy shards)] per step: what ``ParallelAdapter.run`` takes."""
        return [(self.shards(self.case.batch(i)), self.shards(self.case.dy)) for i in range(self.case.steps)]


@st.composite
def parallel_cases(draw, replicas=(2, 4), dtypes=("float64", "float32"), ndims=(2, 4), unequal=True,
                   empty=False, max_steps=3):
    """A batch split over R replicas: equal shards, or (``unequal``) of different sizes, an empty one
    among them with ``empty``; every non-empty shard holds ≥ 2 values per channel."""
    R = draw(st.sampled_from(replicas))
    ndim = draw(st.sampled_from(ndims))
    c = draw(st.integers(1, 4))
    hw = () if ndim == 2 else (draw(st.integers(1, 4)), draw(st.integers(2, 4)))
    low = 2 if ndim == 2 else 1
    if unequal and draw(st.booleans()):
        sizes = [draw(st.integers(low, 6)) for _ in range(R)]
        if empty and draw(st.booleans()):
            sizes[draw(st.integers(0, R - 1))] = 0
    else:
        sizes = [draw(st.integers(low, 6))] * R
    dtype = draw(st.sampled_from(dtypes))
    lo, hi = SCALE_RANGE[dtype]
    log10_scale = draw(st.floats(lo, hi))
    log10_offset = draw(st.one_of(st.none(), st.floats(-1, 4)))
    if log10_offset is not None:
        log10_offset = float(min(log10_offset, np.log10(MAX_ABS[dtype]) - log10_scale - 1))
    case = Case(dtype=dtype, shape=(sum(sizes), c) + hw, seed=draw(st.integers(0, 2**32 - 1)),
                log10_scale=log10_scale, log10_offset=log10_offset, constant_channel=draw(st.booleans()),
                eps=10.0 ** draw(st.floats(-12, -1)),
                new_batch_weight=draw(st.one_of(st.sampled_from([1.0, 0.1]), st.floats(0, 1))),
                steps=draw(st.integers(1, max_steps)))
    return ParallelCase(case=case, sizes=tuple(sizes))
