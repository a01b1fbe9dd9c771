"""The registry (equiv/registry.py): every name of every kind resolves to an entry whose module exists
and whose install command names extras that pyproject.toml declares; resolving imports no framework."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from equiv import registry
from equiv.paths import PATHS

tomllib = pytest.importorskip("tomllib")   # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
KINDS = (registry.ADAPTER, registry.PARALLEL, registry.LENET, registry.ROUTE)
FRAMEWORKS = ("torch", "tensorflow", "jax", "flax", "keras", "mxnet", "onnx", "onnxruntime", "paddle", "mindspore",
              "mlx", "tinygrad", "equinox", "haiku", "optax")


def _extras():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_every_extra_the_registry_names_is_declared():
    named = set(registry.EXTRA.values()) | set(registry.SYSTEM) | {p.extra for p in PATHS.values() if p.extra}
    assert named <= set(_extras()), named - set(_extras())


@pytest.mark.parametrize("kind", KINDS)
def test_every_name_resolves_to_an_existing_module_and_an_extra(kind):
    names = registry.known_names(kind)
    assert names and len(names) == len(set(names))
    for name in names:
        e = registry.entry(name, kind)
        assert e.name == name and e.kind in (kind, registry.PATH if kind == registry.ADAPTER else kind)
        assert importlib.util.find_spec(e.module) is not None, e
        assert e.install.startswith('pip install "bn-equiv[') and e.install == registry.install_command(name, kind)
        listed = e.install.split("[", 1)[1].split("]", 1)[0].split(",")
        assert set(listed) <= set(_extras()), e


def test_install_commands():
    assert registry.install_command("torch.builtin") == 'pip install "bn-equiv[torch]"'
    assert registry.install_command("haiku") == 'pip install "bn-equiv[jax]"'
    assert registry.install_command("torch.builtin+onnx_dynamo") == 'pip install "bn-equiv[torch,onnx]"'
    assert registry.install_command("tf.keras+torch") == 'pip install "bn-equiv[keras-torch]"'
    assert (registry.install_command("tinygrad.builtin")
            == 'pip install "bn-equiv[tinygrad]" && apt-get install -y clang')
    assert registry.install_command("tf.mirrored", registry.PARALLEL) == 'pip install "bn-equiv[tf]"'
    assert registry.install_command("equinox.ema", registry.LENET) == 'pip install "bn-equiv[jax]"'
    assert registry.install_command("torch.builtin+fx_fuse", registry.ROUTE) == 'pip install "bn-equiv[torch]"'
    assert registry.install_command("onnx.node+onnxslim", registry.ROUTE) == 'pip install "bn-equiv[onnx]"'
    # the same name is an adapter and a BN-LeNet, a data-parallel implementation and a net
    assert registry.entry("torch.builtin").module == "equiv.adapters.torch_builtin"
    assert registry.entry("torch.builtin", registry.LENET).module == "equiv.lenet.torch_net"
    assert registry.entry("tf.mirrored", registry.PARALLEL).obj == "KerasMirrored"
    assert registry.entry("tf.mirrored.sync", registry.LENET).obj == "mirrored.sync"


def test_a_single_device_net_is_named_after_its_bn_layers_adapter():
    """Every single-device BN-LeNet's label is the adapter name of its BN layer, on the same framework;
    every old label (equiv.lenet.OLD_LABELS) resolves to the same net as its new name."""
    from equiv import lenet
    from equiv.adapters import ADAPTERS
    labels = registry.lenet_labels()
    assert {"tf.keras", "flax.linen", "mxnet.gluon", "torch.builtin", "equinox.ema"} <= set(labels)
    for label in labels:
        assert lenet.ADAPTER[label] == label and label in ADAPTERS, label
        assert registry.entry(label, registry.LENET).framework == registry.entry(label).framework, label
    assert lenet.OLD_LABELS == {"tf.builtin": "tf.keras", "jax.builtin": "flax.linen", "mxnet.builtin": "mxnet.gluon"}
    for old, new in lenet.OLD_LABELS.items():
        assert old not in registry.known_names(registry.LENET)
        assert registry.entry(old, registry.LENET) == registry.entry(new, registry.LENET)
        assert (registry.entry(new, registry.LENET).module, registry.entry(new, registry.LENET).obj) == \
            (lenet.FRAMEWORKS[old.split(".")[0]][0], "builtin")


def test_unknown_names_say_what_is_known():
    with pytest.raises(KeyError, match="known adapters: .*torch.builtin"):
        registry.load("no.such")
    with pytest.raises(KeyError, match="known: .*torch.ddp"):
        registry.load_parallel("no.such")
    with pytest.raises(ValueError, match="give one of: .*torch.builtin.*torch.ddp"):
        registry.load_lenet("torch.nope")


def test_resolving_every_name_imports_no_framework():
    code = ("import sys, json\nimport equiv, equiv.backends, equiv.registry as r\n"
            "for k in (r.ADAPTER, r.PARALLEL, r.LENET, r.ROUTE):\n"
            "    for n in r.known_names(k):\n"
            "        r.entry(n, k); r.framework_installed(n, k); r.install_command(n, k)\n"
            "r.available(); r.available(r.PARALLEL)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
