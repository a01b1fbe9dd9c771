"""Put code outside the project under test: ``--adapters package.module:obj[@preset]``.

``obj`` is either

- an adapter class (subclass of ``equiv.Adapter``, or any class with its attributes and
  methods: see the README), or
- a plain NumPy function
  ``fn(x, gamma, beta, running_mean, running_var, *, training, momentum, eps)
  -> (y, running_mean, running_var)``.

Either declares its conventions as data, in its ``conventions`` attribute and/or by a
preset named after ``@`` in the spec:

- a preset name: ``"torch"``, ``"keras"``, ``"flax"`` or ``"mxnet"`` (``equiv.conventions.PRESETS``);
- a dict of fields, optionally with ``"preset"``: ``{"preset": "keras", "channel_axis": 1}``;
- an ``equiv.Conventions``.

Nothing declared means ``"torch"``: channel axis 1, ``new = (1 − m)·old + m·batch``, an
unbiased running variance, eps 1e-5. A function is called in its declared layout (channels
last when ``channel_axis`` is -1) with its own momentum value; it returns its new running
statistics, so they update in the forward pass.

A function provides gradients through an attribute ``fn.backward(x, gamma, beta, dy, *, eps)
-> (dx, dgamma, dbeta)``: the training-mode gradients of sum(y·dy), x and dy in its layout.
Without one the gradient properties do not apply, and say so.

``BatchNormFunction`` and ``BackwardFunction`` state these two signatures as typing protocols.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any, Protocol, Union

import numpy as np

from equiv.core import Adapter, Conventions

if TYPE_CHECKING:
    from types import ModuleType

    from numpy.typing import ArrayLike, NDArray

# what an external object may declare as its ``conventions``: a preset name, a dict of fields
# (with "preset" among them or not), a whole Conventions, or nothing
ConventionsDeclaration = Union[str, dict[str, Any], Conventions, None]


class BatchNormFunction(Protocol):
    """``fn(x, gamma, beta, running_mean, running_var, *, training, momentum, eps)
    -> (y, running_mean, running_var)``: private copies in the case's dtype, x in the declared
    layout, the function's own momentum value; NumPy arrays back. Optional attributes:
    ``conventions`` (a ``ConventionsDeclaration``), ``backward`` (a ``BackwardFunction``) and
    ``dtypes`` (default ``("float64", "float32")``)."""

    def __call__(self, x: NDArray[Any], gamma: NDArray[Any], beta: NDArray[Any], running_mean: NDArray[Any],
                 running_var: NDArray[Any], /, *, training: bool, momentum: float,
                 eps: float) -> tuple[ArrayLike, ArrayLike, ArrayLike]: ...


class BackwardFunction(Protocol):
    """``fn.backward(x, gamma, beta, dy, *, eps) -> (dx, dgamma, dbeta)``: the training-mode
    gradients of sum(y·dy), x and dy in the declared layout."""

    def __call__(self, x: NDArray[Any], gamma: NDArray[Any], beta: NDArray[Any], dy: NDArray[Any], /, *,
                 eps: float) -> tuple[ArrayLike, ArrayLike, ArrayLike]: ...


_METHODS = ("build", "set_state", "get_state", "forward_train", "forward_infer", "train_step")


class SpecError(ValueError):
    """An external implementation cannot be loaded; the message is one line a user can act on."""


def presets() -> dict[str, Conventions]:
    from equiv.conventions import PRESETS
    return PRESETS


def declared_conventions(declaration: ConventionsDeclaration, preset: str | None = None, *,
                         for_function: bool = False, where: str = "") -> Conventions:
    """The ``Conventions`` an external object declares (attribute and/or spec preset)."""
    table = presets()
    if isinstance(declaration, Conventions):
        if preset:
            raise SpecError(f"{where}: declares a full Conventions and the preset {preset!r} too; give one")
        return declaration
    if isinstance(declaration, str):
        declaration = {"preset": declaration}
    if declaration is not None and not isinstance(declaration, dict):
        raise SpecError(f"{where}: conventions must be a preset name ({', '.join(table)}), a dict of "
                        f"fields or an equiv.Conventions, not {type(declaration).__name__}")
    fields = dict(declaration or {})
    named = fields.pop("preset", None)
    if preset and named and preset != named:
        raise SpecError(f"{where}: the spec names preset {preset!r}, the object declares {named!r}")
    name = preset or named or "torch"
    if name not in table:
        raise SpecError(f"{where}: unknown conventions preset {name!r}; use one of {', '.join(table)}")
    base = table[name]
    if for_function:   # a function returns its new statistics: they change in the forward
        base = dataclasses.replace(base, stats_update="forward")
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(Conventions)})
    if unknown:
        raise SpecError(f"{where}: unknown conventions field(s) {', '.join(unknown)}; fields: "
                        + ", ".join(f.name for f in dataclasses.fields(Conventions)))
    conventions = dataclasses.replace(base, **fields)
    if for_function and conventions.channel_axis not in (1, -1):
        raise SpecError(f"{where}: channel_axis must be 1 (channels first) or -1 (channels last), "
                        f"not {conventions.channel_axis!r}")
    return conventions


def _import(module_name: str, spec: str) -> ModuleType:
    if os.getcwd() not in sys.path and "" not in sys.path:   # as `python -m` does: ./mybn.py is found
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise SpecError(f"--adapters {spec}: no module named {e.name!r} in the current folder or on "
                            "sys.path; run from the folder that holds it, or fix the name") from None
        raise SpecError(f"--adapters {spec}: importing {module_name} failed: {e}; install what it "
                        "needs") from None
    except SyntaxError as e:
        raise SpecError(f"--adapters {spec}: {e.filename}, line {e.lineno}: syntax error: {e.msg}; "
                        "fix it") from None
    except Exception as e:   # the user's module raised while importing
        raise SpecError(f"--adapters {spec}: importing {module_name} raised "
                        f"{type(e).__name__}: {e}; fix the module so that it imports".replace("\n", " ")) from None


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """'pkg.mod:obj@preset' -> (module, attribute, preset or None), with a clear error when malformed."""
    target, _, preset = spec.partition("@")
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SpecError(f"--adapters {spec}: give package.module:obj (a module and an object in it), "
                        f"e.g. mybn:batch_norm")
    return module_name, attr, preset or None


def load_external(spec: str) -> type[Adapter]:
    module_name, attr, preset = parse_spec(spec)
    module = _import(module_name, spec)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SpecError(f"--adapters {spec}: module {module_name} has no {attr!r}; give an object it "
                            "defines")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        missing = [m for m in _METHODS if not hasattr(obj, m)]
        if missing:
            raise SpecError(f"--adapters {spec}: class {attr} is not an adapter, it lacks "
                            f"{', '.join(missing)}; add them (see: README, Testing your own implementation)")
        conventions = declared_conventions(getattr(obj, "conventions", None), preset, where=spec)
        if not issubclass(obj, Adapter):   # duck-typed: give it the protocol's shared behaviour
            obj = type(obj.__name__, (obj, Adapter), {})
        else:
            obj = type(obj.__name__, (obj,), {})
        obj.conventions = conventions
        obj.name = getattr(obj, "name", "") or spec
        obj.external = True
        return obj
    if callable(obj):
        conventions = declared_conventions(getattr(obj, "conventions", None), preset, for_function=True,
                                           where=spec)
        return function_adapter(spec, obj, conventions)
    raise SpecError(f"--adapters {spec}: {attr} is neither an adapter class nor a function; give one "
                    "(see: README, Testing your own implementation)")


class OutputError(AssertionError):
    """An external function returned something that is not what the protocol asks."""


def _array(value: Any, what: str, shape: tuple[int, ...], spec: str) -> NDArray[np.float64]:
    if not isinstance(value, np.ndarray) and not hasattr(value, "__array__"):
        raise OutputError(f"{spec} returned {type(value).__name__} for {what}; expected a NumPy array "
                          f"of shape {shape}")
    a = np.asarray(value)
    if a.shape != tuple(shape):
        raise OutputError(f"{spec} returned {what} of shape {a.shape}; expected {tuple(shape)}")
    if not np.issubdtype(a.dtype, np.floating):
        raise OutputError(f"{spec} returned {what} of dtype {a.dtype}; expected a floating-point array")
    return np.array(a, dtype=np.float64)


def function_adapter(spec: str, fn: BatchNormFunction, conventions: Conventions) -> type[Adapter]:
    """An adapter around a NumPy function with the declared conventions."""
    backward = getattr(fn, "backward", None)
    last = conventions.channel_axis == -1

    class FunctionAdapter(Adapter):
        name, framework, install = spec, spec.partition(":")[0].split(".")[0], ""
        external = True
        dtypes = tuple(getattr(fn, "dtypes", ("float64", "float32")))
        has_gradients = callable(backward)

        def build(self, momentum, eps):
            self.momentum = momentum
            # the weight the function is told: for a momentum on the old value, 1 − fl(1 − w)
            self.new_batch_weight = self.conventions.new_batch_weight(momentum)
            c = self.num_features
            self.state = dict(gamma=np.ones(c), beta=np.zeros(c), running_mean=np.zeros(c),
                              running_var=np.ones(c))

        def _np(self, a):
            """A private copy in the case's dtype: the function may write into what it gets."""
            return np.array(a, dtype=self.dtype)

        def _in(self, x):
            x = self._np(x)
            return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if last else x

        def _out(self, y, x_shape, what):
            native = (x_shape[0],) + tuple(x_shape[2:]) + (x_shape[1],) if last else x_shape
            y = _array(y, what, native, spec)
            return np.moveaxis(y, -1, 1) if last else y

        def set_state(self, gamma, beta, running_mean, running_var):
            self.state = {k: self._np(v) for k, v in dict(
                gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var).items()}

        def get_state(self):
            return {k: np.array(v, dtype=np.float64) for k, v in self.state.items()}

        def _call(self, x, training, native=False):
            s = self.state
            c = (self.num_features,)
            args = {k: self._np(v) for k, v in s.items()}
            out = fn(self._np(x) if native else self._in(x), args["gamma"], args["beta"],
                     args["running_mean"], args["running_var"],
                     training=training, momentum=self.momentum, eps=self.eps)
            if not isinstance(out, tuple) or len(out) != 3:
                raise OutputError(f"{spec} returned {type(out).__name__}"
                                  f"{f' of length {len(out)}' if isinstance(out, (tuple, list)) else ''}; "
                                  "expected a tuple (y, running_mean, running_var)")
            y, rm, rv = out
            rm, rv = _array(rm, "running_mean", c, spec), _array(rv, "running_var", c, spec)
            s["running_mean"], s["running_var"] = self._np(rm), self._np(rv)
            if native:
                return _array(y, "y", np.shape(x), spec)
            return self._out(y, np.shape(x), "y")

        def forward_train(self, x):
            return self._call(x, True)

        def forward_infer(self, x):
            return self._call(x, False)

        def forward_default(self, x):
            return self._call(x, True)

        def forward_native(self, x):
            return self._call(x, True, native=True)

        def train_step(self, x, dy):
            s = {k: self._np(v) for k, v in self.state.items()}
            y = self._call(x, True)
            if not self.has_gradients:
                return y, None, None, None
            c = (self.num_features,)
            out = backward(self._in(x), s["gamma"], s["beta"], self._in(dy), eps=self.eps)
            if not isinstance(out, tuple) or len(out) != 3:
                raise OutputError(f"{spec}.backward returned {type(out).__name__}; expected a tuple "
                                  "(dx, dgamma, dbeta)")
            dx, dgamma, dbeta = out
            return (y, self._out(dx, np.shape(x), "dx"), _array(dgamma, "dgamma", c, spec),
                    _array(dbeta, "dbeta", c, spec))

    FunctionAdapter.conventions = conventions
    FunctionAdapter.__name__ = FunctionAdapter.__qualname__ = f"FunctionAdapter[{spec}]"
    return FunctionAdapter
