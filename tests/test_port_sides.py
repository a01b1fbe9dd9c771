"""`equiv port` for every ordered pair of built-in layers, each side in the env that installs it, the
other side played by the float64 oracle (what that side is held to):

- the target side: the source's state is what the oracle computes for the source trained a few
  steps with its own momentum, eps and running-variance estimator; ported by the plan (the one its
  text is rendered from) into the target built with the plan's arguments, the target's inference and
  its continued training (with the estimator the plan names) compute what the oracle computes;
- the source side: the source trained a few steps, its state read through the adapter and written
  by the plan under the target's names (``Plan.apply``) is what the oracle says the target must
  hold: what its inference reads (hidden averages debiased by the counter, eps folded) and what its
  next update of the running statistics gives.

``test_every_pair_has_both_sides_somewhere`` (NumPy only) reads tox.ini and fails where a side of a
pair runs in no env of the matrix."""
import configparser
import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import reference as ref
from equiv import registry, setting_of
from equiv import tolerance as tol
from equiv.conventions import ARGUMENTS, DEBIAS_STATE, DECLARED, STATE_NAMES
from equiv.known import excluded
from equiv.port import PORTABLE, ROLES, plan
from equiv.pytest_plugin import selected
from equiv.strategies import Case
from tests.test_cross import _load
from tests.test_port_frameworks import EPS, Oracle, W

ROOT = Path(__file__).resolve().parent.parent
THIS = "tests/test_port_sides.py"
STEPS = 2                  # training steps before porting, and after it


def pytest_generate_tests(metafunc):
    for side in ("dst_pair", "src_pair"):
        if side in metafunc.fixturenames:
            here = [n for n in selected(metafunc.config) if n in PORTABLE and registry.is_known(n)]
            pairs = [(s, d) for s, d in itertools.permutations(PORTABLE, 2) if (d if side == "dst_pair" else s) in here]
            metafunc.parametrize(side, pairs, ids=[f"{s}>{d}" for s, d in pairs])


def _case(layer, A, seed):
    """NCHW inputs with a mean small against their std, in the first of float64, float32 that ``layer``
    takes and no documented divergence of it covers (in its running statistics or inference); skipped
    where one covers both."""
    found = None
    for dtype in [d for d in ("float64", "float32") if d in A.dtypes]:
        case = Case(dtype=dtype, shape=(4, 3, 2, 2), seed=seed, log10_scale=0.3, log10_offset=-1.0,
                    constant_channel=False, eps=EPS, new_batch_weight=W, steps=2 * STEPS + 1)
        found = next(filter(None, (excluded(layer, p, case) for p in ("running_stats", "infer_forward"))), None)
        if found is None:
            return case
    pytest.skip(f"{layer}: documented divergence {found.id} covers this input")


def _plan(src, dst, dst_eps=None):
    return plan(src, dst, DECLARED[src].momentum_for(W), EPS, dst_eps)


def _target_eps(dst):
    """The eps the target keeps in the folded plan: its default, or a quarter of EPS where that is EPS."""
    return DECLARED[dst].default_eps if DECLARED[dst].default_eps != EPS else EPS / 4


# --- the target side: the oracle plays the source ------------------------------------------------

def _oracle_source(case, src, w, eps):
    """The source's four vectors after STEPS training steps, as the oracle computes them with the
    source's estimator (what its inference reads, as Plan.apply takes them)."""
    mean, var = case.running_mean, case.running_var
    for step in range(STEPS):
        _, bm, bv = ref.batch_norm_train(case.batch(step), case.gamma, case.beta, eps=eps)
        mean, var = ref.update_running_stats(mean, var, bm, bv, case.count, new_batch_weight=w,
                                             unbiased=DECLARED[src].running_var == "unbiased")
    return dict(gamma=case.gamma, beta=case.beta, running_mean=mean, running_var=var)


def _built(dst, p, eps):
    """The target's canonical setting for the plan's constructor arguments: the source's new-batch
    weight, and ``eps``."""
    built = setting_of(dst, **p.dst_arguments)
    assert (built.new_batch_weight, built.eps) == (p.setting.new_batch_weight, eps)
    return built


