"""equinox: ``equinox.nn.BatchNorm`` in its two modes, ``mode="ema"`` (EquinoxEMA: what a layer
built without ``mode`` is, with a warning) and ``mode="batch"`` (EquinoxBatch).

Built as Equinox's documentation does, ``eqx.nn.make_with_state(eqx.nn.BatchNorm)(C, "batch",
...)``, with Equinox's defaults (momentum 0.99, eps 1e-5, ``inference=False``) except ``dtype``
(the case's: it sets the weight, the bias and the running statistics). The layer sees one example
at a time, channel-first ((C,) or (C, H, W): the canonical layout per example), and must be called
under ``jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)``
(its ``lax.pmean`` over the named axis takes the batch statistics; without the vmap it raises
NameError). The mode is ``inference=True/False`` at the call.

The adapter holds the state's arrays; each jitted call builds the layer and an ``eqx.nn.State``
inside the trace with momentum and eps as runtime scalars (``momentum`` and ``eps`` are static
fields: as literals every new setting would compile again), puts the held arrays in with
``eqx.tree_at`` / ``State.set``, and takes the updated ones out.

The state, and what ``set_state`` writes (a checkpoint of a layer that has trained):

- ``mode="ema"``: ``ema_state_index`` = (running mean, running var) and ``ema_first_time_index``,
  True on a fresh layer: the first training call then replaces the running statistics by the
  batch's (equinox/nn/_batch_norm.py:238-239). ``set_state`` sets it False, as in a trained
  checkpoint, so the next update is the moving average of the values set.
- ``mode="batch"``: ``batch_state_index`` = (hidden mean, hidden var), the plain moving average
  from (0, 1), and ``batch_counter``, the number of updates; inference reads hidden/(1 − m^counter)
  (counter 0: hidden; _batch_norm.py:249-251). ``get_state`` returns what inference reads;
  ``set_state`` writes hidden = value·(1 − m^counter) with counter 2^62 (a long-trained layer:
  m^counter is 0 for every m < 1 in float64), so inference reads the values set and the next
  update is their moving average.
"""
import warnings
from functools import partial

import jax
import jax.numpy as jnp

from equiv.backends.jax import DTYPES, array, new_layer, numpy
from equiv.conventions import COUNTERS, DECLARED
from equiv.core import Adapter

# after equiv.backends.jax, whose setup() (run by equiv.registry first) turns on float64
# isort: split
import equinox as eqx  # noqa: E402

COUNTER = COUNTERS["equinox.batch"]


def _layer(mode, c, dtype, momentum, eps, weight, bias):
    """The layer and its state, built inside the trace, with the given weight and bias."""
    with warnings.catch_warnings():   # momentum and eps are tracers in static fields, on purpose
        warnings.simplefilter("ignore")
        model, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(c, "batch", eps=eps, momentum=momentum,
                                                              dtype=dtype, mode=mode)
    model = eqx.tree_at(lambda m: (m.weight, m.bias), model, (weight, bias))
    return model, state


def _put(mode, model, state, held):
    if mode == "ema":
        state = state.set(model.ema_first_time_index, held["first"])
        return state.set(model.ema_state_index, (held["a"], held["b"]))
    state = state.set(model.batch_counter, held["first"])
    return state.set(model.batch_state_index, (held["a"], held["b"]))


def _take(mode, model, state):
    if mode == "ema":
        (a, b), first = state.get(model.ema_state_index), state.get(model.ema_first_time_index)
    else:
        (a, b), first = state.get(model.batch_state_index), state.get(model.batch_counter)
    return {"a": a, "b": b, "first": first}


def _run(mode, c, dtype, inference, momentum, eps, held, x):
    """y and the held state after one vmapped call (inference: True, False or None: a plain call)."""
    model, state = _layer(mode, c, dtype, momentum, eps, held["weight"], held["bias"])
    state = _put(mode, model, state, held)
    kw = {} if inference is None else {"inference": inference}
    y, state = jax.vmap(lambda x, s: model(x, s, **kw), axis_name="batch", in_axes=(0, None),
                        out_axes=(0, None))(x, state)
    return y, dict(held, **_take(mode, model, state))


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _call(mode, c, dtype, inference, momentum, eps, held, x):
    return _run(mode, c, dtype, inference, momentum, eps, held, x)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _step(mode, c, dtype, momentum, eps, held, x, dy):
    def f(x, weight, bias):
        return _run(mode, c, dtype, False, momentum, eps, dict(held, weight=weight, bias=bias), x)
    y, vjp, new = jax.vjp(f, x, held["weight"], held["bias"], has_aux=True)
    return (y, *vjp(dy), new)


@partial(jax.jit, static_argnums=0)
def _read(mode, momentum, held):
    """The running statistics inference uses: as stored (ema); hidden/(1 − m^counter) (batch), as
    _batch_norm.py:249-251 computes them."""
    if mode == "ema":
        return held["a"], held["b"]
    scale = jnp.where(held["first"] == 0, 1, 1 - momentum ** held["first"])
    return held["a"] / scale, held["b"] / scale


@partial(jax.jit, static_argnums=0)
def _write(mode, momentum, mean, var):
    if mode == "ema":
        return mean, var
    scale = 1 - momentum ** jnp.asarray(COUNTER)
    return mean * scale, var * scale


class EquinoxEMA(Adapter):
    name, framework = "equinox.ema", "equinox"
    conventions = DECLARED[name]
    mode = "ema"

    def build(self, momentum, eps):
        new_layer()
        self.momentum, self.dt = momentum, DTYPES[self.dtype]
        # the batch weighs 1 − momentum, for a tiny w not exactly w: report the weight really applied
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        self.jit = (self.mode, self.num_features, self.dt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(self.num_features, "batch", eps=eps,
                                                                  momentum=momentum, dtype=self.dt,
                                                                  mode=self.mode)
        self.held = dict(weight=model.weight, bias=model.bias, **_take(self.mode, model, state))

    def set_state(self, gamma, beta, running_mean, running_var):
        mean, var = _write(self.mode, self.momentum, array(running_mean, self.dt), array(running_var, self.dt))
        first = jnp.asarray(False) if self.mode == "ema" else jnp.asarray(COUNTER)
        self.held = dict(weight=array(gamma, self.dt), bias=array(beta, self.dt), a=mean, b=var, first=first)

    def get_state(self):
        mean, var = _read(self.mode, self.momentum, self.held)
        return dict(gamma=numpy(self.held["weight"]), beta=numpy(self.held["bias"]),
                    running_mean=numpy(mean), running_var=numpy(var))

    def _call(self, x, inference):
        y, self.held = _call(*self.jit, inference, self.momentum, self.eps, self.held, array(x, self.dt))
        return numpy(y)

    def forward_train(self, x):
        return self._call(x, False)

    def forward_infer(self, x):
        return self._call(x, True)

    def forward_default(self, x):
        return self._call(x, None)

    def forward_native(self, x):
        return self._call(x, False)

    def train_step(self, x, dy):
        y, dx, dgamma, dbeta, self.held = _step(*self.jit, self.momentum, self.eps, self.held,
                                                array(x, self.dt), array(dy, self.dt))
        return numpy(y), numpy(dx), numpy(dgamma), numpy(dbeta)


class EquinoxBatch(EquinoxEMA):
    """``mode="batch"``: batch statistics in training, zero-debiased moving averages in inference."""
    name = "equinox.batch"
    conventions = DECLARED[name]
    mode = "batch"
