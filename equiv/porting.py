"""From one canonical batch-norm setting to each framework's own arguments, and back;
and moving a checkpoint's batch-norm state from one implementation to another.

    >>> from equiv import Setting, translate
    >>> translate(Setting(new_batch_weight=0.1, eps=1e-5), "tf.keras")
    {'momentum': 0.9, 'epsilon': 1e-05, 'axis': -1}

Everything here reads the declared conventions (equiv/conventions.py); nothing imports
a framework.
"""
from dataclasses import dataclass

from equiv.conventions import ARGUMENTS, DECLARED


@dataclass(frozen=True)
class Setting:
    """Canonical batch-norm setting: weight of the new batch in the running stats, eps
    inside the square root."""
    new_batch_weight: float = 0.1
    eps: float = 1e-5


class NotConfigurable(ValueError):
    """The implementation hard-codes momentum or eps: no argument gives the setting."""


def translate(setting, adapter):
    """Constructor keyword arguments that give ``setting`` in ``adapter``'s framework."""
    conv, args = DECLARED[adapter], ARGUMENTS[adapter]
    if args["momentum"] is None:
        if (conv.default_new_batch_weight, conv.default_eps) != (setting.new_batch_weight, setting.eps):
            raise NotConfigurable(
                f"{adapter} hard-codes new-batch weight {conv.default_new_batch_weight:g} and eps "
                f"{conv.default_eps:g}; it cannot give {setting}")
        return {}
    out = {args["momentum"]: round(conv.momentum_for(setting.new_batch_weight), 15),
           args["eps"]: setting.eps}
    if args["axis"]:
        out[args["axis"]] = conv.channel_axis
    return out


def setting_of(adapter, **kwargs):
    """The canonical setting of a layer built with these framework arguments (defaults filled)."""
    conv, args = DECLARED[adapter], ARGUMENTS[adapter]
    momentum = kwargs.get(args["momentum"], conv.default_momentum) if args["momentum"] else conv.default_momentum
    eps = kwargs.get(args["eps"], conv.default_eps) if args["eps"] else conv.default_eps
    return Setting(new_batch_weight=round(conv.new_batch_weight(momentum), 15), eps=eps)


def remaining_differences(a, b):
    """Declared differences between two implementations that no argument translates."""
    ca, cb = DECLARED[a], DECLARED[b]
    out = []
    for field in ("running_var", "variance", "stats_update", "default_mode", "batch_of_one"):
        va, vb = getattr(ca, field), getattr(cb, field)
        if va != vb:
            out.append(f"{field}: {a} {va}, {b} {vb}")
    return out


def port_state(state, src, dst, *, src_eps=None, dst_eps=None):
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