def test_target_ported_from_the_oracle_computes_what_the_oracle_computes(dst_pair):
    src, dst = dst_pair
    B = _load(dst)
    case = _case(dst, B, seed=4)
    p = _plan(src, dst)
    w, eps = p.setting.new_batch_weight, p.setting.eps
    s = _oracle_source(case, src, w, eps)
    built = _built(dst, p, eps)
    b = B(case.channels, case.ndim, dtype=case.dtype, new_batch_weight=built.new_batch_weight, eps=built.eps)
    b.set_state(**p.vectors(s))
    _holds_what_the_plan_writes(b, dst, p.apply(s), case.dtype)
    x = case.batch(STEPS)
    y_ref = ref.batch_norm_infer(x, s["gamma"], s["beta"], s["running_mean"], s["running_var"], eps=eps)
    bound = tol.infer_forward(x, s["gamma"], s["beta"], s["running_mean"], s["running_var"], eps, case.dtype)
    tol.assert_close(f"{dst} inference after porting from {src}", b.forward_infer(x), y_ref, 2 * bound)

    # continued training: the estimator the plan names; where the plan says it continues as the source
    # does, that is the source's own
    assert p.continues == (p.running_var == DECLARED[src].running_var and not p.fold)
    after = Oracle(case, s["running_mean"], s["running_var"])
    after.slack = 1                                          # the ported state's rounding in the target
    for step in range(STEPS + 1, 2 * STEPS + 1):
        after.train(b, case.batch(step), w, eps, p.running_var, f"{dst} step {step - STEPS} after porting")

    # the target's own eps kept, the difference folded into the running variance: inference unchanged
    e_dst = _target_eps(dst)
    if np.all(s["running_var"] + eps - e_dst >= 0):
        q = _plan(src, dst, dst_eps=e_dst)
        built = _built(dst, q, e_dst)
        b = B(case.channels, case.ndim, dtype=case.dtype, new_batch_weight=built.new_batch_weight, eps=built.eps)
        b.set_state(**q.vectors(s))
        tol.assert_close(f"{dst} inference after porting from {src}, eps folded", b.forward_infer(x), y_ref,
                         2 * bound)


def _held(layer, obj, name):
    """The framework state entry ``name`` (the plan's name) of a Haiku or Equinox adapter ``obj``."""
    if layer == "haiku":          # "params/batch_norm/scale", "state/batch_norm/~/mean_ema/hidden", ...
        kind, *module, leaf = name.split("/")
        return np.asarray(getattr(obj, kind)["/".join(module)][leaf])
    # Equinox: the adapter's weight, bias, a, b and first (the counter or the first-time flag)
    keys = dict(zip(STATE_NAMES[layer], ("weight", "bias", "a", "b")))
    keys.update(dict.fromkeys(DEBIAS_STATE[layer].get("counter", ()) + DEBIAS_STATE[layer].get("first", ()), "first"))
    return np.asarray(obj.held[keys[name]])


def _holds_what_the_plan_writes(b, dst, written, dtype):
    """Where the target keeps more than the four vectors (hidden averages, a counter, a first-time flag:
    DEBIAS_STATE), the adapter's framework state holds, by the plan's names, what the plan writes."""
    if dst not in DEBIAS_STATE:
        return
    u = tol.UNIT_ROUNDOFF[dtype]
    for name, v in written.items():
        h = _held(dst, b, name)
        if isinstance(v, (bool, int)):
            assert h.item() == v, f"{dst} holds {name} = {h.item()}, the plan writes {v}"
        else:
            tol.assert_close(f"{dst} holds {name}", h.ravel(), v, 2 * u * np.abs(v))


# --- the source side: the oracle plays the target ------------------------------------------------

_TRAINED = {}


def _trained_source(src):
    """The source layer, built with the arguments its plans name (``Plan.src_arguments``), trained STEPS
    steps on the oracle's data (checked against it), once per source: its case, its arguments, its state
    through the adapter, the oracle."""
    if src not in _TRAINED:
        A = _load(src)
        case = _case(src, A, seed=5)
        p = _plan(src, src)
        built = setting_of(src, **p.src_arguments)
        w, eps = built.new_batch_weight, built.eps
        a = A(case.channels, case.ndim, dtype=case.dtype, new_batch_weight=w, eps=eps)
        a.set_state(**case.state)
        oracle = Oracle(case, case.running_mean, case.running_var)
        for step in range(STEPS):
            oracle.train(a, case.batch(step), w, eps, DECLARED[src].running_var, f"{src} step {step + 1}")
        _TRAINED[src] = case, p.src_arguments, _read_as_the_plan_says(a, p, case.dtype), oracle
    return _TRAINED[src]


