"""The adapters' table: adapter name -> (module, class, framework import name).

Data only: ``equiv.registry`` resolves a name (``load``, ``framework_installed``, ``install_command``,
...). Nothing here imports a framework, so ``import equiv`` works with none installed.
"""

ADAPTERS = {
    "torch.builtin": ("equiv.adapters.torch_builtin", "TorchBuiltin", "torch"),
    "torch.scratch": ("equiv.adapters.torch_scratch", "TorchScratch", "torch"),
    "tf.keras": ("equiv.adapters.tf_keras", "KerasBuiltin", "tensorflow"),
    "tf.scratch": ("equiv.adapters.tf_scratch", "TFScratch", "tensorflow"),
    "tf_keras": ("equiv.adapters.tf_keras2", "TFKeras2", "tf_keras"),
    "tf.nn.moments": ("equiv.adapters.tf_ops", "TFMoments", "tensorflow"),
    "tf.nn.weighted_moments": ("equiv.adapters.tf_ops", "TFWeightedMoments", "tensorflow"),
    "tf.fused_batch_norm": ("equiv.adapters.tf_ops", "TFFusedBatchNorm", "tensorflow"),
    "tf.raw.FusedBatchNormV3": ("equiv.adapters.tf_ops", "TFRawFusedBatchNormV3", "tensorflow"),
    "flax.linen": ("equiv.adapters.flax_linen", "FlaxLinen", "flax"),
    "flax.linen.two_pass": ("equiv.adapters.flax_linen", "FlaxLinenTwoPass", "flax"),
    "flax.nnx": ("equiv.adapters.flax_nnx", "FlaxNNX", "flax"),
    "jax.scratch": ("equiv.adapters.jax_scratch", "JaxScratch", "flax"),
    "jax.stax": ("equiv.adapters.jax_stax", "JaxStax", "jax"),
    "equinox.ema": ("equiv.adapters.equinox_nn", "EquinoxEMA", "equinox"),
    "equinox.batch": ("equiv.adapters.equinox_nn", "EquinoxBatch", "equinox"),
    "haiku": ("equiv.adapters.haiku_bn", "HaikuBatchNorm", "haiku"),
    "mxnet.gluon": ("equiv.adapters.mxnet_gluon", "MXNetGluon", "mxnet"),
    "mxnet.scratch": ("equiv.adapters.mxnet_scratch", "MXNetScratch", "mxnet"),
    "onnx.node": ("equiv.adapters.onnx_node", "OnnxNode", "onnxruntime"),
    "tinygrad.builtin": ("equiv.adapters.tinygrad_builtin", "TinygradBuiltin", "tinygrad"),
    "mlx.builtin": ("equiv.adapters.mlx_builtin", "MLXBuiltin", "mlx"),
    "paddle.builtin": ("equiv.adapters.paddle_builtin", "PaddleBuiltin", "paddle"),
    "mindspore.nn": ("equiv.adapters.mindspore_nn", "MindSporeNN", "mindspore"),
    "chainer.links": ("equiv.adapters.chainer_bn", "ChainerBN", "chainer"),
}

# Adapters built on Keras 3 run on the Keras backend TensorFlow; the other backends are paths.
KERAS_ON_TF = ("tf.keras", "tf.scratch")
