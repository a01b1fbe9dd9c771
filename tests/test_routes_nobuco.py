"""nobuco (PyTorch → Keras) does not import next to tensorflow-cpu 2.21.0: it needs Keras 2 as `keras`, so its
route, torch.builtin+nobuco, runs under tensorflow-cpu 2.15.1 (tox -e routes-torchvision). These tests pin
that, and the BatchNorm converter the route runs, on the installed release (tox -e routes-tf installs nobuco
0.17.0 next to Keras 3); they turn red when a release imports under Keras 3 or converts otherwise."""
import importlib.util
import pathlib

import pytest

SPEC = importlib.util.find_spec("nobuco")
pytestmark = pytest.mark.skipif(SPEC is None, reason="nobuco is not installed: tox -e routes-tf installs it")


def test_nobuco_does_not_import_under_keras_3():
    """nobuco/commons.py:3 imports Keras 2's keras.src.engine; tensorflow-cpu 2.21.0 brings Keras 3."""
    import keras
    assert keras.__version__.startswith("3.")
    with pytest.raises(ModuleNotFoundError, match="keras.src.engine"):
        import nobuco  # noqa: F401


def test_nobuco_batch_norm_converter_as_read():
    """The converter the route runs (equiv.routes.tf_targets.nobuco_keras): keras.layers.BatchNormalization(
    momentum=1 − momentum, epsilon=eps) with the module's weights and statistics, for BatchNorm1d and 2d."""
    root = pathlib.Path(SPEC.submodule_search_locations[0])
    src = (root / "node_converters" / "normalization.py").read_text()
    assert "@converter(nn.BatchNorm1d, nn.BatchNorm2d)" in src
    assert ("keras.layers.BatchNormalization(momentum=1 - momentum, epsilon=epsilon, "
            "weights=[weight, bias, running_mean, running_var])") in src
    assert "import torchvision" in (root / "trace" / "trace.py").read_text()
