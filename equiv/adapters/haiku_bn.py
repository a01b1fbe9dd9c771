"""haiku: ``haiku.BatchNorm`` (dm-haiku), inside ``hk.transform_with_state``.

Built as ``hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=...)`` with Haiku's
defaults otherwise (eps 1e-5, ``data_format="channels_last"``): ``decay_rate`` has no default
(haiku/_src/batch_norm.py:68), so a layer asked for no momentum is refused by Haiku itself and the
adapter raises ``MomentumRequired``. ``init`` runs with ``is_training=True`` on a zero batch, as a
Haiku user must (the moving averages' "average" state is created only by an update call,
moving_averages.py:113-132; init does not keep the update, so it counts 0). The mode is the
required ``is_training`` argument of the call (``test_local_stats=True`` with ``is_training=False``
normalizes with the batch statistics without updating them).

Parameters are ``params["batch_norm"]["scale" / "offset"]``, shaped like the reduced input
((1, C) or (1, 1, 1, C)), in the input's dtype. The state is two ``hk.ExponentialMovingAverage``
modules, ``batch_norm/~/mean_ema`` and ``batch_norm/~/var_ema``, each {``hidden``, ``average``,
``counter``}: hidden = decay·hidden + (1 − decay)·value from 0, and average = hidden/(1 −
decay^counter) (zero debiasing, moving_averages.py:123-127), which is what inference reads
(batch_norm.py:183-184). ``get_state`` returns ``average``; ``set_state`` writes a checkpoint of a
long-trained layer: average = value, counter = 2^30 (int32, room for 2^30 more updates) and
hidden = value·(1 − decay^counter), computed in the state's dtype as Haiku computes the divisor,
so the next update is the moving average of the values set (exactly, wherever decay^(2^30) is
negligible: equiv/known/jax.py).

Calls are a jitted ``apply`` with ``decay_rate`` and ``eps`` as runtime scalars (a Haiku module's
constructor arguments are plain Python values in the traced function; as arguments of the jitted
function a new setting does not compile again).
"""
import jax
import jax.numpy as jnp
import numpy as np

from equiv.backends.jax import DTYPES, array, new_layer, numpy, sample
from equiv.conventions import COUNTERS, DECLARED
from equiv.core import Adapter, MomentumRequired, weight_applied

# after equiv.backends.jax, whose setup() (run by equiv.registry first) turns on float64
# isort: split
import haiku as hk  # noqa: E402

COUNTER = COUNTERS["haiku"]
EMAS = ("batch_norm/~/mean_ema", "batch_norm/~/var_ema")


def _bn(x, is_training, test_local_stats, decay, eps):
    return hk.BatchNorm(True, True, decay_rate=decay, eps=eps)(x, is_training, test_local_stats)


_T = hk.transform_with_state(_bn)
_init = jax.jit(_T.init, static_argnums=(2, 3))
_apply = jax.jit(_T.apply, static_argnums=(4, 5))


@jax.jit
def _step(params, state, x, dy, decay, eps):
    def f(x, params):
        return _T.apply(params, state, None, x, True, False, decay, eps)
    y, vjp, state = jax.vjp(f, x, params, has_aux=True)
    dx, dparams = vjp(dy)
    return y, dx, dparams, state


def _plain_call(x):
    """A call without ``is_training``: what a user writes who picks no mode."""
    return hk.BatchNorm(True, True, decay_rate=0.9)(x)


def _no_decay(x):
    return hk.BatchNorm(True, True)(x, True)


class HaikuBatchNorm(Adapter):
    name, framework = "haiku", "dm-haiku"
    conventions = DECLARED[name]

    def build(self, momentum, eps):
        new_layer()
        x0 = sample(self.num_features, self.ndim, self.dtype)
        if momentum is None:
            try:
                hk.transform_with_state(_no_decay).init(None, x0)
            except TypeError as e:
                raise MomentumRequired(f"{self.name}: {e}") from e
            raise AssertionError("hk.BatchNorm built without decay_rate")   # pragma: no cover
        self.decay = momentum
        # Haiku weighs the batch by 1 − decay with decay converted to the input's dtype
        # (moving_averages.py:117): for a tiny w that is not exactly w (w = 1e-5: 1 + 6.6e-12 times w in
        # float64, 1 + 1.4e-3 times w in float32)
        self.new_batch_weight = weight_applied(momentum, self.dtype)
        self.params, self.state = _init(jax.random.key(0), x0, True, False, momentum, eps)

    def _shape(self, v):
        return np.asarray(v, dtype=np.float64).reshape((1,) * (self.ndim - 1) + (-1,))

    def set_state(self, gamma, beta, running_mean, running_var):
        dt = DTYPES[self.dtype]
        self.params = {"batch_norm": {"scale": array(self._shape(gamma), dt), "offset": array(self._shape(beta), dt)}}
        decay = jnp.asarray(self.decay, dt)           # as moving_averages.py:117 converts it
        scale = jnp.ones([], dt) - jnp.power(decay, jnp.asarray(COUNTER, jnp.int32))
        self.state = {}
        for ema, v in zip(EMAS, (running_mean, running_var)):
            average = array(self._shape(v), dt)
            self.state[ema] = {"average": average, "hidden": average * scale,
                               "counter": jnp.asarray(COUNTER, jnp.int32)}

    def get_state(self):
        p = self.params["batch_norm"]
        return dict(gamma=numpy(p["scale"]).ravel(), beta=numpy(p["offset"]).ravel(),
                    running_mean=numpy(self.state[EMAS[0]]["average"]).ravel(),
                    running_var=numpy(self.state[EMAS[1]]["average"]).ravel())

    def _x(self, x):
        return array(x, self.dtype, nhwc=True)

    def _call(self, x, is_training):
        y, state = _apply(self.params, self.state, None, x, is_training, False, self.decay, self.eps)
        if is_training:
            self.state = state
        return y

    def forward_train(self, x):
        return numpy(self._call(self._x(x), True), nchw=True)

    def forward_infer(self, x):
        return numpy(self._call(self._x(x), False), nchw=True)

    def forward_default(self, x):
        # is_training is a required argument of the call: TypeError
        y, _ = hk.transform_with_state(_plain_call).apply(self.params, self.state, None, self._x(x))
        return numpy(y, nchw=True)

    def forward_native(self, x):
        return numpy(self._call(array(x, self.dtype), True))

    def train_step(self, x, dy):
        y, dx, dparams, self.state = _step(self.params, self.state, self._x(x), array(dy, self.dtype, nhwc=True),
                                           self.decay, self.eps)
        p = dparams["batch_norm"]
        return numpy(y, nchw=True), numpy(dx, nchw=True), numpy(p["scale"]).ravel(), numpy(p["offset"]).ravel()
