"""jax.scratch: the book's JAX ``batch_norm`` / ``BatchNorm`` (equiv/book/d2l_jax.py).

The book's layer hard-codes eps 1e-5 and momentum 0.9 (new = 0.9·old + 0.1·batch).
With that setting the adapter applies the layer itself (``deterministic`` selects the
mode, ``mutable=['batch_stats']`` as the book's training loop does). With any other it
calls the book's ``batch_norm`` function with the requested eps and momentum on the
layer's own variables, exactly as the layer's ``__call__`` does: the function only
reads and writes ``.value`` of the moving statistics, so plain holders with a
``value`` attribute stand in for Flax variables, and nothing is rewritten.

The layer is initialized as a Flax user does, ``init`` on a zero batch: the book's
moving-average update runs there too (moving var 0.9 after init). Parameters and
moving statistics are held in the case's dtype. On 4-D input the book reduces over
NHWC axes (0, 2, 3) = N, W, C: after a training step the moving statistics have shape
(1, H, 1, C) and ``get_state`` returns them flattened (H·C values), as they are.

The jitted calls take ``setting`` as an argument, not a static one: (eps, momentum) reach
the book's function as runtime scalars (weakly typed, promoted as the Python floats are), so
a new setting does not compile again (every Hypothesis example draws one); only a new
shape, dtype or mode does, and whether it is the layer's own setting (None)
(``equiv.backends.jax`` says what XLA folds differently).
"""
from functools import partial
from types import SimpleNamespace

import jax
import numpy as np

from equiv.backends.jax import array, new_layer, numpy, sample
from equiv.book import d2l_jax as book
from equiv.conventions import DECLARED
from equiv.core import Adapter

BOOK_EPS, BOOK_MOMENTUM = 1e-5, 0.9


@partial(jax.jit, static_argnums=0)
def _call(layer, params, stats, X, setting):
    """(Y, new batch_stats): the book's layer when ``setting`` is None, else the book's
    ``batch_norm`` with setting = (eps, momentum) on the layer's variables."""
    if setting is None:
        Y, updated = layer.apply({"params": params, "batch_stats": stats}, X, mutable=["batch_stats"])
        return Y, updated["batch_stats"]
    mm, mv = SimpleNamespace(value=stats["moving_mean"]), SimpleNamespace(value=stats["moving_var"])
    Y = book.batch_norm(X, layer.deterministic, params["gamma"], params["beta"], mm, mv,
                        eps=setting[0], momentum=setting[1])
    return Y, {"moving_mean": mm.value, "moving_var": mv.value}


@partial(jax.jit, static_argnums=0)
def _step(layer, params, stats, X, dY, setting):
    Y, vjp, stats = jax.vjp(lambda X, params: _call(layer, params, stats, X, setting), X, params, has_aux=True)
    return (Y, *vjp(dY), stats)


@partial(jax.jit, static_argnums=0)
def _init(layer, X):
    return layer.init(jax.random.key(0), X)


class JaxScratch(Adapter):
    name, framework = "jax.scratch", "flax"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32")

    def build(self, momentum, eps):
        new_layer()
        self.momentum = momentum
        # the batch weighs 1.0 − momentum: for a tiny w, 1 − fl(1 − w), not exactly w
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        self.layer = book.BatchNorm(self.num_features, self.ndim)
        self.predict = book.BatchNorm(self.num_features, self.ndim, deterministic=True)
        self._variables = None

    @property
    def variables(self):
        """The layer's variables, in the case's dtype; ``init``'s on first use (most cases set
        their own state first, and the init is compiled once per shape and dtype)."""
        if self._variables is None:
            self._variables = _init(self.layer, sample(self.num_features, self.ndim, self.dtype))
            self.set_state(**self.get_state())
        return self._variables

    @variables.setter
    def variables(self, v):
        self._variables = v

    def _x(self, x):
        return array(x, self.dtype, nhwc=True)

    def _v(self, v):
        return array(np.reshape(v, (1, -1) if self.ndim == 2 else (1, 1, 1, -1)), self.dtype)

    def set_state(self, gamma, beta, running_mean, running_var):
        self.variables = {"params": {"gamma": self._v(gamma), "beta": self._v(beta)},
                          "batch_stats": {"moving_mean": self._v(running_mean),
                                          "moving_var": self._v(running_var)}}

    def get_state(self):
        p, s = self.variables["params"], self.variables["batch_stats"]
        return {k: numpy(v).reshape(-1) for k, v in (
            ("gamma", p["gamma"]), ("beta", p["beta"]),
            ("running_mean", s["moving_mean"]), ("running_var", s["moving_var"]))}

    @property
    def _setting(self):
        """None: the book's own setting, use its layer; else (eps, momentum) for its function."""
        return None if (self.eps, self.momentum) == (BOOK_EPS, BOOK_MOMENTUM) else (self.eps, self.momentum)

    def _run(self, X, deterministic):
        Y, stats = _call(self.predict if deterministic else self.layer, self.variables["params"],
                         self.variables["batch_stats"], X, self._setting)
        if not deterministic:
            self.variables["batch_stats"] = stats
        return Y

    def forward_train(self, x):
        return numpy(self._run(self._x(x), False), nchw=True)

    def forward_infer(self, x):
        return numpy(self._run(self._x(x), True), nchw=True)

    def forward_default(self, x):
        # the book's layer as it is (its own eps and momentum, training mode), jitted
        y, self.variables["batch_stats"] = _call(self.layer, self.variables["params"],
                                                 self.variables["batch_stats"], self._x(x), None)
        return numpy(y, nchw=True)

    def forward_native(self, x):
        return numpy(self._run(array(x, self.dtype), False))

    def train_step(self, x, dy):
        y, dx, dparams, self.variables["batch_stats"] = _step(
            self.layer, self.variables["params"], self.variables["batch_stats"], self._x(x),
            array(dy, self.dtype, nhwc=True), self._setting)
        return (numpy(y, nchw=True), numpy(dx, nchw=True), numpy(dparams["gamma"]).reshape(-1),
                numpy(dparams["beta"]).reshape(-1))
