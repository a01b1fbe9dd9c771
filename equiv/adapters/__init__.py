"""The registry: adapter name -> (module, class, framework import name, install command).

Frameworks are imported lazily: nothing here imports one, so ``import equiv`` works
with none installed. ``load(name)`` imports the adapter module and raises
``FrameworkMissing`` (with the install command) when its framework is absent.
"""
import importlib
import importlib.util

from equiv.core import Adapter, FrameworkMissing

TORCH = "pip install torch==2.13.0"
TF = "pip install tensorflow-cpu"
JAX = "pip install jax flax"
MXNET = "pip install mxnet==1.9.1 'numpy<1.24'"

REGISTRY = {
    "torch.builtin": ("equiv.adapters.torch_builtin", "TorchBuiltin", "torch", TORCH),
    "torch.scratch": ("equiv.adapters.torch_scratch", "TorchScratch", "torch", TORCH),
    "tf.keras": ("equiv.adapters.tf_keras", "KerasBuiltin", "tensorflow", TF),
    "tf.scratch": ("equiv.adapters.tf_scratch", "TFScratch", "tensorflow", TF),
    "flax.linen": ("equiv.adapters.flax_linen", "FlaxLinen", "flax", JAX),
    "flax.linen.two_pass": ("equiv.adapters.flax_linen", "FlaxLinenTwoPass", "flax", JAX),
    "flax.nnx": ("equiv.adapters.flax_nnx", "FlaxNNX", "flax", JAX),
    "jax.scratch": ("equiv.adapters.jax_scratch", "JaxScratch", "flax", JAX),
    "mxnet.gluon": ("equiv.adapters.mxnet_gluon", "MXNetGluon", "mxnet", MXNET),
    "mxnet.scratch": ("equiv.adapters.mxnet_scratch", "MXNetScratch", "mxnet", MXNET),
}


def known_names():
    return sorted(REGISTRY)


def framework_installed(name):
    """True when the framework of a registered adapter can be imported (without importing it)."""
    return importlib.util.find_spec(REGISTRY[name][2]) is not None


def implemented(name):
    """True when the adapter's module exists in this checkout."""
    return importlib.util.find_spec(REGISTRY[name][0]) is not None


def install_command(name):
    return REGISTRY[name][3]


def load(name):
    """The adapter class for a registered name or an external ``package.module:obj``."""
    if ":" in name:
        from equiv.external import load_external
        return load_external(name)
    if name not in REGISTRY:
        raise KeyError(f"unknown adapter {name!r}; known adapters: {', '.join(known_names())} "
                       "(or package.module:obj for an external implementation)")
    module, cls, framework, install = REGISTRY[name]
    if not framework_installed(name):
        raise FrameworkMissing(name, install, f"no module named {framework!r}")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise FrameworkMissing(name, install, str(e)) from e
    adapter = getattr(mod, cls)
    assert issubclass(adapter, Adapter) and adapter.name == name, (adapter, name)
    return adapter


def available():
    """Names of the registered adapters whose framework is installed and module exists."""
    return [n for n in known_names() if implemented(n) and framework_installed(n)]
