"""The registry: every name equiv knows, resolved once.

Five kinds of name, each declared as data in its own package:

- ``adapter``: a batch-norm implementation (``equiv.adapters.ADAPTERS``: "torch.builtin");
- ``path``: an adapter run along another execution path (``equiv.paths.PATHS``:
  "torch.builtin+compile"); the adapter functions below take adapters and paths alike;
- ``parallel``: a data-parallel implementation (``equiv.parallel.IMPLEMENTATIONS``: "torch.ddp");
- ``lenet``: a BN-LeNet, named after its BN layer's adapter ("tf.keras", or a data-parallel net
  "torch.ddp": ``equiv.lenet``'s ``NETS``, ``FRAMEWORKS`` and ``PARALLEL``; an old label of
  ``equiv.lenet.OLD_LABELS``, "tf.builtin", names the same net);
- ``route``: a conversion or folding route (``equiv.routes.ROUTES``: "torch.builtin+fuse_conv_bn_eval").

``entry(name, kind)`` gives the ``Entry`` (kind, module, class or impl, framework import name, install
command); ``load`` (adapters, paths and an external ``package.module:obj``), ``load_parallel``,
``load_lenet`` and ``load_route`` import what the name needs, after the framework's setup
(``equiv.backends``). The install command names the package's extras (pyproject.toml):
``pip install "bn-equiv[torch]"``.

Frameworks are imported lazily: nothing here imports one, so ``import equiv.registry`` works with none
installed. This module sits above the packages whose tables it reads; none of them imports it.
"""
import importlib
import importlib.util
from dataclasses import dataclass

from equiv import backends
from equiv.adapters import ADAPTERS, KERAS_ON_TF
from equiv.backends.keras import keras_backend
from equiv.core import Adapter, FrameworkMissing
from equiv.lenet import FRAMEWORKS, NETS, current_label
from equiv.lenet import PARALLEL as LENET_PARALLEL
from equiv.parallel import IMPLEMENTATIONS
from equiv.paths import PATHS
from equiv.routes import ROUTES

ADAPTER, PATH, PARALLEL, LENET, ROUTE = "adapter", "path", "parallel", "lenet", "route"

# framework import name -> the extra of pyproject.toml that installs it
EXTRA = {"torch": "torch", "tensorflow": "tf", "jax": "jax", "flax": "jax", "equinox": "jax", "haiku": "jax",
         "mxnet": "mxnet", "onnxruntime": "onnx", "onnx": "onnx", "onnxoptimizer": "onnx",
         "onnxslim": "onnx", "onnxsim": "onnx", "tinygrad": "tinygrad", "mlx": "mlx", "paddle": "paddle",
         "mindspore": "mindspore", "keras": "tf", "chainer": "chainer", "onnx2tf": "routes-tf",
         "tf_keras": "tf-keras2", "ai_edge_litert": "routes-tf",
         "tf2onnx": "routes-onnx", "openvino": "onnx",
         "executorch": "edge", "litert_torch": "edge", "tvm": "tvm", "onnx2torch": "routes-torchvision",
         "torchvision": "routes-torchvision", "nobuco": "routes-torchvision"}
# what an extra needs beyond pip: tinygrad's CPU device compiles its kernels with clang
SYSTEM = {"tinygrad": "apt-get install -y clang"}


def install_hint(*extras):
    """The command that installs bn-equiv with ``extras`` (and what they need beyond pip)."""
    extras = list(dict.fromkeys(e for e in extras if e))
    return " && ".join([f'pip install "bn-equiv[{",".join(extras)}]"'] + [SYSTEM[e] for e in extras if e in SYSTEM])


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str          # ADAPTER, PATH, PARALLEL, LENET or ROUTE
    module: str        # the module that holds it
    obj: str           # its class (adapter, parallel), wrapper function (path, route) or impl (lenet: "builtin")
    framework: str     # the import name whose presence means its framework is installed
    install: str       # the command that installs what it needs
    base: str = ""     # a path's adapter


def lenet_labels():
    """The single-device BN-LeNets' labels ("tf.keras")."""
    return list(NETS)


