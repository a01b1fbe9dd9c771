"""Documented divergences under layer options (equiv.options), in the shape of equiv.known's
``Divergence``: each region holds only for cases that carry its setting, and each witness (a case
with that setting) runs as a strict xfail (tests/test_options_torch.py)."""
from equiv.known import Divergence, everywhere
from equiv.strategies import Case


def under(setting, region=everywhere):
    """The region of a divergence that shows only with the layer options ``setting`` (then where
    ``region`` holds); ``.whole``: for every case with the setting (the property is not run)."""
    def holds(case, prop):
        return all(case.options.get(k) == v for k, v in setting.items()) and region(case, prop)
    holds.setting, holds.whole = dict(setting), region is everywhere
    return holds


KNOWN = [
    Divergence(
        id="torch-momentum-none-after-float-momentum",
        adapters=("torch.builtin",),
        properties=("running_stats",),
        reason=("momentum=None set on a layer that trained with a float momentum is not the documented "
                "\"cumulative moving average (i.e. simple average)\" (torch/nn/modules/batchnorm.py:351, torch "
                "2.13.0) of anything: num_batches_tracked counts every training step, the float-momentum ones "
                "too (batchnorm.py:187-190), and the next update weighs the new batch 1/num_batches_tracked "
                "(batchnorm.py:192), so after j float-momentum steps the first cumulative step weighs it "
                "1/(j + 1), not 1, and the earlier exponential average stays in as if it were the plain "
                "average of j batches (witness: one step at momentum 0.1, then momentum=None: running mean "
                "after step 2 off by 0.819, 1.6e14× the bound, from the plain average of the batches since "
                "the switch; torch.optim.swa_utils.update_bn calls reset_running_stats first, which zeroes "
                "the count, batchnorm.py:91-97)"),
        region=under({"momentum": "cumulative_after_ema"}, lambda c, p: c.steps >= 2),
        witness=Case(dtype="float64", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=0.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1, steps=3,
                     options={"momentum": "cumulative_after_ema"}),
        witness_property="running_stats",
        advice=("to average from a switch on, call layer.reset_running_stats() (or zero "
                "layer.num_batches_tracked) when setting momentum=None, as update_bn does")),
    Divergence(
        id="torch-track-running-stats-set-false-uses-buffers",
        adapters=("torch.builtin",),
        properties=("infer_forward",),
        reason=("track_running_stats=False set on a built layer: in eval() the layer still normalizes with "
                "its stored running statistics, where the class docstring says \"If track_running_stats is set "
                "to False, this layer then does not keep running estimates, and batch statistics are instead "
                "used during evaluation time as well\" (torch/nn/modules/batchnorm.py:331-333, torch 2.13.0): "
                "forward uses the batch in eval only when the buffers are None (batchnorm.py:200-203; the "
                "constructor sets them None, batchnorm.py:85-87, the attribute does not); training calls do stop "
                "updating them (batchnorm.py:187, 213-218), as documented (witness: inference output off by "
                "11.6, 2.5e14× the bound, from the batch-statistics output; it equals the output from the "
                "stored statistics)"),
        region=under({"track_running_stats": "set_false"}),
        witness=Case(dtype="float64", shape=(4, 2), seed=1, log10_scale=0.0, log10_offset=0.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=0.1,
                     options={"track_running_stats": "set_false"}),
        witness_property="infer_forward",
        advice=("give track_running_stats=False to the constructor, or also set layer.running_mean = "
                "layer.running_var = None, for batch statistics in evaluation")),
]


def option_divergences(adapter, property_name, options):
    """The documented divergences of an adapter (class or name) for a property under ``options``."""
    if not options:
        return []
    from equiv.paths import PATHS
    name = adapter if isinstance(adapter, str) else adapter.name
    names = {name, PATHS[name].base} if name in PATHS else {name}
    return [d for d in KNOWN if names & set(d.adapters) and property_name in d.properties
            and all(options.get(k) == v for k, v in d.region.setting.items())]
