"""The TFLite route (equiv.routes.tf_convert: tf.keras+tflite) on states drawn as trained networks have
them (equiv.routes.states): per layer (Conv2D or Dense → BatchNormalization, or BatchNormalization alone
on the layer's output), kind of state and dtype (float32; float16: float16 weights), the converted
model in the TFLite interpreter against the float64 oracle under the folded layer's bound where the
converter folds (no MUL, ADD, SUB, RSQRT left in the flatbuffer) and the unfolded bound where it does
not, eager Keras against it under the unfolded bound, and the two under the sum; that the state's eps
survives; the documented findings' witnesses (equiv.known.ROUTE_KNOWN) as strict xfails."""
import pytest

from equiv import registry
from equiv.known import ROUTE_KNOWN
from equiv.routes import ROUTES
from equiv.routes.states import KINDS, FoldState, fold_states
from equiv.tolerance import ToleranceError, assert_close
from tests.route_helpers import oracle_and_bounds, within_bound

NAME = "tf.keras+tflite"
ROUTE = ROUTES[NAME]
# a conversion takes ~0.5 s: one state per (layer, kind, dtype) under ci
EXAMPLES = {"dev": 1, "ci": 1, "thorough": 20, "mutation": 3}
KNOWN = [d for d in ROUTE_KNOWN if NAME in d.implementations]

pytestmark = pytest.mark.skipif(not registry.framework_installed(NAME, registry.ROUTE),
                                reason=f"{NAME} needs {', '.join(ROUTE.requires)}")


def known(layer, state):
    return next((d for d in KNOWN if layer in d.layers and d.region(state)), None)


def check_route(state, layer):
    """Convert and run; returns the (lite/oracle, eager/oracle, lite/eager) error/bound ratios."""
    from equiv.routes import tf_convert as tc
    lite = registry.load_route(NAME)(tc.keras_model(state, layer), state.dtype)
    y_lite = tc.run_lite(lite, state, layer)
    y_eager = tc.run_keras(tc.keras_model(state, layer, state.dtype), state, layer)
    y, unfolded, folded = oracle_and_bounds(state, layer)
    folds = layer in ROUTE.folds
    assert lite.folded() == folds, f"{NAME} {layer}: ops {lite.ops}"
    bound = folded if folds else unfolded
    return (assert_close(f"{NAME} {layer} vs oracle", y_lite, y, bound),
            assert_close(f"eager keras {layer} vs oracle", y_eager, y, unfolded),
            assert_close(f"{NAME} {layer} vs eager", y_lite, y_eager, bound + unfolded))


CASES = [(layer, kind, dtype) for layer in ROUTE.layers for kind in KINDS for dtype in ROUTE.dtypes]


@pytest.mark.parametrize("layer,kind,dtype", CASES, ids=["-".join(c) for c in CASES])
def test_tflite_within_bound(layer, kind, dtype):
    within_bound(fold_states("conv" if layer == "bn" else layer, kind, (dtype,)),
                 lambda state: check_route(state, layer), EXAMPLES, 1, skip=lambda state: known(layer, state))


def test_tflite_keeps_the_given_eps():
    """A dead channel (running variance 0) with eps 1e-5: the converted model is within bound of the
    oracle with 1e-5 and far out of it with Keras' default 1e-3 (the folded scale is 10× apart)."""
    from equiv.routes import tf_convert as tc
    state = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False)
    model = tc.keras_model(state, "conv")
    assert model.layers[-1].epsilon == 1e-5
    y_lite = tc.run_lite(registry.load_route(NAME)(model), state, "conv")
    _, _, folded = oracle_and_bounds(state, "conv")
    assert assert_close("tflite vs oracle eps 1e-5", y_lite, state.oracle(), folded) <= 1
    default = FoldState(layer="conv", kind="dead", dtype="float32", seed=0, bias=False, eps=1e-3)
    with pytest.raises(ToleranceError):
        assert_close("tflite vs oracle eps 1e-3", y_lite, default.oracle(), folded)


def _layer(d):
    return "bn" if "bn" in d.layers else d.witness.layer


@pytest.mark.parametrize("d", [pytest.param(d, id=d.id, marks=pytest.mark.xfail(strict=True, raises=ToleranceError,
                                                                                 reason=d.id)) for d in KNOWN])
def test_known_tflite_witness(d):
    """Strict xfail: out of its bound against the oracle on the witness (a fixed release turns it red)."""
    assert d.region(d.witness) and d.witness.representable()
    check_route(d.witness, _layer(d))
