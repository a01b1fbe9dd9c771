"""Put code outside the project under test: ``--adapters package.module:obj``.

``obj`` is either
- an adapter class (subclass of ``equiv.Adapter``, or any class with its attributes and
  methods: see the README), or
- a plain NumPy function
  ``fn(x, gamma, beta, running_mean, running_var, *, training, momentum, eps)
  -> (y, running_mean, running_var)`` that claims PyTorch semantics: channel axis 1,
  ``new = (1 − momentum)·old + momentum·batch``, unbiased running variance, biased
  variance to normalize, eps inside the square root. It has no gradients, so the
  gradient properties are skipped for it.
"""
import importlib

import numpy as np

from equiv.core import Adapter, Conventions

PYTORCH_SEMANTICS = Conventions(
    momentum_is="new_batch_weight", default_momentum=0.1, running_var="unbiased", default_eps=1e-5,
    channel_axis=1, variance="two-pass", stats_update="forward", default_mode="n/a",
    mode_switch="training=True/False argument", batch_of_one="n/a")

_METHODS = ("build", "set_state", "get_state", "forward_train", "forward_infer", "train_step")


def load_external(spec):
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load external implementation {spec!r}: {e}") from e
    if isinstance(obj, type):
        missing = [m for m in _METHODS + ("conventions",) if not hasattr(obj, m)]
        if missing:
            raise ValueError(f"{spec}: not an adapter, missing {', '.join(missing)} (see the README)")
        if not issubclass(obj, Adapter):   # duck-typed: give it the protocol's shared behaviour
            obj = type(obj.__name__, (obj, Adapter), {})
        obj.name = obj.name or spec
        return obj
    if callable(obj):
        return function_adapter(spec, obj)
    raise ValueError(f"{spec}: neither an adapter class nor a function")


def function_adapter(spec, fn):
    """An adapter around a NumPy function with PyTorch semantics."""

    class FunctionAdapter(Adapter):
        name, framework, install = spec, spec.partition(":")[0].split(".")[0], ""
        conventions = PYTORCH_SEMANTICS
        dtypes = ("float64", "float32")
        has_gradients = False

        def build(self, momentum, eps):
            self.momentum = momentum
            c = self.num_features
            self.state = dict(gamma=np.ones(c), beta=np.zeros(c), running_mean=np.zeros(c),
                              running_var=np.ones(c))

        def _np(self, a):
            return np.asarray(a, dtype=self.dtype)

        def set_state(self, gamma, beta, running_mean, running_var):
            self.state = {k: self._np(v) for k, v in dict(
                gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var).items()}

        def get_state(self):
            return {k: np.array(v, dtype=np.float64) for k, v in self.state.items()}

        def _call(self, x, training):
            s = self.state
            y, rm, rv = fn(self._np(x), s["gamma"], s["beta"], s["running_mean"], s["running_var"],
                           training=training, momentum=self.momentum, eps=self.eps)
            s["running_mean"], s["running_var"] = self._np(rm), self._np(rv)
            return np.array(y, dtype=np.float64)

        def forward_train(self, x):
            return self._call(x, True)

        def forward_infer(self, x):
            return self._call(x, False)

        def forward_default(self, x):
            return self._call(x, True)

        def forward_native(self, x):
            return self._call(x, True)

        def train_step(self, x, dy):
            return self._call(x, True), None, None, None

    FunctionAdapter.__name__ = FunctionAdapter.__qualname__ = f"FunctionAdapter[{spec}]"
    return FunctionAdapter
