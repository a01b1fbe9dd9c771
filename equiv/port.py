"""`equiv port SRC DST`: what to build the target layer with so that it computes what the
source computes, and how the source's batch-norm state becomes the target's, as data
(``Plan``) and as text (``Plan.text``).

    >>> p = plan("torch.builtin", "tf.keras")
    >>> p.dst_arguments
    {'momentum': 0.9, 'epsilon': 1e-05, 'axis': -1}
    >>> [(e.target, e.source) for e in p.state][:2]
    [('gamma', 'weight'), ('beta', 'bias')]

Built from the declared conventions, constructor arguments and state names of
equiv/conventions.py, through equiv.porting's translate and setting_of; imports no framework.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from equiv.conventions import ARGUMENTS, COUNTERS, DEBIAS_STATE, DECLARED, STATE_NAMES, STATE_SHAPES
from equiv.porting import Setting, setting_of, translate
from equiv.routes import ROUTES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from numpy.typing import ArrayLike

PORTABLE = tuple(STATE_NAMES)           # the built-in layers docs/porting.md covers
ROLES = ("gamma", "beta", "running_mean", "running_var")
# the layers a plan takes no momentum from (the argument is required): the pages show this one
EXAMPLE_MOMENTUM = 0.99
# why a declared layer outside PORTABLE has no plan, where its conventions do not say it
_NOT_A_LAYER = {"flax.linen.two_pass": "flax.linen built with use_fast_variance=False: port it as flax.linen",
                "tf_keras": "Keras 2's layer: its state names and settings are tf.keras's, port it as tf.keras; a 4-D "
                            "float32 layer of the default fused=None holds the unbiased running variance "
                            "(tf-keras2-default-fused-unbiased-variance)",
                "onnx.node": "an operator in a graph, not a layer: its state is the graph's initializers "
                             "(scale, B, input_mean, input_var), which an exporter writes",
                **{n: "TensorFlow ops, not a layer: the state is the four tensors the user's code keeps and names "
                      "(scale, offset and the moving mean and variance it passes to the op)"
                   for n in ("tf.nn.moments", "tf.nn.weighted_moments", "tf.fused_batch_norm",
                             "tf.raw.FusedBatchNormV3")}}


def not_covered() -> dict[str, str]:
    """The declared layers no plan covers, and why."""
    out = {}
    for name, c in DECLARED.items():
        if name in STATE_NAMES:
            continue
        if not c.configurable:
            out[name] = (f"hard-codes its momentum and eps (new-batch weight {c.default_new_batch_weight:g}, eps "
                         f"{c.default_eps:g}): a from-scratch layer with no constructor argument to port to")
        elif c.running_var == "none":
            out[name] = "keeps no running statistics: there is no checkpoint state to port and no inference mode"
        else:
            out[name] = _NOT_A_LAYER[name]
    return out


@dataclass(frozen=True)
class Entry:
    """One state entry of the target: its name, the source entry it comes from, the value written."""
    target: str
    source: str
    value: str


@dataclass(frozen=True)
class Plan:
    src: str
    dst: str
    setting: Setting                 # what the source computes with: new-batch weight, eps
    src_arguments: dict[str, Any]    # the source's constructor arguments for it
    dst_arguments: dict[str, Any]    # what to build the target with
    fold: float                      # added to the running variance: eps − the target's (0: same eps)
    running_var: str                 # the estimator the target's continued training uses
    continues: bool                  # continued training in the target computes what the source's would
    state: tuple[Entry, ...]         # every state entry of the target
    numbers: tuple[str, ...]         # what changes in the numbers, and why
    routes: tuple[str, ...] = ()     # the routes (equiv.routes) that carry a model from src to dst's framework

    def vectors(self, state: Mapping[str, ArrayLike]) -> dict[str, Any]:
        """The four per-channel vectors (gamma, beta, running mean and var, as ``Adapter.get_state``
        returns them: what inference reads) the target reads after porting."""
        import numpy as np
        out = {k: np.array(state[k], dtype=np.float64) for k in ROLES}
        if self.fold:
            out["running_var"] = out["running_var"] + self.fold
            if np.any(out["running_var"] < 0):
                raise ValueError(f"running_var + {self.fold:g} < 0 for some channel: build {self.dst} with eps "
                                 f"{self.setting.eps:g} instead")
        return out

    def apply(self, state: Mapping[str, ArrayLike]) -> dict[str, Any]:
        """Every state entry of the target, by its own name, from the source's four vectors."""
        v = self.vectors(state)
        names, extra = STATE_NAMES[self.dst], DEBIAS_STATE.get(self.dst, {})
        out: dict[str, Any] = dict(zip(names, (v[k] for k in ROLES)))
        if "counter" in extra:
            n = COUNTERS[self.dst]
            scale = 1 - DECLARED[self.dst].momentum_for(self.setting.new_batch_weight) ** n
            out.update(zip(extra["hidden"], (v["running_mean"] * scale, v["running_var"] * scale)))
            out.update(dict.fromkeys(extra["counter"], n))
        out.update(dict.fromkeys(extra.get("first", ()), False))
        return out

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["text"] = self.text()
        return d

    def text(self) -> str:
        s, w = self.setting, self.setting.new_batch_weight
        width = max(len(e.target) for e in self.state)
        shape = STATE_SHAPES.get(self.dst, "(C,)")
        out = [f"{self.src} → {self.dst}", "",
               f"Source: {self.src}({_args(self.src_arguments)}): new-batch weight {w:g}, eps {s.eps:g}.",
               f"Build:  {self.dst}({_args(self.dst_arguments)})", "",
               f"State ({self.dst} ← {self.src}; per-channel vectors shaped {shape} in {self.dst}):"]
        out += [f"  {e.target:<{width}}  ← {e.value}" for e in self.state]
        out += ["", "What changes in the numbers, and why:"] + [f"  - {n}" for n in self.numbers]
        out += ["", f"Continued training in {self.dst}: " + (
            f"computes what {self.src}'s would (same estimator, same eps)." if self.continues else
            "differs from the source's as said above; inference after porting computes what the source's does.")]
        if self.routes:
            out += ["", "Or convert the whole model (docs/routes.md: what survives each route, its findings):"]
            out += [f"  - {r}: keeps {', '.join(ROUTES[r].keeps)}" for r in self.routes]
        return "\n".join(out) + "\n"


