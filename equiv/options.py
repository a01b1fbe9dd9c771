"""Layer options, declared as data: what a user sets on the layer beyond momentum and eps.

A case carries its options (``Case.options``, a mapping: name -> value; empty means every option at
its default, today's behaviour). An adapter declares the non-default values it can build
(``Adapter.supported_options``: name -> values); a property runs with a setting only where the adapter
supports it, and otherwise is skipped with the reason. What each value means to the oracle
(reference/options.py) is answered here, once: the new-batch weight at each update, whether the
running statistics are tracked, whether inference normalizes with the batch, whether gamma and beta
exist.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    name: str
    default: object
    values: dict          # non-default value -> what it means, in the oracle's words
    properties: tuple     # the properties whose statement the option changes: those that run with it

    def describe(self, value):
        return self.values.get(value, f"{self.name}={value!r}")


OPTIONS = {o.name: o for o in [
    Option("momentum", "ema", {
        "cumulative": "cumulative moving average (PyTorch momentum=None): the k-th update weighs the new "
                      "batch 1/k, the running statistics are the plain average of the batch statistics",
        "cumulative_after_ema": "the first training step with the case's new-batch weight, then momentum=None "
                                "(set on the built layer): as documented, the plain average of the batches "
                                "since the switch",
    }, ("batch_stats", "running_stats", "state_after_calls")),
    Option("affine", True, {
        False: "no affine parameters: gamma 1 and beta 0, no parameter gradients",
        "no_scale": "no gamma (Keras scale=False): gamma 1 and no gamma gradient; beta as given",
        "no_center": "no beta (Keras center=False): beta 0 and no beta gradient; gamma as given",
    }, ("train_forward", "infer_forward", "gradients", "affine_invariance", "output_moments", "dx_sums_zero",
        "batch_permutation", "state_after_calls")),
    Option("synchronized", False, {
        True: "synchronized batch statistics (Keras synchronized=True) on one device: the same statistics "
              "as without it, the batch's own",
    }, ("train_forward", "gradients", "output_moments", "dx_sums_zero", "batch_permutation", "batch_stats",
        "running_stats", "state_after_calls")),
    Option("track_running_stats", True, {
        False: "no running statistics (given to the constructor): batch statistics in training and "
               "inference, no state changes",
        "set_false": "track_running_stats set to False on the built layer: as documented, batch statistics "
                     "in training and inference, no state changes",
    }, ("train_forward", "batch_stats", "infer_forward", "running_stats", "state_after_calls")),
    Option("force_float32_reductions", True, {
        False: "statistics reduced in the layer's dtype, not promoted to float32 (Flax "
               "force_float32_reductions=False): the same batch normalization, bounded by the dtype it computes in",
    }, ("train_forward", "batch_stats", "infer_forward", "running_stats", "gradients", "affine_invariance",
        "output_moments", "dx_sums_zero", "batch_permutation", "state_after_calls")),
]}


def settings():
    """One setting per non-default value of each option, in order: the option runs of the suite."""
    return [{o.name: v} for o in OPTIONS.values() for v in o.values]


def setting_id(options):
    return ",".join(f"{k}={v}" for k, v in sorted(options.items())) or "defaults"


def value(options, name):
    """The value of option ``name`` in a mapping of options (its default where absent)."""
    return (options or {}).get(name, OPTIONS[name].default)


def unknown(options):
    """What in ``options`` is no declared option or value (None: nothing)."""
    for k, v in (options or {}).items():
        if k not in OPTIONS:
            return f"no option {k!r}; options: {', '.join(OPTIONS)}"
        if v != OPTIONS[k].default and v not in OPTIONS[k].values:
            return f"option {k} has no value {v!r}; values: {OPTIONS[k].default!r}, " + \
                ", ".join(map(repr, OPTIONS[k].values))
    return None


def unsupported(adapter_cls, options):
    """None when the adapter can build a layer with these options, else the reason it cannot."""
    bad = unknown(options)
    if bad:
        return bad
    supported = getattr(adapter_cls, "supported_options", {}) or {}
    for k, v in (options or {}).items():
        if v != OPTIONS[k].default and v not in supported.get(k, ()):
            return f"{adapter_cls.name} does not take {k}={v!r} ({OPTIONS[k].describe(v)})"
    return None


# --- what a setting means to the oracle ---------------------------------------------------------
def weight_at(options, new_batch_weight, k):
    """The new-batch weight of the k-th update (k = 1, 2, …) of a freshly built layer."""
    momentum = value(options, "momentum")
    if momentum == "cumulative":
        return 1.0 / k
    if momentum == "cumulative_after_ema":
        return new_batch_weight if k == 1 else 1.0 / (k - 1)
    return new_batch_weight


def tracks(options):
    """Whether training calls update the running statistics."""
    return value(options, "track_running_stats") is True


def keeps_running_stats(options):
    """Whether the layer holds running statistics at all (False: built without them)."""
    return value(options, "track_running_stats") is not False


def infers_with_batch(options):
    """Whether inference mode normalizes with the batch's own statistics (no running statistics used)."""
    return not tracks(options)


def affine(options):
    return value(options, "affine") is True


def has_gamma(options):
    """Whether the layer has gamma (a scale parameter with its gradient); without it gamma is 1."""
    return value(options, "affine") in (True, "no_center")


def has_beta(options):
    """Whether the layer has beta (an offset parameter with its gradient); without it beta is 0."""
    return value(options, "affine") in (True, "no_scale")


def not_applicable(prop, options):
    """None when property ``prop`` (an ``equiv.properties.Property``) says something under these options,
    else why not."""
    touched = [k for k in options if prop.name in OPTIONS[k].properties]
    if not touched:
        return f"{setting_id(options)} does not change what {prop.name} states (it runs with the defaults)"
    if prop.needs_running_stats and not keeps_running_stats(options):
        return f"the layer keeps no running statistics under {setting_id(options)}: {prop.name} does not apply"
    return None
