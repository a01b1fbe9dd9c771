"""nobuco (PyTorch → Keras) does not import next to tensorflow-cpu 2.21.0 (equiv.routes.NOT_RUN): these
tests pin that, and the BatchNorm converter its NOT_RUN row reads, on the installed release (tox -e
routes-tf installs nobuco 0.17.0); they turn red when a release imports or converts otherwise, the
time to run the route."""
import importlib.util
import pathlib

import pytest

from equiv.routes import NOT_RUN

SPEC = importlib.util.find_spec("nobuco")
pytestmark = pytest.mark.skipif(SPEC is None, reason="nobuco is not installed: tox -e routes-tf installs it")


def test_nobuco_has_its_not_run_row():
    row = NOT_RUN["torch.builtin+nobuco"]
    assert "keras.src.engine" in row.reason and "torchvision" in row.reason


def test_nobuco_does_not_import_under_keras_3():
    """nobuco/commons.py:3 imports Keras 2's keras.src.engine; tensorflow-cpu 2.21.0 brings Keras 3."""
    import keras
    assert keras.__version__.startswith("3.")
    with pytest.raises(ModuleNotFoundError, match="keras.src.engine"):
        import nobuco  # noqa: F401


def test_nobuco_batch_norm_converter_as_read():
    """The converter the NOT_RUN row describes: keras.layers.BatchNormalization(momentum=1 − momentum,
    epsilon=eps) with the module's weights and statistics, for BatchNorm1d and BatchNorm2d."""
    root = pathlib.Path(SPEC.submodule_search_locations[0])
    src = (root / "node_converters" / "normalization.py").read_text()
    assert "@converter(nn.BatchNorm1d, nn.BatchNorm2d)" in src
    assert ("keras.layers.BatchNormalization(momentum=1 - momentum, epsilon=epsilon, "
            "weights=[weight, bias, running_mean, running_var])") in src
    assert "import torchvision" in (root / "trace" / "trace.py").read_text()
