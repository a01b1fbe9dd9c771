"""Routes of TensorFlow's own converters: a Keras model (Conv2D or Dense → BatchNormalization, or
BatchNormalization alone) converted by ``tf.lite.TFLiteConverter`` and run in the TFLite interpreter,
and a Flax ``BatchNorm`` (flax.linen) converted by ``jax2tf`` and run as a ``tf.function``.

Layout: Keras and Flax are channels-last. The Keras model of a ``FoldState`` takes its input NHWC
(``x.transpose(0, 2, 3, 1)``), the Conv2D kernel is (kh, kw, C_in, C_out) = ``w.transpose(2, 3, 1, 0)``,
the Dense kernel (C_in, C_out) = ``w.T``; symmetric zero padding is a ``ZeroPadding2D`` before a "valid"
Conv2D (Keras' "same" pads 0/1 for stride 2). Outputs come back NCHW as float64. "bn": the layer
alone, on the state's layer output z (float64, rounded to the state's dtype) as input.

TFLite (tensorflow 2.21.0, keras 3.15.1): the converter folds the BatchNorm of a Conv2D or Dense into
the layer's weights and bias (measured: the flatbuffer holds CONV_2D or FULLY_CONNECTED, PAD for the
padding, and no MUL, ADD, SUB, RSQRT, read without the XNNPACK delegate); a BatchNormalization alone
becomes MUL and ADD. Keras' layer traces to tf.nn.batch_normalization: inv = gamma·rsqrt(var + eps),
x·inv + (beta − mean·inv) (tensorflow/python/ops/nn_impl.py:1491-1497, reached from
keras/src/backend/tensorflow/nn.py:1564); the statistics are constants, so the converter folds inv
and beta − mean·inv, and its TFL optimize pass fuses the Mul and the Add into the layer before
(tensorflow/compiler/mlir/lite/transforms/optimize_patterns.td: FuseMulOrDivWithConv2dOrDepthwiseConv2d,
FuseBinaryOpToPrecedingAffine; optimize.cc: FuseFullyConnectedAndMul, FuseFullyConnectedAndAdd; line
numbers not pinned, the stored copies are of other revisions): W' = W·inv, b' = b·inv + (beta − mean·inv).
The given eps survives (dead channels within bound with eps 1e-5, Keras' default being 1e-3).
float16 quantization stores the folded weights and biases (or the standalone MUL and ADD constants)
as float16 behind DEQUANTIZE, clamped to ±65504 (prepare_quantize_dynamic_range.cc,
convertToFloat16Constant), and computes in float32. Findings: equiv/known/tf.py.

tf.lite.Interpreter warns that it is deprecated for LiteRT (``ai_edge_litert``); ai-edge-litert 2.3.0
installs from PyPI on Python 3.11 (NumPy 2.4.6) and runs the same flatbuffers to the same outputs, bit
for bit (measured on both findings' witnesses); the route keeps tf.lite.Interpreter, which the tf
extra installs.

jax2tf (jax 0.10.2, flax 0.12.8, tensorflow-cpu 2.21.0: native serialization, an XlaCallModule op):
the Flax layer's eps, its training mode (batch statistics, and the running statistics it writes with
mutable=['batch_stats']) and its momentum survive (tests/test_routes_jax2tf.py).
"""
import warnings

import numpy as np

from equiv.routes.states import bn_input  # noqa: F401 (the routes' modules and tests read it here too)

LITE_FOLDED = ("MUL", "ADD", "SUB", "RSQRT", "SQRT", "DIV")   # ops a BatchNorm left in the flatbuffer shows as


def _nhwc(a):
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def _nchw(a):
    return np.asarray(a, dtype=np.float64).transpose(0, 3, 1, 2) if np.ndim(a) == 4 else np.asarray(a, np.float64)


def model_input(state, layer):
    """The NHWC (or N, C) input of the model of ``layer`` ("conv", "linear" or "bn") on the state."""
    return _nhwc(bn_input(state) if layer == "bn" else np.asarray(state.x, dtype=np.float64))


def keras_model(state, layer, dtype="float32"):
    """The Keras model (layer → BatchNormalization, or the BatchNormalization alone) of a FoldState."""
    import keras
    x = model_input(state, layer)
    inp = keras.Input(x.shape[1:], batch_size=x.shape[0], dtype=dtype)
    h, weights = inp, []
    if layer == "conv":
        if state.padding:
            h = keras.layers.ZeroPadding2D(state.padding, dtype=dtype)(h)
        conv = keras.layers.Conv2D(state.w.shape[0], state.w.shape[2:], strides=state.stride, use_bias=state.bias,
                                   dtype=dtype)
        h = conv(h)
        weights.append((conv, [state.w.transpose(2, 3, 1, 0)] + ([state.b] if state.bias else [])))
    elif layer == "linear":
        dense = keras.layers.Dense(state.w.shape[0], use_bias=state.bias, dtype=dtype)
        h = dense(h)
        weights.append((dense, [state.w.T] + ([state.b] if state.bias else [])))
    bn = keras.layers.BatchNormalization(epsilon=state.eps, dtype=dtype)
    model = keras.Model(inp, bn(h))
    weights.append((bn, [state.gamma, state.beta, state.running_mean, state.running_var]))
    for lay, ws in weights:
        lay.set_weights([np.asarray(w, dtype=dtype) for w in ws])
    return model


def run_keras(model, state, layer):
    """Eager Keras on the state's input, NCHW float64."""
    x = model_input(state, layer).astype(model.inputs[0].dtype)
    return _nchw(np.asarray(model(x, training=False)))


