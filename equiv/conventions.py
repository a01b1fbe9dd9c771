"""The declared conventions of every implementation: one table.

Each row is what an adapter claims; ``equiv.probes`` measures the same fields by
running the implementation, and tests assert the two agree. Field meanings are in
``equiv.core.Conventions``.
"""
from dataclasses import replace

from equiv.core import Conventions

C = Conventions
DECLARED: dict[str, Conventions] = {
    "torch.builtin": C(momentum_is="new_batch_weight", default_momentum=0.1, running_var="unbiased",
                       default_eps=1e-5, channel_axis=1, variance="two-pass", stats_update="forward",
                       default_mode="training", mode_switch="module.train() / module.eval()",
                       batch_of_one="error"),
    "torch.scratch": C(momentum_is="new_batch_weight", default_momentum=0.1, running_var="biased",
                       default_eps=1e-5, channel_axis=1, variance="two-pass", stats_update="forward",
                       default_mode="training", mode_switch="torch.is_grad_enabled()",
                       batch_of_one="beta", configurable=False),
    "tf.keras": C(momentum_is="old_weight", default_momentum=0.99, running_var="biased",
                  default_eps=1e-3, channel_axis=-1, variance="two-pass", stats_update="forward",
                  default_mode="inference",
                  mode_switch="layer(x, training=True/False); trainable=False forces inference",
                  batch_of_one="beta"),
    # tf_keras/src/layers/normalization/batch_normalization.py (2.21.0): defaults momentum 0.99, epsilon
    # 1e-3 (:172-173); measured on float64 2-D input (the unfused path: the default fused=None picks the
    # fused kernel, with its unbiased running variance, for 4-D float32/16/bf16 input only)
    "tf_keras": C(momentum_is="old_weight", default_momentum=0.99, running_var="biased",
                  default_eps=1e-3, channel_axis=-1, variance="two-pass", stats_update="forward",
                  default_mode="inference",
                  mode_switch="layer(x, training=True/False); trainable=False forces inference",
                  batch_of_one="beta"),
    "tf.scratch": C(momentum_is="new_batch_weight", default_momentum=0.1, running_var="biased",
                    default_eps=1e-5, channel_axis=-1, variance="two-pass", stats_update="forward",
                    default_mode="error", mode_switch="layer(x, training=True/False), required",
                    batch_of_one="beta", configurable=False),
    "flax.linen": C(momentum_is="old_weight", default_momentum=0.99, running_var="biased",
                    default_eps=1e-5, channel_axis=-1, variance="fast", stats_update="forward",
                    default_mode="error",
                    mode_switch="use_running_average=True/False, mutable=['batch_stats']",
                    batch_of_one="beta"),
    "flax.linen.two_pass": C(momentum_is="old_weight", default_momentum=0.99, running_var="biased",
                             default_eps=1e-5, channel_axis=-1, variance="two-pass",
                             stats_update="forward", default_mode="error",
                             mode_switch="use_running_average=True/False, mutable=['batch_stats']",
                             batch_of_one="beta"),
    "flax.nnx": C(momentum_is="old_weight", default_momentum=0.99, running_var="biased",
                  default_eps=1e-5, channel_axis=-1, variance="fast", stats_update="forward",
                  default_mode="training", mode_switch="model.train() / model.eval()",
                  batch_of_one="beta"),
    "jax.scratch": C(momentum_is="old_weight", default_momentum=0.9, running_var="biased",
                     default_eps=1e-5, channel_axis="none", variance="two-pass",
                     stats_update="forward+init", default_mode="training",
                     mode_switch="BatchNorm(deterministic=True/False)", batch_of_one="beta",
                     configurable=False, initial_stats="0, 0.9"),
    "jax.stax": C(momentum_is="old_weight", default_momentum=None, running_var="none", default_eps=1e-5,
                  channel_axis=-1, variance="fast", stats_update="never", default_mode="training",
                  mode_switch="none: every call normalizes with the batch's statistics", batch_of_one="beta",
                  initial_stats="none", debias="n/a"),
    "equinox.ema": C(momentum_is="old_weight", default_momentum=0.99, running_var="biased", default_eps=1e-5,
                     channel_axis=1, variance="two-pass", stats_update="forward", default_mode="training",
                     mode_switch="inference=True/False (constructor or call), eqx.nn.inference_mode; "
                                 "under jax.vmap(..., axis_name=...)",
                     batch_of_one="beta", debias="first", initial_stats="0, 0"),
    "equinox.batch": C(momentum_is="old_weight", default_momentum=0.99, running_var="biased", default_eps=1e-5,
                       channel_axis=1, variance="two-pass", stats_update="forward", default_mode="training",
                       mode_switch="inference=True/False (constructor or call), eqx.nn.inference_mode; "
                                   "under jax.vmap(..., axis_name=...)",
                       batch_of_one="beta", debias="zero"),
    "haiku": C(momentum_is="old_weight", default_momentum=None, running_var="biased", default_eps=1e-5,
               channel_axis=-1, variance="fast", stats_update="forward", default_mode="error",
               mode_switch="is_training=True/False, required; test_local_stats=True: batch statistics "
                           "without updating",
               batch_of_one="beta", debias="zero", initial_stats="0, 0"),
    "mxnet.gluon": C(momentum_is="old_weight", default_momentum=0.9, running_var="biased",
                     default_eps=1e-5, channel_axis=1, variance="two-pass", stats_update="backward",
                     default_mode="inference",
                     mode_switch="autograd.record() / train_mode() (training); predict_mode() or none: inference",
                     batch_of_one="beta"),
    "mxnet.scratch": C(momentum_is="new_batch_weight", default_momentum=0.1, running_var="biased",
                       default_eps=1e-12, channel_axis=1, variance="two-pass", stats_update="forward",
                       default_mode="inference",
                       mode_switch="autograd.is_training(): record() / train_mode()",
                       batch_of_one="beta", configurable=False),
    "onnx.node": C(momentum_is="old_weight", default_momentum=0.9, running_var="biased",
                   default_eps=1e-5, channel_axis=1, variance="two-pass", stats_update="forward",
                   default_mode="inference",
                   mode_switch="training_mode=1/0 attribute (opset 14+); opset 9: five outputs / one",
                   batch_of_one="beta"),
    # tinygrad/nn/__init__.py:32 (defaults), :47-49 (two-pass batch variance), :55-57 (the update:
    # (1 − momentum)·old + momentum·batch, the batch variance times m/(m − 1)); TRAINING defaults
    # to 0 (tinygrad/helpers.py:237); a batch of one divides by m − 1 = 0 in Python (:57)
    "tinygrad.builtin": C(momentum_is="new_batch_weight", default_momentum=0.1, running_var="unbiased",
                          default_eps=1e-5, channel_axis=1, variance="two-pass", stats_update="forward",
                          default_mode="inference",
                          mode_switch="Context(TRAINING=1) / env TRAINING=1 (process-wide); unset: inference",
                          batch_of_one="error"),
    # mlx/nn/layers/normalization.py:320-326 (defaults), :371-374 (mx.var over all axes but the
    # last), :393-400 (a batch of one raises), :404-409 (the update, ddof=1); base.py:64 (trains)
    "mlx.builtin": C(momentum_is="new_batch_weight", default_momentum=0.1, running_var="unbiased",
                     default_eps=1e-5, channel_axis=-1, variance="two-pass", stats_update="forward",
                     default_mode="training", mode_switch="module.train() / module.eval()",
                     batch_of_one="error"),
    # paddle/nn/layer/norm.py (3.3.1) and phi::BatchNormKernel (paddle/phi/kernels/cpu/batch_norm_kernel.cc):
    # running = running·momentum + batch·(1 − momentum), biased batch variance (÷ N·HW, two-pass);
    # one value per channel: the kernel copies x to y and returns (y = x, gamma and beta unused,
    # running statistics unchanged): "input".
    # Not expressible in these fields (no field added here): the precision eps and momentum reach the
    # kernel in (C++ float: float32 for a float64 layer, as mxnet.gluon and ONNX; documented as the
    # divergences paddle-eps-float32 / paddle-momentum-float32), and use_global_stats overriding the mode.
    "paddle.builtin": C(momentum_is="old_weight", default_momentum=0.9, running_var="biased",
                        default_eps=1e-5, channel_axis=1, variance="two-pass", stats_update="forward",
                        default_mode="training",
                        mode_switch="layer.train() / layer.eval(); use_global_stats=True/False overrides the mode",
                        batch_of_one="input"),
    # mindspore/nn/layer/normalization.py (2.10.0): the operator gets 1 − momentum (line 109); measured on
    # the CPU: an *unbiased* running variance (the stored oneDNN kernel of older releases keeps a biased one)
    # Not expressible in these fields: the eps range the primitive accepts, (0, 1] (the adapter raises
    # Unsupported beyond it).
    "mindspore.nn": C(momentum_is="old_weight", default_momentum=0.9, running_var="unbiased",
                      default_eps=1e-5, channel_axis=1, variance="two-pass", stats_update="forward",
                      default_mode="inference", mode_switch="cell.set_train(True) / set_train(False)",
                      batch_of_one="beta"),
    # chainer/links/normalization/batch_normalization.py (7.8.1): decay=0.9, eps=2e-5 (:195), the mode is
    # chainer.config.train (:319, True by default); chainer/functions/normalization/batch_normalization.py:
    # two-pass x.var (:87-88), the update (:62-65) with adjust = m/max(m − 1, 1) (:52): unbiased
    "chainer.links": C(momentum_is="old_weight", default_momentum=0.9, running_var="unbiased",
                       default_eps=2e-5, channel_axis=1, variance="two-pass", stats_update="forward",
                       default_mode="training",
                       mode_switch="chainer.using_config('train', True/False): process-wide chainer.config.train, "
                                   "True by default",
                       batch_of_one="beta"),
    # TensorFlow's ops assembled by the user (equiv/adapters/tf_ops.py): tf.nn.moments' biased variance
    # (nn_impl.py:1270-1280, two-pass: the mean of squared_difference from the mean) under the moving average
    # old −= (1 − decay)·(old − batch) of tf.train.ExponentialMovingAverage (moving_averages.py:317, :93),
    # decay required. No default eps: variance_epsilon is a required argument (nn_impl.py:1431-1437); the
    # 1e-3 here is only what the adapter takes where the protocol gives none (the probe is not run).
    "tf.nn.moments": C(momentum_is="old_weight", default_momentum=None, running_var="biased", default_eps=1e-3,
                       channel_axis=-1, variance="two-pass", stats_update="forward", default_mode="n/a",
                       mode_switch="the user's code: tf.nn.moments of the batch (training) or the moving "
                                   "averages (inference) into tf.nn.batch_normalization",
                       batch_of_one="beta"),
    "tf.nn.weighted_moments": C(momentum_is="old_weight", default_momentum=None, running_var="biased",
                                default_eps=1e-3, channel_axis=-1, variance="two-pass", stats_update="forward",
                                default_mode="n/a",
                                mode_switch="the user's code: tf.nn.weighted_moments of the batch (training) "
                                            "or the moving averages (inference) into tf.nn.batch_normalization",
                                batch_of_one="beta"),
    # tf.compat.v1.nn.fused_batch_norm (nn_impl.py:1500-1601: epsilon=0.001, is_training=True,
    # exponential_avg_factor=1.0, the new batch's weight) and the kernel FusedBatchNormV3
    # (fused_batch_norm_op.cc: running variance with Bessel's correction rest_size/(rest_size − 1), one
    # value per channel divides by 1); the raw op's own default epsilon is 1e-4 (gen_nn_ops.py)
    "tf.fused_batch_norm": C(momentum_is="new_batch_weight", default_momentum=1.0, running_var="unbiased",
                             default_eps=1e-3, channel_axis=-1, variance="two-pass", stats_update="forward",
                             default_mode="training",
                             mode_switch="is_training=True/False (default True); mean and variance given "
                                         "when is_training=False or exponential_avg_factor != 1",
                             batch_of_one="beta"),
    "tf.raw.FusedBatchNormV3": C(momentum_is="new_batch_weight", default_momentum=1.0, running_var="unbiased",
                                 default_eps=1e-4, channel_axis=-1, variance="two-pass", stats_update="forward",
                                 default_mode="training",
                                 mode_switch="is_training=True/False (default True); the running statistics "
                                             "are the mean and variance inputs",
                                 batch_of_one="beta"),
}

