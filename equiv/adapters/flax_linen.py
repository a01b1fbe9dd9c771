"""flax.linen: ``flax.linen.BatchNorm`` (FlaxLinen) and the same with
``use_fast_variance=False`` (FlaxLinenTwoPass).

Flax's defaults otherwise (axis -1, momentum 0.99, epsilon 1e-5), except that the layer
is built for the case's dtype: ``dtype`` and ``param_dtype`` are set to it (the default
param_dtype float32 would round float64 parameters). Batch statistics stay in at least
float32, as Flax keeps them. Variables live in ``self.variables``; each call is
a jitted ``module.apply`` with the mode given as ``use_running_average`` and
``mutable=['batch_stats']``, as a Flax training loop does.

Layer options (equiv.options): ``affine`` False, "no_scale", "no_center" as ``use_scale`` /
``use_bias`` False: the layer makes no such parameter (flax/linen/normalization.py:208-224,
``_normalize``) and applies 1 and 0; ``force_float32_reductions`` False: the statistics are reduced in
the layer's dtype (``_compute_stats``, :111-114) and the running statistics kept in ``param_dtype``
(:358-375, here the case's dtype). Measured beyond the options: tests/test_options_flax.py.

The jitted functions take the module without its momentum and epsilon (``_static``, the
part of the jit cache key) and those two as arguments, and put them back into the module
(``clone``) inside the trace: the same ``module.apply`` of the same layer, with momentum and
epsilon as runtime scalars instead of compile-time constants, so a new setting does not
compile again (every Hypothesis example draws one); only a new shape or dtype does
(``equiv.backends.jax`` says what XLA folds differently).
"""
from functools import partial

import flax.linen as nn
import jax
import numpy as np

from equiv import options as opt
from equiv.backends.jax import DTYPES, array, new_layer, numpy, sample, stats_dtype
from equiv.conventions import DECLARED
from equiv.core import Adapter


def _static(module):
    """The module without momentum and epsilon: hashable, the static part of the jit key."""
    return module.clone(momentum=None, epsilon=None)


@partial(jax.jit, static_argnums=0)
def _init(static, momentum, epsilon, x):
    return static.clone(momentum=momentum, epsilon=epsilon).init(jax.random.key(0), x, use_running_average=False)


@partial(jax.jit, static_argnums=(0, 5))
def _apply(static, momentum, epsilon, variables, x, use_running_average):
    """One ``module.apply``, jitted (compiled once per module setting and shape)."""
    module = static.clone(momentum=momentum, epsilon=epsilon)
    return module.apply(variables, x, use_running_average=use_running_average, mutable=["batch_stats"])


@partial(jax.jit, static_argnums=0)
def _step(static, momentum, epsilon, variables, x, dy):
    """Training forward, the batch stats it writes, and the vjp of dy w.r.t. x and params."""
    module = static.clone(momentum=momentum, epsilon=epsilon)

    def f(x, params):
        y, new = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              use_running_average=False, mutable=["batch_stats"])
        return y, new["batch_stats"]
    y, vjp, stats = jax.vjp(f, x, variables.get("params", {}), has_aux=True)
    return (y, *vjp(dy), stats)


class FlaxLinen(Adapter):
    name, framework = "flax.linen", "flax"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16", "bfloat16")
    supported_options = {"affine": (False, "no_scale", "no_center"), "force_float32_reductions": (False,)}
    use_fast_variance = True

    def build(self, momentum, eps):
        new_layer()
        dt = DTYPES[self.dtype]
        # Flax weighs the batch by 1 − momentum: for a tiny w that is 1 − fl(1 − w), up to half
        # an ulp of 1 off w; report the weight the layer really applies, as the Keras adapter does.
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        self.module = nn.BatchNorm(momentum=momentum, epsilon=eps, dtype=dt, param_dtype=dt,
                                   use_fast_variance=self.use_fast_variance, use_scale=opt.has_gamma(self.options),
                                   use_bias=opt.has_beta(self.options),
                                   force_float32_reductions=self.float32_reductions)
        self.jit = (_static(self.module), momentum, eps)   # the leading arguments of the jitted calls
        self._variables = None

    @property
    def variables(self):
        """The layer's variables; ``module.init``'s on first use (most cases set their own state
        first, and the init is compiled once per shape and dtype)."""
        if self._variables is None:
            self._variables = _init(*self.jit, sample(self.num_features, self.ndim, self.dtype))
        return self._variables

    @variables.setter
    def variables(self, v):
        self._variables = v

    @property
    def float32_reductions(self):
        return opt.value(self.options, "force_float32_reductions")

    def _x(self, x):
        return array(x, self.dtype, nhwc=True)

    def set_state(self, gamma, beta, running_mean, running_var):
        p, o = self.dtype, self.options   # only the parameters the layer has
        s = stats_dtype(p) if self.float32_reductions else p   # without: the running statistics in param_dtype
        params = {**({"scale": array(gamma, p)} if opt.has_gamma(o) else {}),
                  **({"bias": array(beta, p)} if opt.has_beta(o) else {})}
        self.variables = {"params": params, "batch_stats": {"mean": array(running_mean, s),
                                                            "var": array(running_var, s)}}

    def get_state(self):
        v, c = self.variables, self.num_features   # gamma 1 and beta 0 where the layer has none
        p = {k: numpy(a) for k, a in v.get("params", {}).items()}
        return dict(gamma=p.get("scale", np.ones(c)), beta=p.get("bias", np.zeros(c)),
                    running_mean=numpy(v["batch_stats"]["mean"]), running_var=numpy(v["batch_stats"]["var"]))

    def _train(self, x):
        y, new = _apply(*self.jit, self.variables, x, False)
        self.variables["batch_stats"] = new["batch_stats"]
        return y

    def forward_train(self, x):
        return numpy(self._train(self._x(x)), nchw=True)

    def forward_infer(self, x):
        return numpy(_apply(*self.jit, self.variables, self._x(x), True)[0], nchw=True)

    def forward_default(self, x):
        # use_running_average is None in the constructor and the call: Flax raises ValueError
        return numpy(self.module.apply(self.variables, self._x(x), mutable=["batch_stats"])[0], nchw=True)

    def forward_native(self, x):
        return numpy(self._train(array(x, self.dtype)))

    def train_step(self, x, dy):
        y, dx, dparams, self.variables["batch_stats"] = _step(*self.jit, self.variables, self._x(x),
                                                              array(dy, self.dtype, nhwc=True))
        grad = (lambda k: numpy(dparams[k]) if k in dparams else None)   # noqa: E731 (none without it)
        return numpy(y, nchw=True), numpy(dx, nchw=True), grad("scale"), grad("bias")


class FlaxLinenTwoPass(FlaxLinen):
    """The same layer with ``use_fast_variance=False``: var = mean((x − mean)²)."""
    name = "flax.linen.two_pass"
    conventions = DECLARED[name]
    use_fast_variance = False
