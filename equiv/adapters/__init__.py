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
ONNX = "pip install onnx onnxruntime"
PADDLE = "pip install paddlepaddle==3.3.1"
MINDSPORE = "pip install mindspore==2.10.0 'numpy<2'"

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
    "onnx.node": ("equiv.adapters.onnx_node", "OnnxNode", "onnxruntime", ONNX),
    "paddle.builtin": ("equiv.adapters.paddle_builtin", "PaddleBuiltin", "paddle", PADDLE),
    "mindspore.nn": ("equiv.adapters.mindspore_nn", "MindSporeNN", "mindspore", MINDSPORE),
}


def known_names():
    """Every registered name: the adapters, then the execution paths (equiv.paths)."""
    from equiv.paths import PATHS
    return sorted(REGISTRY) + sorted(PATHS)


def is_known(name):
    from equiv.paths import PATHS
    return name in REGISTRY or name in PATHS


def framework_installed(name):
    """True when the framework of a registered adapter (or path) can be imported, without importing it."""
    from equiv.paths import PATHS, requirements_met
    if name in PATHS:
        return framework_installed(PATHS[name].base) and requirements_met(name)
    return importlib.util.find_spec(REGISTRY[name][2]) is not None


def implemented(name):
    """True when the adapter's module exists in this checkout."""
    from equiv.paths import PATHS
    if name in PATHS:
        return implemented(PATHS[name].base) and importlib.util.find_spec(PATHS[name].module) is not None
    return importlib.util.find_spec(REGISTRY[name][0]) is not None


def install_command(name):
    from equiv.paths import PATHS
    if name in PATHS:
        return " && ".join(c for c in (install_command(PATHS[name].base), PATHS[name].install) if c)
    return REGISTRY[name][3]


def load(name):
    """The adapter class for a registered name, an execution path or an external ``package.module:obj``."""
    from equiv.paths import PATHS, wrap
    if ":" in name:
        from equiv.external import load_external
        return load_external(name)
    if name in PATHS:
        base = load(PATHS[name].base)
        if not framework_installed(name):
            raise FrameworkMissing(name, install_command(name), "a module this path needs is missing")
        return wrap(name, base)
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


def available(paths=True):
    """Names of the registered adapters and execution paths (without ``paths``: the adapters only)
    that can run here."""
    return [n for n in known_names() if (paths or "+" not in n) and implemented(n) and framework_installed(n)]
