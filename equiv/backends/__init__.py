"""The backend layer: one small module per framework (torch, jax, tf, keras, onnx, paddle, mxnet,
mlx, mindspore)
with its conversions and, where the framework needs one, its per-process setup (float64, precision
settings, the compilation cache, array semantics). Nothing is set on import: a backend's ``setup()``
does it, and ``equiv.registry`` calls it (``setup(framework)`` here) before it loads an adapter,
execution path, data-parallel implementation or BN-LeNet of that framework; the code that builds a
layer or net calls it again (it runs once). Importing this package imports no framework.
"""
import importlib

# framework import name -> the backend module of this package whose setup() runs before its code does
# (TensorFlow's, TF32 off, is the BN-LeNet's alone: the adapters run on the CPU; keras, onnx and paddle
# have nothing to set for the process)
BACKEND = {"torch": "torch", "jax": "jax", "flax": "jax", "equinox": "jax", "haiku": "jax", "mxnet": "mxnet",
           "mlx": "mlx", "mindspore": "mindspore"}


def setup(framework):
    """Run the setup of ``framework``'s backend (an import name: "torch", "flax", ...); nothing for a
    framework without one. Imports the framework (ImportError when it is missing)."""
    if framework in BACKEND:
        importlib.import_module(f"{__name__}.{BACKEND[framework]}").setup()
