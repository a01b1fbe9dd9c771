"""torchvision's and timm's frozen batch norms (torchvision.ops.FrozenBatchNorm2d, timm's
FrozenBatchNormAct2d, freeze_batch_norm_2d / unfreeze_batch_norm_2d) with the pinned CPU torch.

Measured with torch 2.13.0+cpu: PyPI's torchvision 0.28.0 (the release whose wheel requires
torch==2.13.0; 7,670,718 bytes, cp311 manylinux_2_28) is a CUDA build (version.py says
0.28.0+cu130). Its C++ ops library torchvision/_C.so links libc10_cuda.so and libtorch_cuda.so,
which a CPU torch does not ship, so it does not load; torchvision/extension.py swallows that, and
`import torchvision` then fails at torchvision/_meta_registrations.py:163 (register_fake for
torchvision::nms) with "RuntimeError: operator torchvision::nms does not exist". timm 1.0.31 imports
torchvision (timm/layers/_fx.py:8 catches only ImportError) and fails with the same error. No adapter
is built on them; what FrozenBatchNorm2d computes, read from its source, is in
docs/findings/notes/pytorch.md.

These tests pin that failure where torchvision is installed as a CUDA build next to a CPU torch
(tox -e torchvision), each import in a fresh interpreter; elsewhere they skip. Where the pairing is
gone (a CPU torchvision, a CUDA torch) they skip with the reason: adapters could then be built.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

NMS = "operator torchvision::nms does not exist"


def _torchvision_dir():
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchvision is not installed (tox -e torchvision installs 0.28.0)")
    return Path(next(iter(spec.submodule_search_locations)))


def _measured_pairing():
    """torchvision's directory where it is a CUDA build and torch a CPU one, else skip."""
    tv = _torchvision_dir()
    built = (tv / "version.py").read_text()
    if torch.version.cuda is not None or "+cu" not in built:
        pytest.skip(f"not the measured pairing (torch {torch.__version__}, torchvision "
                    f"{built.split(chr(10))[0]}): torchvision may import here")
    return tv


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_cuda_ops_library_does_not_load_into_cpu_torch():
    tv = _measured_pairing()
    r = _run(f"import ctypes, torch; ctypes.CDLL({str(tv / '_C.so')!r})")
    assert r.returncode != 0
    assert "libc10_cuda.so: cannot open shared object file" in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("statement", [
    "import torchvision",
    "from torchvision.ops import FrozenBatchNorm2d",
])
def test_torchvision_does_not_import(statement):
    _measured_pairing()
    r = _run(statement, TORCHVISION_WARN_WHEN_EXTENSION_LOADING_FAILS="1")
    assert r.returncode != 0
    assert f"RuntimeError: {NMS}" in r.stderr, r.stderr[-2000:]
    assert "Failed to load '_C' extension: OSError" in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("statement", [
    "import timm",
    "from timm.layers import FrozenBatchNormAct2d, freeze_batch_norm_2d, unfreeze_batch_norm_2d",
])
def test_timm_does_not_import(statement):
    _measured_pairing()
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed (tox -e torchvision installs 1.0.31)")
    r = _run(statement)
    assert r.returncode != 0
    assert f"RuntimeError: {NMS}" in r.stderr, r.stderr[-2000:]
    assert "timm/layers/_fx.py" in r.stderr, r.stderr[-2000:]
