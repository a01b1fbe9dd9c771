"""jax.stax: ``jax.example_libraries.stax.BatchNorm``, the layer of JAX's own minimal library.

``BatchNorm(axis=(0, 1, 2), epsilon=1e-5)`` returns ``(init_fun, apply_fun)``; ``apply_fun(params,
x)`` is ``gamma·jax.nn.standardize(x, axis, epsilon) + beta`` (jax/example_libraries/stax.py:121-142)
and nothing else: no running statistics, no momentum, no mode. Every call normalizes with the
statistics of the batch it is given, so the layer is training-only: the inference properties,
the running statistics and the moving-average probes do not apply (``running_var = "none"``).
``set_state`` takes gamma and beta (params = (beta, gamma)) and has nowhere to put running
statistics; ``get_state`` returns gamma and beta only.

The default ``axis=(0, 1, 2)`` is NHWC's batch and spatial axes; a 2-D (N, C) input needs
``axis=0``, which the adapter passes (with the default, 2-D input raises). Channel-last: 4-D
canonical input moves to NHWC and back. The apply is jitted with epsilon as a runtime scalar.
"""
from functools import partial

import jax
from jax.example_libraries import stax

from equiv.backends.jax import DTYPES, array, new_layer, numpy
from equiv.conventions import DECLARED
from equiv.core import Adapter, Unsupported


def _axis(ndim):
    return (0,) if ndim == 2 else (0, 1, 2)


@partial(jax.jit, static_argnums=0)
def _apply(axis, eps, params, x):
    _, apply_fun = stax.BatchNorm(axis=axis, epsilon=eps) if axis is not None else stax.BatchNorm(epsilon=eps)
    return apply_fun(params, x)


@partial(jax.jit, static_argnums=0)
def _step(axis, eps, params, x, dy):
    y, vjp = jax.vjp(lambda x, params: _apply(axis, eps, params, x), x, params)
    dx, (dbeta, dgamma) = vjp(dy)
    return y, dx, dgamma, dbeta


class JaxStax(Adapter):
    name, framework = "jax.stax", "jax"
    conventions = DECLARED[name]

    def build(self, momentum, eps):
        new_layer()
        self.axis = _axis(self.ndim)
        init_fun, _ = stax.BatchNorm(axis=self.axis, epsilon=eps)
        shape = (2, self.num_features) if self.ndim == 2 else (2, 1, 1, self.num_features)
        _, (beta, gamma) = init_fun(jax.random.key(0), shape)
        self.params = (beta.astype(DTYPES[self.dtype]), gamma.astype(DTYPES[self.dtype]))

    def set_state(self, gamma, beta, running_mean=None, running_var=None):
        self.params = (array(beta, self.dtype), array(gamma, self.dtype))   # no running statistics to set

    def get_state(self):
        beta, gamma = self.params
        return dict(gamma=numpy(gamma), beta=numpy(beta))

    def _x(self, x):
        return array(x, self.dtype, nhwc=True)

    def forward_train(self, x):
        return numpy(_apply(self.axis, self.eps, self.params, self._x(x)), nchw=True)

    def forward_infer(self, x):
        raise Unsupported(f"{self.name} has no inference mode: it keeps no running statistics")

    def forward_default(self, x):
        return self.forward_train(x)

    def forward_native(self, x):
        # the layer's own default axis (0, 1, 2) on x as given
        return numpy(_apply(None, self.eps, self.params, array(x, self.dtype)))

    def train_step(self, x, dy):
        y, dx, dgamma, dbeta = _step(self.axis, self.eps, self.params, self._x(x), array(dy, self.dtype, nhwc=True))
        return numpy(y, nchw=True), numpy(dx, nchw=True), numpy(dgamma), numpy(dbeta)