class Lite:
    """A Keras model converted by tf.lite.TFLiteConverter (float16: float16 weights), its flatbuffer
    and the builtin ops it holds (read without the default XNNPACK delegate, which would hide them)."""

    def __init__(self, model, dtype="float32", training=False):
        import tensorflow as tf
        if training:      # the model's training-mode call, as a concrete function
            spec = tf.TensorSpec(model.inputs[0].shape, model.inputs[0].dtype)
            fn = tf.function(lambda x: model(x, training=True)).get_concrete_function(spec)
            converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
        else:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if dtype == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        self.flatbuffer = converter.convert()
        plain = self._interpreter(tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.ops = tuple(op["op_name"] for op in plain._get_ops_details())

    def _interpreter(self, resolver=None):
        import tensorflow as tf
        kw = {} if resolver is None else {"experimental_op_resolver_type": resolver}
        with warnings.catch_warnings():      # tf.lite.Interpreter: deprecated for ai_edge_litert (see the docs)
            warnings.simplefilter("ignore", UserWarning)
            it = tf.lite.Interpreter(model_content=self.flatbuffer, **kw)
        it.allocate_tensors()
        return it

    def folded(self):
        """No op of the BatchNorm's arithmetic left: its scale and shift went into the layer's weights."""
        return not any(op in LITE_FOLDED for op in self.ops)

    def __call__(self, x):
        it = self._interpreter()          # the default: XNNPACK delegate, as a deployed model runs
        it.set_tensor(it.get_input_details()[0]["index"], np.asarray(x, dtype=np.float32))
        it.invoke()
        return _nchw(it.get_tensor(it.get_output_details()[0]["index"]))


def litert_interpreter(flatbuffer, plain=False):
    """ai_edge_litert's Interpreter of a flatbuffer, tensors allocated; ``plain``: without the default XNNPACK
    delegate (which would hide the builtin ops)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    kw = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if plain else {}
    it = Interpreter(model_content=flatbuffer, **kw)
    it.allocate_tensors()
    return it


def tflite(model, dtype="float32"):
    return Lite(model, dtype)


def run_lite(lite, state, layer):
    return lite(model_input(state, layer))


# jax2tf: a Flax BatchNorm (axis −1, the state's eps, the given momentum) as a tf.function


def flax_variables(state):
    import jax.numpy as jnp
    f = lambda a: jnp.asarray(np.asarray(a, dtype=np.float32))  # noqa: E731
    return {"params": {"scale": f(state.gamma), "bias": f(state.beta)},
            "batch_stats": {"mean": f(state.running_mean), "var": f(state.running_var)}}


def flax_apply(state, momentum=0.99, training=False, fast_variance=True):
    """The Flax function: x -> y (inference) or x -> (y, new mean, new var) (training, mutable batch_stats);
    ``fast_variance=False``: the layer's two-pass variance (flax.linen.two_pass)."""
    import flax.linen as nn
    module = nn.BatchNorm(momentum=momentum, epsilon=state.eps, use_fast_variance=fast_variance)
    variables = flax_variables(state)

    def f(x):
        if not training:
            return module.apply(variables, x, use_running_average=True)
        y, new = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        return y, new["batch_stats"]["mean"], new["batch_stats"]["var"]
    return f


def flax_train_step(state, momentum=0.9, fast_variance=True):
    """The Flax training step with the running statistics as arguments: (x, mean, var) -> (y, new mean,
    new var), so that a converted function can be stepped several times."""
    import flax.linen as nn
    module = nn.BatchNorm(momentum=momentum, epsilon=state.eps, use_fast_variance=fast_variance)
    params = flax_variables(state)["params"]

    def f(x, mean, var):
        y, new = module.apply({"params": params, "batch_stats": {"mean": mean, "var": var}}, x,
                              use_running_average=False, mutable=["batch_stats"])
        return y, new["batch_stats"]["mean"], new["batch_stats"]["var"]
    return f


def flax_vjp(state, fast_variance=True):
    """The Flax training step's backward: (x, dy) -> (dx, dscale, dbias), the vjp of the training forward
    (batch statistics) with respect to the input and the parameters."""
    import flax.linen as nn
    import jax
    module = nn.BatchNorm(momentum=0.9, epsilon=state.eps, use_fast_variance=fast_variance)
    variables = flax_variables(state)

    def f(x, dy):
        def forward(x, params):
            return module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                use_running_average=False, mutable=["batch_stats"])[0]
        _, vjp = jax.vjp(forward, x, variables["params"])
        dx, dparams = vjp(dy)
        return dx, dparams["scale"], dparams["bias"]
    return f


def jax2tf(f):
    """The jax2tf conversion of ``f``, run as a tf.function (native serialization, jax2tf's default)."""
    import tensorflow as tf
    from jax.experimental import jax2tf as j2t
    return tf.function(j2t.convert(f), autograph=False)


def run_flax(fn, state):
    """``fn`` (the Flax function or its tf.function) on the state's standalone input: NCHW float64 outputs."""
    out = fn(model_input(state, "bn").astype(np.float32))
    if isinstance(out, tuple):
        return (_nchw(np.asarray(out[0])),) + tuple(np.asarray(o, dtype=np.float64) for o in out[1:])
    return _nchw(np.asarray(out))


def output(route, state, layer, training=False):
    """The route on the state's model (equiv.routes.probes): ({"": y}, folded). TFLite's training form: the
    Keras model's call with training=True, converted from its concrete function; jax2tf's: the Flax apply
    with use_running_average=False and mutable batch statistics ({"": (y, mean, var)})."""
    if route.function == "tflite":
        lite = Lite(keras_model(state, layer), training=training)
        return {"": run_lite(lite, state, layer)}, lite.folded()
    return {"": run_flax(jax2tf(flax_apply(state, training=training)), state)}, False
