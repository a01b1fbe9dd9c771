"""Keras 3 on its other backends: tf.keras's layer, ``keras.layers.BatchNormalization``, in a
process whose ``KERAS_BACKEND`` is jax, torch or numpy (a backend is fixed per process, so each has
its own tox env). No TensorFlow is imported: the layer, its variables and the tensors are Keras'
(``keras.ops``, equiv/backends/keras.py); a path replaces the adapter's ``_gradients`` only, with the
backend's own autodiff.

- ``tf.keras+jax``: ``layer.stateless_call(trainable, non_trainable, x, training=True)`` under
  ``jax.vjp`` (the updated moving statistics come back as the call's non-trainable values and are
  assigned to the layer, as a JAX training loop does). The module turns on ``jax_enable_x64``
  when it is imported: without it JAX has no float64, and a ``dtype="float64"`` Keras layer computes
  and stores float32 while its variables say float64, with no more than JAX's UserWarning
  (tests/test_keras_backends.py).
- ``tf.keras+torch``: torch autograd through ``layer(x, training=True)``, with respect to x and the
  layer's gamma and beta (torch Parameters inside Keras' variables); torch's CPU device.
- ``tf.keras+numpy``: the NumPy backend has no autodiff (``has_gradients = False``); a training
  step is the training forward, which updates the moving statistics.

Where the backends differ from TensorFlow's (the batch variance algorithm of ``keras.ops.moments``)
the conventions below say so and the probes measure it.
"""
from dataclasses import replace


def jax(base):
    import jax as jx
    jx.config.update("jax_enable_x64", True)   # float64 on the jax backend (else float32, with a warning)

    class KerasJax(base):
        # every new shape and dtype compiles each of the layer's ops with XLA (1-4 s per example on the
        # CPU, 0.07 s once compiled): the smaller "compile" example budget (equiv.strategies.COMPILE_EXAMPLES)
        backend, example_budget = "jax", "compile"

        def _gradients(self, x, dy):
            layer = self.layer
            assert [v.path for v in layer.trainable_variables] == [layer.gamma.path, layer.beta.path]
            trainable = [v.value for v in layer.trainable_variables]
            non_trainable = [v.value for v in layer.non_trainable_variables]

            def forward(x, trainable):
                return layer.stateless_call(trainable, non_trainable, x, training=True)

            y, vjp, updated = jx.vjp(forward, x, trainable, has_aux=True)
            dx, (dgamma, dbeta) = vjp(dy)
            for v, value in zip(layer.non_trainable_variables, updated):
                v.assign(value)
            return y, dx, dgamma, dbeta
    return KerasJax


# keras.ops.moments on the torch and NumPy backends: var = E[x²] − E[x]², not clipped at 0
# (keras/src/backend/torch/nn.py:980-982, keras/src/backend/numpy/nn.py:951)
FAST_VARIANCE = dict(variance="fast")


def torch(base):
    import torch as th

    class KerasTorch(base):
        backend = "torch"
        conventions = replace(base.conventions, **FAST_VARIANCE)

        def _numpy(self, t):   # keras.ops.convert_to_numpy's np.array(tensor) warns (torch 2.13, NumPy 2)
            t = getattr(t, "value", t)   # a Keras variable's torch Parameter
            return t.detach().to("cpu", th.float64).numpy().copy()   # a copy, never a view of the buffer

        def _gradients(self, x, dy):
            layer = self.layer
            x = x.detach().requires_grad_(True)
            y = layer(x, training=True)
            dx, dgamma, dbeta = th.autograd.grad(y, [x, layer.gamma.value, layer.beta.value], grad_outputs=dy)
            return y.detach(), dx, dgamma, dbeta
    return KerasTorch


def numpy(base):
    class KerasNumpy(base):
        backend = "numpy"
        conventions = replace(base.conventions, **FAST_VARIANCE)
        has_gradients = False   # the NumPy backend has no autodiff

        def train_step(self, x, dy):
            return self.forward_train(x), None, None, None
    return KerasNumpy
