"""Paths of the torch adapters: each a few lines over the eager adapter.

The eager adapters call ``self.module(x)`` (torch.builtin) and read and write the state through
``self.module`` (the book's layer: ``self.layer``); a path replaces what is called
(the compiled module, the exported program, ``functional_call`` with explicit tensors) or what goes in
(the memory format, the input dtype, an autocast region), nothing else.
"""
import functools

import torch

from equiv.backends.torch import setup_dynamo
from equiv.dtypes import round_to


def _path(wrapper):
    """A path's wrapper: making the path sets dynamo's recompile limits up first (setup_dynamo: the
    compile paths must never fall back to eager unnoticed)."""
    @functools.wraps(wrapper)
    def make(base):
        setup_dynamo()
        return wrapper(base)
    return make


def _channels_last(t):
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


@_path
def channels_last(base):
    class ChannelsLast(base):
        def build(self, momentum, eps):
            super().build(momentum, eps)
            if self.ndim == 4 and hasattr(self, "module"):
                self.module = self.module.to(memory_format=torch.channels_last)

        def _t(self, a, requires_grad=False):
            return _channels_last(super()._t(a)).detach().requires_grad_(requires_grad)
    return ChannelsLast


# --- torch.compile ----------------------------------------------------------------------
# One compiled callable, as a user compiles a model once and reuses it: dynamo caches a graph per
# guard set (dtype, rank, mode, whether x needs a gradient, eps and momentum, which it specializes
# on), with shapes dynamic (dynamic=True; parameter shapes too), so a new batch size or channel
# count reuses the graph. fullgraph=True: a graph break would run part of the layer eagerly; it is
# an error instead.
@functools.cache
def _compiled_module_call():
    return torch.compile(lambda module, x: module(x), fullgraph=True, dynamic=True)


class _Wrapped(torch.nn.Module):
    """The layer as the submodule ``inner``; what the wrapper lacks is read on the layer."""

    def __init__(self, module):
        super().__init__()
        self.inner = module

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


class _Compiled(_Wrapped):
    """The layer, called through torch.compile; state, mode and gradients are the layer's own."""

    def forward(self, x):
        return _compiled_module_call()(self.inner, x)


@_path
def compile(base):   # noqa: A001 (the path's name)
    """Every dtype, rank and setting is a graph to compile (seconds each on the CPU): the path runs
    under the smaller "compile" example budget (equiv.strategies.COMPILE_EXAMPLES). Inductor runs every
    dtype of the eager adapters on the CPU (float64, float32, float16, bfloat16); the budget is per
    property, not per dtype, so more dtypes cost no more examples. Works for torch.builtin's module and
    the book's (torch.scratch's ``self.module``, equiv.adapters.torch_scratch.BookCall) alike."""
    class Compiled(base):
        dtypes, example_budget = ("float64", "float32", "float16", "bfloat16"), "compile"

        def build(self, momentum, eps):
            super().build(momentum, eps)
            self.module = _Compiled(self.module)
    return Compiled


# --- precision ----------------------------------------------------------------------------
@_path
def bfloat16(base):
    """bfloat16 input (and upstream gradient) into a layer whose parameters and buffers are float32.
    float32 input is accepted too (there it is the eager float32 layer): the probes, which measure in
    float32 at least, and the golden vectors (float32 and float64) then run on the path."""
    class BFloat16Input(base):
        dtypes = ("bfloat16", "float32")

        def build(self, momentum, eps):
            super().build(momentum, eps)
            self.module = self.module.float()
    return BFloat16Input


def _within(base, context, methods=("forward_train", "forward_infer", "forward_default", "train_step")):
    """``base`` with each call made inside ``context()``."""
    def wrapped(name):
        def method(self, *args):
            with context():
                return getattr(super(cls, self), name)(*args)
        method.__name__ = name
        return method
    cls = type(base.__name__, (base,), {name: wrapped(name) for name in methods})
    return cls


@_path
def autocast(base):
    """A float32 layer called inside torch.autocast("cpu", dtype=torch.bfloat16), on float32 input or on
    bfloat16 input (what a preceding autocast matmul or convolution hands it)."""
    cls = _within(base, lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    cls.dtypes = ("float32", "bfloat16")
    build = cls.build

    def build_float32(self, momentum, eps):
        build(self, momentum, eps)
        self.module = self.module.float()
    cls.build = build_float32
    return cls


# --- functional_call and export -------------------------------------------------------------
class _Functional:
    """The layer called as torch.func.functional_call(module, tensors, (x,)) with explicit parameters
    and buffers (copies: the module's own stay untouched); the adapter's state is the explicit tensors."""

    def __init__(self, module):
        self.module = module
        self.tensors = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in
                        [*module.named_parameters(), *module.named_buffers()]}

    def __getattr__(self, name):
        tensors = self.__dict__["tensors"]
        return tensors[name] if name in tensors else getattr(self.__dict__["module"], name)

    def __call__(self, x):
        return torch.func.functional_call(self.module, self.tensors, (x,))

    def zero_grad(self, set_to_none=True):
        for t in self.tensors.values():
            t.grad = None