# Named presets an external implementation may declare (``equiv.external``): the conventions of
# a framework's built-in layer, its batch of one included (measured on the built-ins: an error in
# PyTorch, beta in Keras, Flax and MXNet), without what only that layer object does (its default
# mode); ``mode_switch`` is the protocol's.
PRESETS: dict[str, Conventions] = {preset: replace(DECLARED[adapter], default_mode="n/a",
                                                   mode_switch="training=True/False argument")
                                   for preset, adapter in (("torch", "torch.builtin"), ("keras", "tf.keras"),
                                                           ("flax", "flax.linen"), ("mxnet", "mxnet.gluon"))}

# The framework's own constructor arguments for the canonical setting (None: hard-coded in
# the layer, or no such argument); the channel axis argument takes channel_axis above.
ARGUMENTS: dict[str, dict[str, str | None]] = {
    "torch.builtin": dict(momentum="momentum", eps="eps", axis=None),
    "torch.scratch": dict(momentum=None, eps=None, axis=None),
    "tf.keras": dict(momentum="momentum", eps="epsilon", axis="axis"),
    "tf.scratch": dict(momentum=None, eps=None, axis=None),
    "tf_keras": dict(momentum="momentum", eps="epsilon", axis="axis"),
    "flax.linen": dict(momentum="momentum", eps="epsilon", axis="axis"),
    "flax.linen.two_pass": dict(momentum="momentum", eps="epsilon", axis="axis"),
    "flax.nnx": dict(momentum="momentum", eps="epsilon", axis="axis"),
    "jax.scratch": dict(momentum=None, eps=None, axis=None),
    "jax.stax": dict(momentum=None, eps="epsilon", axis=None),   # its axis is the reduction axes
    "equinox.ema": dict(momentum="momentum", eps="eps", axis=None),
    "equinox.batch": dict(momentum="momentum", eps="eps", axis=None),
    "haiku": dict(momentum="decay_rate", eps="eps", axis=None),
    "mxnet.gluon": dict(momentum="momentum", eps="epsilon", axis="axis"),
    "mxnet.scratch": dict(momentum=None, eps=None, axis=None),
    "onnx.node": dict(momentum="momentum", eps="epsilon", axis=None),
    "tinygrad.builtin": dict(momentum="momentum", eps="eps", axis=None),
    "mlx.builtin": dict(momentum="momentum", eps="eps", axis=None),
    "paddle.builtin": dict(momentum="momentum", eps="epsilon", axis=None),   # layout: data_format="NCHW"
    "mindspore.nn": dict(momentum="momentum", eps="eps", axis=None),   # data_format="NHWC": GPU only
    "chainer.links": dict(momentum="decay", eps="eps", axis=None),   # axis: the axes reduced over, not the channel
    "tf.nn.moments": dict(momentum=None, eps="variance_epsilon", axis=None),   # decay: the user's moving average
    "tf.nn.weighted_moments": dict(momentum=None, eps="variance_epsilon", axis=None),
    "tf.fused_batch_norm": dict(momentum="exponential_avg_factor", eps="epsilon", axis=None),   # data_format
    "tf.raw.FusedBatchNormV3": dict(momentum="exponential_avg_factor", eps="epsilon", axis=None),
}