def _read_as_the_plan_says(a, p, dtype):
    """The source's four vectors through the adapter; where it stores hidden averages under its state
    names (Equinox mode="batch"), read from its framework state as the plan's text says,
    name / (1 − momentum^counter), and checked against what the adapter reads."""
    s, src = a.get_state(), p.src
    extra = DEBIAS_STATE.get(src, {})
    if STATE_NAMES[src][2:] != extra.get("hidden"):
        return s
    assert all(" / (1 − " in e.value for e in p.state[2:4]), [e.value for e in p.state[2:4]]
    decay = p.src_arguments[ARGUMENTS[src]["momentum"]]
    n = int(_held(src, a, extra["counter"][0]))
    read = {r: _held(src, a, name).astype(np.float64).ravel() / (1 - decay ** n)
            for r, name in zip(ROLES[2:], STATE_NAMES[src][2:])}
    u = tol.UNIT_ROUNDOFF[dtype]
    for r, v in read.items():
        tol.assert_close(f"{src} {r} read as the plan says", v, s[r], 4 * u * np.abs(s[r]))
    return {**s, **read}


def _reads(dst, written, w, batch=None):
    """What the target reads from the state written under its names: per role, the value its inference
    uses, or with ``batch`` (mean, var) the value after its next update of the running statistics,
    modelled in float64 from its declared conventions (hidden averages over a counter, a first-time flag)."""
    names, extra, c = STATE_NAMES[dst], DEBIAS_STATE.get(dst, {}), DECLARED[dst]
    out = {r: np.ravel(np.asarray(written[n], dtype=np.float64)) for r, n in zip(ROLES, names)}
    if "counter" in extra:
        n = written[extra["counter"][0]]
        assert all(written[k] == n for k in extra["counter"])
        hidden = [np.ravel(np.asarray(written[h], dtype=np.float64)) for h in extra["hidden"]]
        if batch is not None:
            hidden = [(1 - w) * h + w * np.asarray(v) for h, v in zip(hidden, batch)]
            n += 1
        debiased = [h / (1 - (1 - w) ** n) for h in hidden]
        if names[2:] != extra["hidden"]:          # an average kept beside the hidden value: it is what is read
            assert batch is not None or all(np.allclose(d, out[r], rtol=1e-12, atol=0)
                                            for d, r in zip(debiased, ROLES[2:])), "average ≠ hidden, debiased"
        out.update(zip(ROLES[2:], debiased))
        return out
    if batch is None:
        return out
    if c.debias == "first" and any(written[k] for k in extra["first"]):
        out.update(zip(ROLES[2:], batch))          # the first call replaces the statistics by the batch's
    else:
        out.update((r, (1 - w) * out[r] + w * np.asarray(v)) for r, v in zip(ROLES[2:], batch))
    return out


def test_source_state_written_by_the_plan_is_what_the_oracle_says_the_target_holds(src_pair):
    src, dst = src_pair
    case, arguments, state, oracle = _trained_source(src)
    x = case.batch(STEPS)
    dm, dv = tol.running_stats(x, oracle.mean, oracle.var, oracle.mean, oracle.var, W, case.dtype)
    u = tol.UNIT_ROUNDOFF[case.dtype]
    bounds = dict(gamma=u * np.abs(case.gamma), beta=u * np.abs(case.beta), running_mean=oracle.slack * dm,
                  running_var=oracle.slack * dv)
    for dst_eps in (None, _target_eps(dst)):
        p = _plan(src, dst, dst_eps)
        w, eps = p.setting.new_batch_weight, p.setting.eps
        assert (p.src_arguments, w, eps) == (arguments, W, EPS)
        written = p.apply(state)
        assert set(written) == {e.target for e in p.state}, "apply writes what the text lists"
        what = f"{src} → {dst}" + ("" if dst_eps is None else f", eps {dst_eps:g} kept")
        shift = 0.0 if dst_eps is None else eps - dst_eps    # written var + its eps = the source's var + eps
        held = dict(gamma=case.gamma, beta=case.beta, running_mean=oracle.mean, running_var=oracle.var + shift)
        for r, v in _reads(dst, written, w).items():
            tol.assert_close(f"{what}: {dst} reads as {r}", v, held[r], bounds[r] + 1e-12 * np.abs(held[r]))
        # the target's next update (the plan's new-batch weight, any estimator: the same batch variance)
        _, bm, bv = ref.batch_norm_train(x, case.gamma, case.beta, eps=eps)
        nm, nv = ref.update_running_stats(oracle.mean, oracle.var + shift, bm, bv, case.count,
                                          new_batch_weight=w, unbiased=False)
        nxt = _reads(dst, written, w, (bm, bv))
        for r, v in (("running_mean", nm), ("running_var", nv)):
            tol.assert_close(f"{what}: {dst} after its next update, {r}", nxt[r], v,
                             bounds[r] + 1e-12 * np.abs(v))


