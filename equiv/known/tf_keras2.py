"""Keras 2's documented findings (tf_keras: ``tf_keras.layers.BatchNormalization``, and its paths)."""

from equiv.known._regions import _f32_gap
from equiv.known.base import Divergence
from equiv.strategies import Case

_RUNNING = ("batch_stats", "running_stats", "state_after_calls")

FINDINGS = [
    Divergence(
        id="tf-keras2-default-fused-unbiased-variance",
        implementations=("tf_keras",),
        properties=_RUNNING,
        reason=("Keras 2's default fused=None runs TensorFlow's fused kernel on 4-D input of a float32, float16 "
                "or bfloat16 layer and the tf.nn.moments path elsewhere: the constructor leaves fused None "
                "where the fused kernel can be used, never for a float64 compute dtype "
                "(tf_keras/src/layers/normalization/batch_normalization.py:230-237, :296-300), and build sets "
                "it to rank in (4, 5) (:355-357; tf_keras 2.21.0). The fused kernel (FusedBatchNormV3, "
                "eager: exponential_avg_factor = 1 − momentum, :932-938) averages the unbiased batch variance "
                "into the moving variance: rest_size_adjust = m/(m − 1) "
                "(tensorflow/core/kernels/fused_batch_norm_op.cc, CPU FusedBatchNorm<.., is_training=true>, "
                "lines 179-183 and 204-217, read at commit 057091db), where the unfused path of the same layer, "
                "and every 2-D or float64 input, keeps the biased one; the output uses the biased batch "
                "variance on both. So one layer's running variance convention depends on the rank and dtype of "
                "its input (declared: biased, measured on 2-D float64; tf_keras+fused declares unbiased). "
                "Witness (float32, 8 values per channel, new-batch weight 1): running variance 8.93 where the "
                "biased one is 7.81 (8/7 of it: off by 1.12, 3.4e4× the bound)"),
        region=lambda c, p: c.ndim == 4 and c.dtype != "float64",
        witness=Case(dtype="float32", shape=(2, 2, 2, 2), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=1e-3, new_batch_weight=1.0),
        witness_property="batch_stats",
        advice="pass fused=False (or fused=True, knowingly) to get one running-variance convention at every "
               "rank and dtype; a checkpoint's moving_variance from a fused 4-D layer is m/(m − 1) times "
               "the biased one"),
    Divergence(
        id="tf-keras2-momentum-float32",
        implementations=("tf_keras", "tf_keras+unfused"),
        properties=("running_stats", "state_after_calls"),
        reason=("the unfused path of Keras 2's layer (every float64 layer) updates a moving statistic by "
                "variable −= (variable − value)·decay with decay = tf.convert_to_tensor(1.0 − momentum), a "
                "float32 tensor for a Python float, cast to the variable's dtype only afterwards "
                "(tf_keras/src/layers/normalization/batch_normalization.py:865-870; tf_keras 2.21.0): a float64 "
                "layer weighs the new batch by 1 − momentum rounded to float32, as paddle-momentum-float32. "
                "Keras 3's layer keeps the float64 weight (tf.keras passes). Witness (float64, weight 0.1): "
                "running mean off by 2.05e-9, 5.9e5× the bound"),
        region=lambda c, p: c.dtype == "float64" and _f32_gap(1.0 - (1.0 - c.new_batch_weight)) > 0,
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.1),
        witness_property="running_stats",
        advice="expect Keras 2's running statistics accurate to float32 only, even in a float64 layer"),
]