def known_names(kind=ADAPTER):
    """Every name of ``kind``: for ADAPTER the adapters, then the execution paths."""
    if kind in (ADAPTER, PATH):
        return sorted(ADAPTERS) + sorted(PATHS)
    if kind == PARALLEL:
        return sorted(IMPLEMENTATIONS)
    if kind == LENET:
        return lenet_labels() + list(LENET_PARALLEL)
    if kind == ROUTE:
        return sorted(ROUTES)
    raise ValueError(f"unknown kind {kind!r}")


def is_known(name, kind=ADAPTER):
    return name in known_names(kind)


def entry(name, kind=ADAPTER):
    """The Entry of ``name`` (kind ADAPTER takes a path's name too); KeyError when unknown."""
    if kind in (ADAPTER, PATH) and name in ADAPTERS:
        module, cls, framework = ADAPTERS[name]
        return Entry(name, ADAPTER, module, cls, framework, install_hint(EXTRA[framework]))
    if kind in (ADAPTER, PATH) and name in PATHS:
        p = PATHS[name]
        base = entry(p.base)
        extras = (p.extra,) if p.framework else (EXTRA[base.framework], p.extra)
        return Entry(name, PATH, p.module, p.wrapper, p.framework or base.framework, install_hint(*extras), p.base)
    if kind == PARALLEL and name in IMPLEMENTATIONS:
        module, cls, framework = IMPLEMENTATIONS[name]
        return Entry(name, PARALLEL, module, cls, framework, install_hint(EXTRA[framework]))
    if kind == LENET:
        name = current_label(name)                 # an old label: the same net
        if name in LENET_PARALLEL:
            (module, framework), impl = LENET_PARALLEL[name], name.partition(".")[2]
        elif name in NETS:
            fw, impl = NETS[name]
            module, framework = FRAMEWORKS[fw]
        else:
            raise KeyError(name)
        return Entry(name, LENET, module, impl, framework, install_hint(EXTRA[framework]))
    if kind == ROUTE and name in ROUTES:
        r = ROUTES[name]
        return Entry(name, ROUTE, r.module, r.function, r.requires[0],
                     install_hint(*(EXTRA[m] for m in r.requires if m in EXTRA)), r.source_adapter)
    if kind not in (ADAPTER, PATH, PARALLEL, LENET, ROUTE):
        raise ValueError(f"unknown kind {kind!r}")
    raise KeyError(name)


def _found(module):
    return importlib.util.find_spec(module) is not None


def _path_requirements_met(name):
    p = PATHS[name]
    if p.backend and keras_backend() != p.backend:
        return False
    return all(_found(m) for m in p.requires)


def framework_installed(name, kind=ADAPTER):
    """True when the framework of a registered name can be imported, without importing it."""
    if kind in (ADAPTER, PATH) and name in PATHS:
        p = PATHS[name]
        # a path on another framework (a Keras backend) needs that one, not the base's
        base = _found(p.framework) if p.framework else framework_installed(p.base)
        return base and _path_requirements_met(name)
    if kind in (ADAPTER, PATH) and name in KERAS_ON_TF and keras_backend() != "tensorflow":
        return False
    if kind == ROUTE:
        return all(_found(m) for m in ROUTES[name].requires)
    return _found(entry(name, kind).framework)


def implemented(name):
    """True when the adapter's (or path's) module exists in this checkout."""
    if name in PATHS:
        return implemented(PATHS[name].base) and _found(PATHS[name].module)
    return _found(ADAPTERS[name][0])


def install_command(name, kind=ADAPTER):
    return entry(name, kind).install


def available(kind=ADAPTER, paths=True):
    """The names of ``kind`` that can run here (ADAPTER without ``paths``: the adapters only)."""
    if kind in (PARALLEL, ROUTE):
        return [n for n in known_names(kind) if framework_installed(n, kind)]
    return [n for n in known_names() if (paths or "+" not in n) and implemented(n) and framework_installed(n)]


def _import(e):
    """The module of entry ``e`` imported after its framework's setup (ImportError: FrameworkMissing)."""
    try:
        backends.setup(e.framework)
        return importlib.import_module(e.module)
    except ImportError as err:
        raise FrameworkMissing(e.name, e.install, str(err)) from err


def _adapter(name):
    """The adapter class of a registered adapter name."""
    e = entry(name)
    adapter = getattr(_import(e), e.obj)
    assert issubclass(adapter, Adapter) and adapter.name == name, (adapter, name)
    adapter.install = e.install
    return adapter