# --- the matrix: where each side runs ------------------------------------------------------------

def _tox():
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    return ini


def _expand(pattern):
    """tox's generative names: "{,check-}torch" -> ["torch", "check-torch"]."""
    m = re.search(r"\{([^}]*)\}", pattern)
    if not m:
        return [pattern]
    return [x for alt in m.group(1).split(",") for x in _expand(pattern[:m.start()] + alt + pattern[m.end():])]


def _lines(ini, section, key, env):
    """The value of ``key`` for ``env`` as lines: references {[sec]key} followed, factor conditions
    ("jax:", "!check:") applied, {env:X:default} given its default."""
    raw = ini.get(section, key, fallback=None)
    if raw is None:
        return None
    factors = set(env.split("-"))
    out = []
    for line in (raw.replace("\\\n", " ")).splitlines():
        line = line.strip()
        m = re.match(r"^(!?)([\w,]+):\s+(.*)$", line)
        if m and not re.match(r"^[A-Z_]+\s*=", line):
            if (m.group(1) == "!") == bool(factors & set(m.group(2).split(","))):
                continue
            line = m.group(3)
        ref_ = re.fullmatch(r"\{\[(\w+)\](\w+)\}", line)
        if ref_:
            out += _lines(ini, ref_.group(1), ref_.group(2), env) or []
        elif line and not line.startswith("#"):
            line = re.sub(r"\{\[(\w+)\](\w+)\}", lambda m: ini.get(m.group(1), m.group(2)).strip(), line)
            out.append(re.sub(r"\{env:\w+:([^}]*)\}", r"\1", line))
    return out


def _package(requirement):
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def matrix():
    """Test env -> the PORTABLE layers it selects, for the envs that run this file."""
    from equiv.adapters import ADAPTERS
    from equiv.registry import EXTRA
    ini, envs = _tox(), {}
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for section in ini.sections():
        if not section.startswith("testenv:"):
            continue
        for env in _expand(section[len("testenv:"):]):
            if not env or env.startswith("check-") or env in ("report", "docs", "isa-restricted"):
                continue
            commands = _lines(ini, section, "commands", env) or _lines(ini, "testenv", "commands", env)
            words = " ".join(commands).split()
            if "pytest" not in words or not ({"tests", THIS} & set(words)):
                continue
            deps = {_package(d) for d in _lines(ini, section, "deps", env) or []}
            setenv = dict(x.split("=", 1) for x in _lines(ini, section, "setenv", env) or [] if "=" in x)
            chosen = {k.strip(): v.strip() for k, v in setenv.items()}.get("EQUIV_ADAPTERS")
            if chosen:
                names = [n for n in chosen.split(",") if n in PORTABLE]
            else:          # every layer whose framework's package (its extra's, by name) the env installs
                names = [n for n in PORTABLE if any(ADAPTERS[n][2] in p and p in deps for p in
                                                    map(_package, extras[EXTRA[ADAPTERS[n][2]]]))]
            envs[env] = names
    return envs


def test_every_pair_has_both_sides_somewhere():
    envs = matrix()
    assert "numpy" in envs and envs["numpy"] == [], envs           # the parser reads what tox runs
    where = {n: [e for e, names in envs.items() if n in names] for n in PORTABLE}
    lines, missing = [], []
    for s, d in itertools.permutations(PORTABLE, 2):
        lines.append(f"{s} > {d}: source side in {', '.join(where[s]) or '-'}; "
                     f"target side in {', '.join(where[d]) or '-'}")
        missing += [f"{s} > {d}: {side} side runs in no env" for side, n in (("source", s), ("target", d))
                    if not where[n]]
    print("\n".join(lines), file=sys.stderr)
    assert len(lines) == len(PORTABLE) * (len(PORTABLE) - 1) == 156
    assert not missing, "\n".join(missing)