# Where each built-in layer keeps its batch-norm state (gamma, beta, running mean, running
# var), in the framework's own names: what a checkpoint porter reads and writes.
STATE_NAMES: dict[str, tuple[str, str, str, str]] = {
    "torch.builtin": ("weight", "bias", "running_mean", "running_var"),
    "tf.keras": ("gamma", "beta", "moving_mean", "moving_variance"),
    "flax.linen": ("params/scale", "params/bias", "batch_stats/mean", "batch_stats/var"),
    "flax.nnx": ("scale", "bias", "mean", "var"),
    "equinox.ema": ("weight", "bias", "state[ema_state_index][0]", "state[ema_state_index][1]"),
    "equinox.batch": ("weight", "bias", "state[batch_state_index][0]", "state[batch_state_index][1]"),
    "haiku": ("params/batch_norm/scale", "params/batch_norm/offset", "state/batch_norm/~/mean_ema/average",
              "state/batch_norm/~/var_ema/average"),
    "mxnet.gluon": ("gamma", "beta", "running_mean", "running_var"),
    "tinygrad.builtin": ("weight", "bias", "running_mean", "running_var"),
    "mlx.builtin": ("weight", "bias", "running_mean", "running_var"),
    "paddle.builtin": ("weight", "bias", "_mean", "_variance"),
    "mindspore.nn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "chainer.links": ("gamma", "beta", "avg_mean", "avg_var"),
}