def _wrap(name, base_cls):
    """The adapter class of path ``name`` around the (already loaded) base adapter class."""
    p, e = PATHS[name], entry(name)
    cls = getattr(importlib.import_module(p.module), p.wrapper)(base_cls)
    cls.name, cls.base_name, cls.path, cls.install = name, p.base, p.path, e.install
    if "supported_options" not in vars(cls):   # a path takes the layer options it declares, none by inheritance
        cls.supported_options = {}
    cls.__name__ = cls.__qualname__ = f"{base_cls.__name__}_{p.path}"
    return cls


def _missing_why(name):
    p = PATHS[name]
    if p.backend and _found(p.framework) and keras_backend() != p.backend:
        return f"the Keras backend is {keras_backend()!r}; this path needs KERAS_BACKEND={p.backend}"
    return "a module this path needs is missing"


def load(name):
    """The adapter class of a registered name, an execution path or an external ``package.module:obj``."""
    if ":" in name:
        from equiv.external import load_external
        return load_external(name)
    if name in PATHS:
        p = PATHS[name]
        if p.framework:   # the base's module, run on the path's framework instead of the base's
            if not framework_installed(name):
                raise FrameworkMissing(name, install_command(name), _missing_why(name))
            try:
                return _wrap(name, _adapter(p.base))
            except FrameworkMissing as e:
                raise FrameworkMissing(name, install_command(name), e.cause) from e
        base = load(p.base)
        if not framework_installed(name):
            raise FrameworkMissing(name, install_command(name), "a module this path needs is missing")
        return _wrap(name, base)
    if name not in ADAPTERS:
        raise KeyError(f"unknown adapter {name!r}; known adapters: {', '.join(known_names())} "
                       "(or package.module:obj for an external implementation)")
    if not framework_installed(name):
        framework = ADAPTERS[name][2]
        why = (f"the Keras backend is {keras_backend()!r}, not 'tensorflow' (KERAS_BACKEND)"
               if name in KERAS_ON_TF and _found(framework) else f"no module named {framework!r}")
        raise FrameworkMissing(name, install_command(name), why)
    return _adapter(name)


def load_parallel(name):
    """The ParallelAdapter class of a registered name; FrameworkMissing when its framework is absent."""
    if name not in IMPLEMENTATIONS:
        raise KeyError(f"unknown data-parallel implementation {name!r}; "
                       f"known: {', '.join(known_names(PARALLEL)) or 'none'}")
    e = entry(name, PARALLEL)
    if not framework_installed(name, PARALLEL):
        raise FrameworkMissing(name, e.install, f"no module named {e.framework!r}")
    cls = getattr(_import(e), e.obj)
    cls.install = e.install
    return cls


def load_lenet(label):
    """(implementation module, impl) of a BN-LeNet label (``equiv.lenet.NETS``, an old label of
    ``equiv.lenet.OLD_LABELS``, or a data-parallel label of ``equiv.lenet.PARALLEL``); ValueError when
    unknown or missing."""
    try:
        e = entry(label, LENET)
    except KeyError:
        raise ValueError(f"unknown BN-LeNet implementation {label!r}; give one of: "
                         f"{', '.join(known_names(LENET))}") from None
    try:
        backends.setup(e.framework)
        return importlib.import_module(e.module), e.obj
    except ImportError as err:
        if (err.name or "").split(".")[0] in ("equiv", "reference"):
            raise                          # our own code failed to import: a bug, not a missing framework
        fw = label.partition(".")[0]
        raise ValueError(f"{label} needs {fw}, which is not installed ({err}); "
                         f"install it with: {e.install}") from None


def load_route(name):
    """The function of a registered route (the eval-mode model -> the model the tool makes of it);
    FrameworkMissing when what it needs is absent."""
    if name not in ROUTES:
        raise KeyError(f"unknown route {name!r}; known: {', '.join(known_names(ROUTE))}")
    e = entry(name, ROUTE)
    if not framework_installed(name, ROUTE):
        raise FrameworkMissing(name, e.install, f"needs {', '.join(ROUTES[name].requires)}")
    return getattr(_import(e), e.obj)