def _args(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _check(name: str) -> None:
    if name not in STATE_NAMES:
        why = not_covered().get(name)
        raise ValueError(f"{name} is not covered by equiv port: {why}" if why else
                         f"unknown layer {name!r}; equiv port knows {', '.join(PORTABLE)}")


def _an(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _weight(c: Any) -> str:
    return "the new batch" if c.momentum_is == "new_batch_weight" else "the old value"


def plan(src: str, dst: str, momentum: float | None = None, eps: float | None = None,
         dst_eps: float | None = None) -> Plan:
    """The plan to port ``src`` built with its own ``momentum`` and ``eps`` (None: its defaults)
    to ``dst``; ``dst_eps`` keeps that eps in the target and folds the difference into the
    running variance (inference stays exact; training normalizes with ``dst_eps``)."""
    _check(src)
    _check(dst)
    cs, cd, a_s, a_d = DECLARED[src], DECLARED[dst], ARGUMENTS[src], ARGUMENTS[dst]
    momentum = cs.default_momentum if momentum is None else momentum
    if momentum is None:
        raise ValueError(f"{src} has no default momentum: give --momentum (its {a_s['momentum']})")
    eps = cs.default_eps if eps is None else eps
    if not (0 <= momentum <= 1 and eps > 0 and (dst_eps is None or dst_eps > 0)):
        raise ValueError(f"momentum {momentum:g} must lie in [0, 1] and eps {eps:g}"
                         + ("" if dst_eps is None else f" and the target eps {dst_eps:g}") + " be > 0")
    kwargs = {str(a_s["momentum"]): momentum, str(a_s["eps"]): eps}     # both named for every PORTABLE layer
    setting = setting_of(src, **kwargs)
    w, e = setting.new_batch_weight, setting.eps
    e_dst = e if dst_eps is None else dst_eps
    dst_args = translate(Setting(w, e_dst), dst)
    fold = e - e_dst
    notes = []
    m_dst = dst_args[a_d["momentum"]]  # type: ignore[index]
    if cs.momentum_is != cd.momentum_is:
        notes.append(f"momentum: {src}'s {a_s['momentum']}={momentum:g} weighs {_weight(cs)}, {dst}'s "
                     f"{a_d['momentum']} weighs {_weight(cd)}: {a_d['momentum']}={m_dst:g} gives the same new-batch "
                     f"weight {w:g} (the same number {momentum:g} would weigh the new batch {1 - w:g})")
    else:
        notes.append(f"momentum: both weigh {_weight(cd)}: {a_d['momentum']}={m_dst:g} (new-batch weight {w:g})")
    if fold:
        notes.append(f"eps: {dst} keeps eps {e_dst:g}; {e:g} − {e_dst:g} = {fold:g} is added to the running "
                     "variance (running_var + eps unchanged), so inference is exact while it stays ≥ 0; training "
                     f"normalizes each batch with {e_dst:g} instead of {e:g}")
    elif cd.default_eps != e:
        notes.append(f"eps: {dst}'s default is {cd.default_eps:g}: pass {a_d['eps']}={e:g}, else inference and "
                     f"training differ (or keep {cd.default_eps:g}: --target-eps {cd.default_eps:g} folds the "
                     "difference into the running variance)")
    else:
        notes.append(f"eps: {e:g} is {dst}'s default too")
    if cs.running_var != cd.running_var:
        notes.append(f"running variance: {src} keeps {_an(cs.running_var)} one, {dst} updates with "
                     f"{_an(cd.running_var)} one: inference is unaffected (the stored value is used); continued "
                     f"training in {dst} adds {cd.running_var} batch variances, a factor m/(m − 1) apart per "
                     "batch of m values per channel")
    else:
        notes.append(f"running variance: both keep a {cd.running_var} one")
    state = _entries(src, dst, fold)
    if "hidden" in DEBIAS_STATE.get(src, {}) and STATE_NAMES[src][2:] == DEBIAS_STATE[src]["hidden"]:
        notes.append(f"debiasing ({src}): it stores hidden averages; read hidden/(1 − {a_s['momentum']}^counter), "
                     "what its inference reads (counter 0: the hidden value itself)")
    if cd.debias == "zero":
        notes.append(f"debiasing ({dst}): it reads hidden/(1 − {a_d['momentum']}^counter); the hidden values "
                     f"and the counter {COUNTERS[dst]} above make it read the ported values, and its next update "
                     "their moving average (a counter of 0 would make the first update forget them)")
    elif cd.debias == "first":
        notes.append(f"first call ({dst}): while the first-time flag is True the first training call replaces "
                     "the statistics by the batch's; it is written False above")
    for field, what in (("initial_stats", "a fresh layer's running mean, var"), ("default_mode", "a plain call"),
                        ("stats_update", "running statistics update on"), ("variance", "batch variance"),
                        ("batch_of_one", "one value per channel in training gives")):
        vs, vd = getattr(cs, field), getattr(cd, field)
        if vs != vd:
            notes.append(f"{field.replace('_', ' ')}: {what}: {vs} in {src}, {vd} in {dst}" + _WHY[field](dst))
    if cs.channel_axis != cd.channel_axis:
        notes.append(f"layout: {src} normalizes axis {cs.channel_axis}, {dst} axis {cd.channel_axis}: the per-channel "
                     "vectors are the same; activations and the convolution weights around them are transposed "
                     "(outside this plan)")
    shapes = STATE_SHAPES.get(src, "(C,)"), STATE_SHAPES.get(dst, "(C,)")
    if shapes[0] != shapes[1]:
        notes.append(f"shape: {src} stores each vector as {shapes[0]}, {dst} as {shapes[1]}: reshape (the values "
                     "stay in channel order)")
    return Plan(src, dst, setting, translate(setting, src), dst_args, fold, cd.running_var,
                cs.running_var == cd.running_var and not fold, state, tuple(notes), routes_between(src, dst))


def routes_between(src: str, dst: str) -> tuple[str, ...]:
    """The routes from layer ``src`` that land in the framework of layer ``dst`` (another framework)."""
    from equiv.adapters import ADAPTERS
    to = ADAPTERS[dst][2]
    return tuple(n for n, r in ROUTES.items() if r.source_adapter == src and r.lands == to != ADAPTERS[src][2])


_WHY = {
    "initial_stats": lambda dst: ": the ported values replace them; only a layer never trained differs",
    "default_mode": lambda dst: f"; select the mode explicitly ({DECLARED[dst].mode_switch})",
    "stats_update": lambda dst: ": forward passes in training mode without backward (to warm up statistics) "
                                "behave differently",
    "variance": lambda dst: ": training outputs differ on inputs with a large mean against their std",
    "batch_of_one": lambda dst: "",
}


def _entries(src: str, dst: str, fold: float) -> tuple[Entry, ...]:
    s_names, d_names = STATE_NAMES[src], STATE_NAMES[dst]
    s_extra, d_extra = DEBIAS_STATE.get(src, {}), DEBIAS_STATE.get(dst, {})
    read = list(s_names)
    if s_names[2:] == s_extra.get("hidden"):          # the stored values are hidden averages
        read[2:] = [f"{n} / (1 − {ARGUMENTS[src]['momentum']}^{s_extra['counter'][0]})" for n in s_names[2:]]
    values = list(read)
    if fold:
        values[3] = f"{read[3]} + {fold:g}"
    d_hidden = d_extra.get("hidden", ())
    if "counter" in d_extra:
        scale = f"(1 − {ARGUMENTS[dst]['momentum']}^{COUNTERS[dst]})"
        if d_names[2:] == d_hidden:
            values[2:] = [f"({v}) · {scale}" if " " in v else f"{v} · {scale}" for v in values[2:]]
    out = [Entry(t, s, v) for t, s, v in zip(d_names, s_names, values)]
    if "counter" in d_extra and d_names[2:] != d_hidden:
        out += [Entry(t, s, f"({v}) · {scale}" if " " in v else f"{v} · {scale}")
                for t, s, v in zip(d_hidden, s_names[2:], values[2:])]
    out += [Entry(t, "", str(COUNTERS[dst])) for t in d_extra.get("counter", ())]
    out += [Entry(t, "", "False") for t in d_extra.get("first", ())]
    return tuple(out)


def differences(a: str, b: str) -> list[str]:
    """What differs between two layers' declared conventions and defaults, one phrase each."""
    ca, cb = DECLARED[a], DECLARED[b]
    out = []
    if ca.momentum_is != cb.momentum_is:
        out.append(f"momentum weighs {_weight(ca)} in {a}, {_weight(cb)} in {b} (translate: w ↔ 1 − w)")
    if ca.default_new_batch_weight != cb.default_new_batch_weight:
        wa, wb = ca.default_new_batch_weight, cb.default_new_batch_weight
        out.append("default new-batch weight " + " vs ".join("none (required)" if w is None else f"{w:g}"
                                                              for w in (wa, wb)))
    if ca.default_eps != cb.default_eps:
        out.append(f"default eps {ca.default_eps:g} vs {cb.default_eps:g}")
    for field in ("running_var", "variance", "stats_update", "default_mode", "batch_of_one", "debias",
                  "initial_stats", "channel_axis"):
        va, vb = getattr(ca, field), getattr(cb, field)
        if va != vb:
            out.append(f"{field.replace('_', ' ')} {va} vs {vb}")
    return out


def all_plans() -> dict[str, Plan]:
    """Every ordered pair of PORTABLE layers with the source's defaults ('src/dst': plan); a source
    without a default momentum with EXAMPLE_MOMENTUM."""
    return {f"{s}/{d}": plan(s, d, None if DECLARED[s].default_momentum is not None else EXAMPLE_MOMENTUM)
            for s in PORTABLE for d in PORTABLE if s != d}
