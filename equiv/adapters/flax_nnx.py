"""flax.nnx: ``flax.nnx.BatchNorm``, a stateful module.

Flax's defaults (axis -1, momentum 0.99, epsilon 1e-5, ``use_running_average=False``:
a fresh layer trains), except that ``dtype`` and ``param_dtype`` are set to the case's
dtype (the default param_dtype float32 would round float64 parameters). A fresh layer's
batch statistics are float32 whatever the dtype, and its in-place update keeps them
float32 (tests/test_jax_findings.py); ``set_state`` replaces the values, as restoring a
checkpoint with ``nnx.update`` does, so they are held in max(dtype, float32) like Flax's
reductions. The mode is
switched with ``model.train()`` / ``model.eval()``. Calls are ``nnx.jit``-ted; gradients come from
``nnx.vjp``, which carries the batch-stat update out, as in a real ``nnx`` training step.

Momentum and epsilon are 0-d JAX arrays of the Python floats (weakly typed, promoted exactly
as the floats are), set on a copy (``nnx.clone``) of a layer built once per width and dtype,
as the constructor stores them: ``nnx.jit`` then passes them to the compiled function as
values, where a float would be part of the graph definition, its cache key, and compile the
layer anew for every setting (every Hypothesis example draws one). The same ``BatchNorm.__call__``
runs; only a new shape, dtype or mode compiles
(``equiv.backends.jax`` says what XLA folds differently).

Layer options (equiv.options): ``affine`` False, "no_scale", "no_center" as ``use_scale`` /
``use_bias`` False: ``scale`` / ``bias`` is None (flax/nnx/nn/normalization.py:316-327) and
``_normalize`` applies neither (:173-181). Measured beyond the options: tests/test_options_flax.py.
"""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from equiv import options as opt
from equiv.backends.jax import DTYPES, array, new_layer, numpy, stats_dtype
from equiv.conventions import DECLARED
from equiv.core import Adapter

_FRESH = {}   # (width, dtype, gamma?, beta?) -> a layer as built, never called: adapters take copies


@nnx.jit
def _call(m, x):
    return m(x)


@nnx.jit
def _step(m, x, dy):
    y, vjp = nnx.vjp(lambda m, x: m(x), m, x, graph=False)   # carries the batch-stat update out
    dm, dx = vjp(dy)
    return y, dx, *(None if p is None else p[...] for p in (dm.scale, dm.bias))   # None: no such parameter


class FlaxNNX(Adapter):
    name, framework = "flax.nnx", "flax"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")
    supported_options = {"affine": (False, "no_scale", "no_center")}

    def build(self, momentum, eps):
        new_layer()
        dt = DTYPES[self.dtype]
        # Flax weighs the batch by 1 − momentum: for a tiny w that is 1 − fl(1 − w), up to half
        # an ulp of 1 off w; report the weight the layer really applies, as the Keras adapter does.
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        # a copy (``nnx.clone``) of a layer built once per width and dtype, given the setting as the
        # constructor stores it (``self.momentum = momentum``, flax/nnx/nn/normalization.py:332-333):
        # the layer a fresh construction makes, at a tenth of its cost (4.5 ms: eager initializers, Rngs)
        key = (self.num_features, self.dtype, opt.has_gamma(self.options), opt.has_beta(self.options))
        if key not in _FRESH:
            _FRESH[key] = nnx.BatchNorm(self.num_features, momentum=jnp.asarray(0.99), epsilon=jnp.asarray(1e-5),
                                        dtype=dt, param_dtype=dt, use_scale=key[2], use_bias=key[3],
                                        rngs=nnx.Rngs(0))
        self.module = nnx.clone(_FRESH[key])
        self.module.momentum, self.module.epsilon = jnp.asarray(momentum), jnp.asarray(eps)

    def _x(self, x):
        return array(x, self.dtype, nhwc=True)

    def set_state(self, gamma, beta, running_mean, running_var):
        # replaces the values, as nnx.update does when a checkpoint is restored
        m, s = self.module, stats_dtype(self.dtype)
        for param, value in ((m.scale, gamma), (m.bias, beta)):
            if param is not None:   # only the parameters the layer has
                param.set_value(array(value, self.dtype))
        m.mean.set_value(array(running_mean, s))
        m.var.set_value(array(running_var, s))

    def get_state(self):
        m, c = self.module, self.num_features   # gamma 1 and beta 0 where the layer has none
        return dict(gamma=np.ones(c) if m.scale is None else numpy(m.scale[...]),
                    beta=np.zeros(c) if m.bias is None else numpy(m.bias[...]),
                    running_mean=numpy(m.mean[...]), running_var=numpy(m.var[...]))

    def forward_train(self, x):
        self.module.train()
        return numpy(_call(self.module, self._x(x)), nchw=True)

    def forward_infer(self, x):
        self.module.eval()
        return numpy(_call(self.module, self._x(x)), nchw=True)

    def forward_default(self, x):
        return numpy(_call(self.module, self._x(x)), nchw=True)

    def forward_native(self, x):
        self.module.train()
        return numpy(_call(self.module, array(x, self.dtype)))

    def train_step(self, x, dy):
        self.module.train()
        y, dx, dgamma, dbeta = _step(self.module, self._x(x), array(dy, self.dtype, nhwc=True))
        return (numpy(y, nchw=True), numpy(dx, nchw=True), *(None if g is None else numpy(g) for g in (dgamma, dbeta)))
