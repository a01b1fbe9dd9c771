"""Keras 3's backend: Keras layers behind the protocol, on whichever backend Keras runs, and the
Keras backend of the process (``keras_backend``, read without importing Keras).

Canonical data is channel-first; Keras layers are channel-last: (N, C, H, W) goes in as
(N, H, W, C) and comes back transposed. (N, C) needs no change.

What depends on the backend is the class attribute ``backend`` and three methods: ``_tensor``
(NumPy -> a tensor of the adapter's dtype) and ``_numpy`` (back), here with ``keras.ops``, which
every backend has, and ``_gradients`` (the training forward and
the backward of sum(y·dy) through the backend's own autodiff: TensorFlow's GradientTape for
tf.keras and tf.scratch, equiv/backends/tf.py; jax.vjp and torch autograd for the Keras backend
paths, equiv/paths/keras_paths.py). Nothing here imports a backend.
"""
import json
import os
import sys
import weakref
from pathlib import Path

import numpy as np

from equiv.core import Adapter


def keras_backend():
    """The Keras backend of this process, without importing Keras: Keras' own answer once it is imported,
    else $KERAS_BACKEND, else keras.json's "backend" ($KERAS_HOME or ~/.keras), else "tensorflow"."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def to_nhwc(a):
    a = np.asarray(a, dtype=np.float64)
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def to_nchw(a):
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def native_shape(ndim, channels):
    """The input shape a channels-last layer is built for."""
    return (None, channels) if ndim == 2 else (None, None, None, channels)


class LayerPool:
    """Built Keras layers whose adapter is gone, per key (dtype, input rank and width: what a layer is
    built for), each with the values a fresh layer holds. Building a layer (its variables) costs more
    than a call; an adapter takes a free layer and assigns those values back before use, so it holds
    what a fresh layer holds. A layer is never shared by two live adapters."""

    def __init__(self):
        self._free = {}

    def take(self, adapter, key, make):
        """A layer for ``adapter``, a KerasLayerAdapter of the key's dtype, returned to the pool when
        the adapter dies: a free one of ``key`` reset to its fresh values, else ``make()``'s."""
        free = self._free.setdefault(key, [])
        if free:
            layer, fresh = free.pop()
            for v, value in zip(layer.weights, fresh):
                v.assign(value)
        else:
            layer = make()
            # as tensors of the layer's dtype (exact), made once: immutable, assigned as they are
            fresh = [adapter._tensor(adapter._numpy(v)) for v in layer.weights]
        weakref.finalize(adapter, free.append, (layer, fresh))
        return layer


class KerasLayerAdapter(Adapter):
    """The protocol for a Keras layer with gamma, beta, moving_mean and moving_variance
    (Keras' own BatchNormalization and the book's layer alike); ``build`` creates ``self.layer``."""

    backend = "tensorflow"     # the Keras backend (KERAS_BACKEND, fixed per process) the layer runs on

    def _tensor(self, a):
        """A tensor of the adapter's dtype (the canonical data are already rounded to it: exact)."""
        import keras
        # the dtype is given: without it Keras makes float64 NumPy data its floatx, float32
        return keras.ops.convert_to_tensor(np.asarray(a, dtype=np.float64), dtype=self.dtype)

    def _numpy(self, t):
        """Float64 NumPy copy of a tensor or variable (bfloat16 included)."""
        if self.backend == "tensorflow":   # its tensors convert themselves; keras.ops' np.array(x) warns (NumPy 2)
            return np.asarray(t).astype(np.float64)
        import keras
        t = getattr(t, "value", t)   # a Keras variable: its backend array (np.array(variable) warns, NumPy 2)
        return np.asarray(keras.ops.convert_to_numpy(t)).astype(np.float64)

    def _gradients(self, x, dy):
        """(y, dx, dgamma, dbeta) tensors of a training forward on tensor ``x`` and the backward of
        sum(y·dy), the running statistics updated as by a training step: the backend's autodiff."""
        raise NotImplementedError

    def _vars(self):
        layer = self.layer
        return dict(gamma=layer.gamma, beta=layer.beta, running_mean=layer.moving_mean,
                    running_var=layer.moving_variance)

    def set_state(self, gamma, beta, running_mean, running_var):
        values = dict(gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
        for k, v in self._vars().items():
            v.assign(self._tensor(values[k]))

    def get_state(self):
        return {k: self._numpy(v) for k, v in self._vars().items()}

    # What runs the layer: ``_layer_call`` (a call with the mode as given) and ``_gradients`` (one
    # training step with its backward). An execution path (equiv.paths.tf_paths, keras_paths)
    # replaces these, nothing else.
    def _layer_call(self, xt, **kw):
        return self.layer(xt, **kw)

    def _call(self, x, **kw):
        return to_nchw(self._numpy(self._layer_call(self._tensor(to_nhwc(x)), **kw)))

    def forward_train(self, x):
        return self._call(x, training=True)

    def forward_infer(self, x):
        return self._call(x, training=False)

    def forward_default(self, x):
        return self._call(x)

    def forward_native(self, x):
        return self._numpy(self._layer_call(self._tensor(x), training=True))

    def train_step(self, x, dy):
        y, dx, dgamma, dbeta = self._gradients(self._tensor(to_nhwc(x)), self._tensor(to_nhwc(dy)))
        return to_nchw(self._numpy(y)), to_nchw(self._numpy(dx)), self._numpy(dgamma), self._numpy(dbeta)
