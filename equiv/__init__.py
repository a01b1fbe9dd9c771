"""bn-equiv: is batch norm the same layer in every framework? Measured, not assumed.

``import equiv`` imports no framework. Adapters load lazily by name:

    >>> from equiv.registry import load
    >>> TorchBuiltin = load("torch.builtin")        # imports torch now
"""
from equiv.core import Adapter, Conventions, FrameworkMissing, Unsupported
from equiv.porting import Setting, port_state, remaining_differences, setting_of, translate

__all__ = ["Adapter", "Conventions", "FrameworkMissing", "Unsupported", "Setting", "translate",
           "setting_of", "port_state", "remaining_differences"]
__version__ = "0.1.0"
