"""Execution paths: a registered adapter run along another path a user runs BatchNorm through
(compiled, exported, another memory layout or precision, another backend).

A path is data (``ExecutionPath``: which adapter, what is different, what it needs) plus a small
wrapper in a module of this package: a function that takes the base adapter class and returns a
subclass that builds or calls the layer the other way. It never copies the adapter. Its name says
adapter and path, ``torch.builtin+channels_last``; ``equiv.adapters.load`` accepts it like any
registered name, and every property, probe and golden vector runs on it.
"""
import importlib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutionPath:
    base: str            # the registered adapter it wraps: "torch.builtin"
    path: str            # "channels_last"
    module: str          # where the wrapper lives: "equiv.paths.torch_paths"
    wrapper: str         # function (base adapter class) -> adapter class
    what: str            # one line: what is different along this path
    requires: tuple = ()  # importable modules beyond the base's framework
    install: str = ""    # the command that installs them

    @property
    def name(self):
        return f"{self.base}+{self.path}"


_TORCH = "equiv.paths.torch_paths"

PATHS = {p.name: p for p in [
    ExecutionPath("torch.builtin", "channels_last", _TORCH, "channels_last",
                  "BatchNorm2d module and input in torch.channels_last memory format (4-D only; 2-D as eager)"),
    ExecutionPath("torch.scratch", "channels_last", _TORCH, "channels_last",
                  "the book's layer on input in torch.channels_last memory format (4-D only; 2-D as eager)"),
    ExecutionPath("torch.builtin", "compile", _TORCH, "compile",
                  "the module called through torch.compile(fullgraph=True, dynamic=True), inductor on the CPU; float32"),
    ExecutionPath("torch.builtin", "bfloat16", _TORCH, "bfloat16",
                  "bfloat16 input and upstream gradient, float32 parameters and buffers (float32 input: as eager)"),
    ExecutionPath("torch.builtin", "autocast", _TORCH, "autocast",
                  "a float32 module called inside torch.autocast('cpu', dtype=torch.bfloat16)"),
    ExecutionPath("torch.builtin", "functional_call", _TORCH, "functional_call",
                  "torch.func.functional_call(module, explicit parameters and buffers, (x,))"),
    ExecutionPath("torch.builtin", "export", _TORCH, "export",
                  "torch.export.export of the module in train() or eval(), run through ExportedProgram.module()"),
]}


def requirements_met(name):
    return all(importlib.util.find_spec(m) is not None for m in PATHS[name].requires)


def wrap(name, base_cls):
    """The adapter class of path ``name`` around the (already loaded) base adapter class."""
    p = PATHS[name]
    cls = getattr(importlib.import_module(p.module), p.wrapper)(base_cls)
    cls.name, cls.base_name, cls.path = name, p.base, p.path
    cls.__name__ = cls.__qualname__ = f"{base_cls.__name__}_{p.path}"
    return cls