# Beside those four vectors, the state of the layers that debias (Conventions.debias), as a ported
# checkpoint writes it: "hidden" holds value·(1 − decay^counter) (Equinox mode="batch" keeps its hidden
# averages under the running-statistics names above), "counter" a large update count, so that decay^counter
# vanishes and the next update is the moving average of the ported values (COUNTERS: Haiku's counter is
# int32), "first" False (else the first training call replaces the ported statistics by the batch's).
DEBIAS_STATE: dict[str, dict[str, tuple[str, ...]]] = {
    "haiku": dict(hidden=("state/batch_norm/~/mean_ema/hidden", "state/batch_norm/~/var_ema/hidden"),
                  counter=("state/batch_norm/~/mean_ema/counter", "state/batch_norm/~/var_ema/counter")),
    "equinox.batch": dict(hidden=STATE_NAMES["equinox.batch"][2:], counter=("state[batch_counter]",)),
    "equinox.ema": dict(first=("state[ema_first_time_index]",)),
}
COUNTERS: dict[str, int] = {"haiku": 2 ** 30, "equinox.batch": 2 ** 62}

# The shape a layer stores each per-channel vector in, where it is not (C,): Haiku's are shaped like
# the reduced input, (1, C) for (N, C) inputs and (1, 1, 1, C) for NHWC ones.
STATE_SHAPES: dict[str, str] = {"haiku": "(1, C) / (1, 1, 1, C)"}

