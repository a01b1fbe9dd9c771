"""The registry: adapter name -> (module, class, framework import name, install command).

Frameworks are imported lazily: nothing here imports one, so ``import equiv`` works
with none installed. ``load(name)`` imports the adapter module and raises
``FrameworkMissing`` (with the install command) when its framework is absent.
"""
import importlib
import importlib.util

from equiv.backends import keras_backend
from equiv.core import Adapter, FrameworkMissing

TORCH = "pip install torch==2.13.0"
TF = "pip install tensorflow-cpu"
JAX = "pip install jax flax"
MXNET = "pip install mxnet==1.9.1 'numpy<1.24'"
ONNX = "pip install onnx onnxruntime"
TINYGRAD = "pip install tinygrad && apt-get install -y clang"
MLX = "pip install 'mlx[cpu]'"
EQUINOX = "pip install jax equinox"
HAIKU = "pip install jax dm-haiku"
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
    "jax.stax": ("equiv.adapters.jax_stax", "JaxStax", "jax", JAX),
    "equinox.ema": ("equiv.adapters.equinox_nn", "EquinoxEMA", "equinox", EQUINOX),
    "equinox.batch": ("equiv.adapters.equinox_nn", "EquinoxBatch", "equinox", EQUINOX),
    "haiku": ("equiv.adapters.haiku_bn", "HaikuBatchNorm", "haiku", HAIKU),
    "mxnet.gluon": ("equiv.adapters.mxnet_gluon", "MXNetGluon", "mxnet", MXNET),
    "mxnet.scratch": ("equiv.adapters.mxnet_scratch", "MXNetScratch", "mxnet", MXNET),
    "onnx.node": ("equiv.adapters.onnx_node", "OnnxNode", "onnxruntime", ONNX),
    "tinygrad.builtin": ("equiv.adapters.tinygrad_builtin", "TinygradBuiltin", "tinygrad", TINYGRAD),
    "mlx.builtin": ("equiv.adapters.mlx_builtin", "MLXBuiltin", "mlx", MLX),
    "paddle.builtin": ("equiv.adapters.paddle_builtin", "PaddleBuiltin", "paddle", PADDLE),
    "mindspore.nn": ("equiv.adapters.mindspore_nn", "MindSporeNN", "mindspore", MINDSPORE),
}


# Adapters built on Keras 3 run on the Keras backend TensorFlow; the other backends are paths.
KERAS_ON_TF = ("tf.keras", "tf.scratch")


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
        p = PATHS[name]
        # a path on another framework (a Keras backend) needs that one, not the base's
        base = importlib.util.find_spec(p.framework) is not None if p.framework else framework_installed(p.base)
        return base and requirements_met(name)
    if name in KERAS_ON_TF and keras_backend() != "tensorflow":
        return False
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
        p = PATHS[name]
        return " && ".join(c for c in (install_command(p.base) if not p.framework else "", p.install) if c)
    return REGISTRY[name][3]


def load(name):
    """The adapter class for a registered name, an execution path or an external ``package.module:obj``."""
    from equiv.paths import PATHS, wrap
    if ":" in name:
        from equiv.external import load_external
        return load_external(name)
    if name in PATHS:
        p = PATHS[name]
        if p.framework:   # the base's module, run on the path's framework instead of the base's
            if not framework_installed(name):
                raise FrameworkMissing(name, install_command(name), _missing_why(name))
            try:
                return wrap(name, _import(p.base))
            except FrameworkMissing as e:
                raise FrameworkMissing(name, install_command(name), e.cause) from e
        base = load(p.base)
        if not framework_installed(name):
            raise FrameworkMissing(name, install_command(name), "a module this path needs is missing")
        return wrap(name, base)
    if name not in REGISTRY:
        raise KeyError(f"unknown adapter {name!r}; known adapters: {', '.join(known_names())} "
                       "(or package.module:obj for an external implementation)")
    if not framework_installed(name):
        framework = REGISTRY[name][2]
        why = (f"the Keras backend is {keras_backend()!r}, not 'tensorflow' (KERAS_BACKEND)"
               if name in KERAS_ON_TF and importlib.util.find_spec(framework) else f"no module named {framework!r}")
        raise FrameworkMissing(name, REGISTRY[name][3], why)
    return _import(name)


def _missing_why(name):
    from equiv.paths import PATHS
    p = PATHS[name]
    if p.backend and importlib.util.find_spec(p.framework) and keras_backend() != p.backend:
        return f"the Keras backend is {keras_backend()!r}; this path needs KERAS_BACKEND={p.backend}"
    return "a module this path needs is missing"


def _import(name):
    """The adapter class of a registered name (its module imported; ImportError: FrameworkMissing)."""
    module, cls, framework, install = REGISTRY[name]
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
