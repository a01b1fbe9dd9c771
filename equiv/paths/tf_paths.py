"""Paths of the TensorFlow adapters: each a few lines over the eager adapter.

The eager adapters (equiv/backends/keras.py) run the layer through two methods, ``_layer_call`` (a call
with the mode as given) and ``_gradients`` (a training forward and its GradientTape backward); a path
replaces those two, nothing else: state, layout and dtype stay the adapter's own.

XLA: both run as ``tf.function(jit_compile=True)``, the training step with its GradientTape inside the
compiled function (as a Keras ``train_step`` under ``jit_compile=True``), so the forward and the
gradients are one XLA computation. ``jit_compile=True`` is must-compile: an op XLA cannot compile is an
error, never a silent fallback to TensorFlow's kernels (measured: tests/test_paths_tf.py).

Retracing: one pair of compiled functions per layer and setting, traced once per input shape, dtype and
mode and compiled by XLA per shape. The eager adapters reuse built layers (a pool per dtype, rank and
width, equiv/backends/keras.py ``LayerPool``). The book's layer hard-codes its eps and momentum, so
tf.scratch's compiled functions are reused across examples. Keras bakes ``momentum`` and ``epsilon``
into the trace as Python floats (``float(momentum)``,
keras/src/layers/normalization/batch_normalization.py:191-192, used as constants at 386-390 and 403):
a pooled Keras layer given another setting needs another trace (the functions are kept per layer and
(momentum, epsilon)), so tf.keras+xla traces and compiles anew for every Hypothesis example
(handing Keras a tensor instead would change what it computes: ``1.0 - self.momentum`` is then rounded
to the dtype after, not before, the subtraction): about 0.3 s per call and 0.5 s per training step
and shape on an idle CPU.
"""
import weakref

import tensorflow as tf

from equiv.backends.tf import tape_gradients

# layer -> {(momentum, epsilon): (compiled call, compiled step)}; they die with the layer
_compiled = weakref.WeakKeyDictionary()


def _xla_functions(layer):
    setting = (getattr(layer, "momentum", None), getattr(layer, "epsilon", None))   # None: the book's
    functions = _compiled.setdefault(layer, {})
    if setting not in functions:
        ref = weakref.ref(layer)          # the functions must not keep their layer alive

        def call(x, **kw):
            return ref()(x, **kw)

        def step(x, dy):
            return tape_gradients(ref(), x, dy)
        functions[setting] = (tf.function(call, jit_compile=True), tf.function(step, jit_compile=True))
    return functions[setting]


def xla(base):
    class XLA(base):
        example_budget = "compile"   # an XLA compile per example and shape (equiv.strategies.COMPILE_EXAMPLES)

        def _layer_call(self, xt, **kw):
            return _xla_functions(self.layer)[0](xt, **kw)

        def _gradients(self, xt, dyt):
            return _xla_functions(self.layer)[1](xt, dyt)
    return XLA