# What the option probes (equiv.option_probes) measure about the layer options (equiv.options) an
# implementation takes: field -> declared value; an implementation that does not take the option has
# no row for it.
OPTION_DECLARED: dict[str, dict[str, str]] = {
    # torch/nn/modules/batchnorm.py (2.13.0): 1/num_batches_tracked (192), counted at every training step
    # (187-190); eval() uses the batch only when the buffers are None (200-203)
    "torch.builtin": dict(cumulative_weights="1/k", momentum_switch="1/k over every step",
                          set_false_inference="stored statistics", no_affine_gradients="none"),
    # torch/nn/functional.py (2.13.0): weight and bias default to None (2863-2864) and go to torch.batch_norm
    # as given (2898-2908): the layer's affine=False tensors, none
    "torch.builtin+functional": dict(no_affine_gradients="none"),
    # keras/src/layers/normalization/batch_normalization.py (3.15.1): no gamma/beta variable without
    # scale/center (242-261); synchronized=True takes E[x²] − E[x]² on one device too
    # (keras/src/backend/tensorflow/nn.py:1516-1539)
    "tf.keras": dict(no_affine_gradients="none", synchronized_variance="E[x²] − E[x]²"),
    # flax/linen/normalization.py (flax 0.12.8): no scale/bias param without use_scale/use_bias (208-224);
    # force_float32_reductions=False skips the float32 promotion (111-114); flax/nnx/nn/normalization.py:
    # scale/bias None (316-327), no force_float32_reductions
    "flax.linen": dict(no_affine_gradients="none", float16_reductions="float16"),
    "flax.linen.two_pass": dict(no_affine_gradients="none", float16_reductions="float16"),
    "flax.nnx": dict(no_affine_gradients="none"),
    # chainer/links/normalization/batch_normalization.py (7.8.1): finetune=True weighs the k-th call 1/k
    # (325-327); without use_gamma/use_beta no such parameter exists (217-228)
    "chainer.links": dict(cumulative_weights="1/k", no_affine_gradients="none"),
}
