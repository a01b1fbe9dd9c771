"""bn-equiv: is batch norm the same layer in every framework? Measured, not assumed.

``import equiv`` imports no framework. Adapters load lazily by name:

    >>> from equiv.adapters import load
    >>> TorchBuiltin = load("torch.builtin")        # imports torch now
"""
from equiv.core import Adapter, Conventions, FrameworkMissing, Unsupported

__all__ = ["Adapter", "Conventions", "FrameworkMissing", "Unsupported"]
__version__ = "0.1.0"