@_path
def functional_call(base):
    class FunctionalCall(base):
        def build(self, momentum, eps):
            super().build(momentum, eps)
            self.module = _Functional(self.module)
    return FunctionalCall


class _Exported:
    """The layer exported with torch.export.export in its current mode (train() or eval(): the
    program keeps it) and run through ExportedProgram.module(), one program per mode, shape and
    dtype. The unlifted module holds the layer's own parameter and buffer tensors (measured:
    tests/test_paths.py), so the state is read and written on the layer."""

    def __init__(self, module):
        self.module, self.programs = module, {}

    def __getattr__(self, name):
        return getattr(self.__dict__["module"], name)

    def __call__(self, x):
        key = (self.module.training, tuple(x.shape), x.dtype, x.requires_grad)
        if key not in self.programs:
            self.programs[key] = torch.export.export(self.module, (x.detach(),)).module()
        return self.programs[key](x)


@_path
def export(base):
    class Exported(base):
        example_budget = "compile"      # a program traced per example (equiv.strategies.COMPILE_EXAMPLES)

        def build(self, momentum, eps):
            super().build(momentum, eps)
            self.module = _Exported(self.module)
    return Exported


# --- torch.nn.functional.batch_norm ----------------------------------------------------------
class _BatchNormCall(_Wrapped):
    """The layer's own tensors through ``torch.nn.functional.batch_norm(x, running_mean, running_var,
    weight, bias, training, momentum, eps)``: the call a functional model makes. It updates the given
    buffers in place and counts nothing (num_batches_tracked stays), so it takes a float momentum only."""

    def forward(self, x):
        m = self.inner
        return torch.nn.functional.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias,
                                              self.training, m.momentum, m.eps)


@_path
def functional(base):
    """torch.builtin's layer called as ``torch.nn.functional.batch_norm`` on its own tensors: the new
    running statistics are written into the running_mean and running_var tensors passed in."""
    class Functional(base):
        supported_options = {"affine": (False,)}

        def build(self, momentum, eps):
            super().build(momentum, eps)
            self.module = _BatchNormCall(self.module)
    return Functional


# --- LazyBatchNorm ------------------------------------------------------------------------------
LAZY = {2: torch.nn.LazyBatchNorm1d, 3: torch.nn.LazyBatchNorm1d, 4: torch.nn.LazyBatchNorm2d,
        5: torch.nn.LazyBatchNorm3d}


@_path
def lazy(base):
    """torch.builtin's layer built as ``LazyBatchNorm1d/2d/3d`` (no num_features): its first call infers
    num_features from x.shape[1], materializes weight, bias and the running statistics at 1, 0, 0, 1
    (torch/nn/modules/batchnorm.py:280-303, reset_parameters) and becomes BatchNorm1d/2d/3d
    (torch/nn/modules/lazy.py, _infer_parameters). Until then the layer holds no tensors, so a state set
    before the first call is held by the adapter and copied in by a forward pre-hook that runs after the
    inference, before the first forward; get_state until then answers that held state, or, with none
    held, what the layer's own initialize_parameters materializes for the adapter's width (as its first
    call will)."""
    class Lazy(base):
        pending = None

        def _new_layer(self, **kw):
            layer = LAZY[self.ndim](**kw)
            layer.register_forward_pre_hook(self._load_pending)   # after the layer's own inference hook
            return layer

        def _load_pending(self, module, args):
            if self.pending is not None:
                state, self.pending = self.pending, None
                base.set_state(self, **state)

        def _uninitialized(self):
            return isinstance(self.module, torch.nn.modules.lazy.LazyModuleMixin)

        def set_state(self, gamma, beta, running_mean, running_var):
            if not self._uninitialized():
                return super().set_state(gamma, beta, running_mean, running_var)
            self.pending = {k: round_to(v, self.dtype) for k, v in dict(
                gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var).items()}

        def get_state(self):
            if self.pending is not None:
                return {k: v.copy() for k, v in self.pending.items()}
            if self._uninitialized():
                self.module.initialize_parameters(torch.empty((0, self.num_features)))
            return super().get_state()
    return Lazy
