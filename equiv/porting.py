"""From one canonical batch-norm setting to each framework's own arguments, and back;
and moving a checkpoint's batch-norm state from one implementation to another.

    >>> from equiv import Setting, translate
    >>> translate(Setting(new_batch_weight=0.1, eps=1e-5), "tf.keras")
    {'momentum': 0.9, 'epsilon': 1e-05, 'axis': -1}

Everything here reads the declared conventions (equiv/conventions.py); nothing imports
a framework.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from equiv.conventions import ARGUMENTS, DECLARED

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class Setting:
    """Canonical batch-norm setting: weight of the new batch in the running stats, eps
    inside the square root."""
    new_batch_weight: float = 0.1
    eps: float = 1e-5


class NotConfigurable(ValueError):
    """The implementation hard-codes momentum or eps: no argument gives the setting."""


def translate(setting: Setting, adapter: str) -> dict[str, Any]:
    """Constructor keyword arguments that give ``setting`` in ``adapter``'s framework."""
    conv, args = DECLARED[adapter], ARGUMENTS[adapter]
    if conv.running_var == "none":      # no running statistics, no momentum: eps (and axis) only
        out: dict[str, Any] = {args["eps"]: setting.eps} if args["eps"] else {}
        return out
    if args["momentum"] is None:
        if (conv.default_new_batch_weight, conv.default_eps) != (setting.new_batch_weight, setting.eps):
            raise NotConfigurable(
                f"{adapter} hard-codes new-batch weight {conv.default_new_batch_weight:g} and eps "
                f"{conv.default_eps:g}; it cannot give {setting}")
        return {}
    # every layer with a momentum argument has an eps argument (ARGUMENTS)
    out = {args["momentum"]: round(conv.momentum_for(setting.new_batch_weight), 15),
           args["eps"]: setting.eps}  # type: ignore[dict-item]
    if args["axis"]:
        out[args["axis"]] = conv.channel_axis
    return out


def setting_of(adapter: str, **kwargs: Any) -> Setting:
    """The canonical setting of a layer built with these framework arguments (defaults filled)."""
    conv, args = DECLARED[adapter], ARGUMENTS[adapter]
    momentum = kwargs.get(args["momentum"], conv.default_momentum) if args["momentum"] else conv.default_momentum
    eps = kwargs.get(args["eps"], conv.default_eps) if args["eps"] else conv.default_eps
    if momentum is None:      # haiku (decay_rate is required), jax.stax (no running statistics)
        raise ValueError(f"{adapter} has no default momentum: give {args['momentum']}=..." if args["momentum"]
                         else f"{adapter} keeps no running statistics: it has no momentum to port")
    return Setting(new_batch_weight=round(conv.new_batch_weight(momentum), 15), eps=eps)


def remaining_differences(a: str, b: str) -> list[str]:
    """Declared differences between two implementations that no argument translates."""
    ca, cb = DECLARED[a], DECLARED[b]
    out = []
    for field in ("running_var", "variance", "stats_update", "default_mode", "batch_of_one", "debias",
                  "initial_stats"):
        va, vb = getattr(ca, field), getattr(cb, field)
        if va != vb:
            out.append(f"{field}: {a} {va}, {b} {vb}")
    return out


def port_state(state: Mapping[str, ArrayLike], src: str, dst: str, *, src_eps: float | None = None,
               dst_eps: float | None = None) -> tuple[dict[str, NDArray[np.float64]], list[str]]:
    """Move batch-norm state (gamma, beta, running mean, running var; per-channel vectors
    as ``Adapter.get_state`` returns them) from implementation ``src`` to ``dst``.

    Returns (state, notes). Inference after porting is exact when both layers use the
    same eps. Given both eps values, the difference is folded into the running variance
    (var + eps is what inference uses), which keeps inference exact while
    var + eps_src − eps_dst ≥ 0. What cannot be ported exactly is said in ``notes``:
    the running-variance estimator (continued training mixes the two), and an eps that
    cannot be folded.
    """
    import numpy as np

    out = {k: np.array(state[k], dtype=np.float64) for k in ("gamma", "beta", "running_mean", "running_var")}
    notes = []
    cs, cd = DECLARED[src], DECLARED[dst]
    if cs.running_var != cd.running_var:
        notes.append(
            f"running_var: {src} keeps a {cs.running_var} running variance, {dst} a {cd.running_var} one. "
            "Inference is identical after porting (both use the stored value); continued training in "
            f"{dst} adds {cd.running_var} batch variances from here on, a difference of m/(m−1) "
            "per batch of m values per channel.")
    if src_eps is not None and dst_eps is not None and src_eps != dst_eps:
        folded = out["running_var"] + src_eps - dst_eps
        if np.all(folded >= 0):
            out["running_var"] = folded
            notes.append(f"eps: {src} uses {src_eps:g}, {dst} {dst_eps:g}; folded into running_var "
                         "(running_var + eps unchanged), so inference stays exact.")
        else:
            notes.append(f"eps: {src} uses {src_eps:g}, {dst} {dst_eps:g}, and running_var + "
                         f"{src_eps:g} − {dst_eps:g} < 0 for some channel: build {dst} with eps "
                         f"{src_eps:g} instead; inference differs otherwise.")
    return out, notes


def guide(conventions: Mapping[str, Mapping[str, Any]]) -> str:
    """docs/porting.md: how to move a BatchNorm checkpoint between each pair of built-in
    layers, generated from the measured conventions ({adapter: record}) and the tables in
    equiv/conventions.py."""
    from equiv.conventions import STATE_NAMES
    names = [n for n in STATE_NAMES if n in conventions]
    out = ["# Porting a BatchNorm checkpoint", "",
           "Generated by `equiv porting` from the measured conventions "
           "(`reference/data/conventions.json`); do not edit by hand. For one pair with your momentum and "
           "eps, `equiv port SRC DST --momentum M --eps E` prints the target's arguments and every state "
           "entry.", "",
           "A batch-norm layer holds four per-channel vectors. Their names:", "",
           "| layer | gamma | beta | running mean | running var | default momentum means | default eps |",
           "|---|---|---|---|---|---|---|"]
    for n in names:
        c, conv = conventions[n], DECLARED[n]
        meaning = ("new-batch weight" if conv.momentum_is == "new_batch_weight" else "old-value weight")
        default = "required, no default" if conv.default_momentum is None else f"{conv.default_momentum:g}"
        out.append(f"| {n} | " + " | ".join(f"`{s}`" for s in STATE_NAMES[n])
                   + f" | {meaning} ({default}) | {c['default_eps']:g} |")
    out += ["", "The vectors are per channel, so layout (NCHW or NHWC) does not change them; the "
            "convolution weights around them do, and are outside this guide.", ""]
    out += ["## One pair", "",
            "What to build the target with and how each state entry maps, with what changes in the numbers "
            "and why (momentum's meaning, eps, the running variance's estimator, debiasing, the default mode): "
            "`equiv port SRC DST [--momentum M] [--eps E] [--target-eps E2]` for your values, or "
            "<a href='pick-two.html'>the porting page</a> for the defaults of every pair (pick two layers; "
            "no network).", "",
            "## The layers", "",
            "Each layer's constructor arguments, conventions and state (those after the first "
            f"{len(names)} hold no checkpoint to port: the book's layers, stax, ONNX's operator, a path):", ""]
    pages = names + [n for n in DECLARED if n not in names]
    out += [f"- [{n}](layers/{n}.md)" for n in pages]
    out += ["", "```{toctree}", ":hidden:", ""] + [f"layers/{n}" for n in pages] + ["```", ""]
    return "\n".join(out).rstrip() + "\n"
