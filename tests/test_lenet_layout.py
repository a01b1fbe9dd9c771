"""equiv.lenet.layout: the reference's layouts <-> the channels-last nets' (TF/Keras, Flax). NumPy only."""
import numpy as np

from equiv.lenet import layout
from reference import lenet as ref


def test_fc1_rows_follow_the_channels_last_flatten():
    """Flattening NHWC orders the features (h, w, c), the reference's NCHW flatten (c, h, w): the
    permuted kernel on the NHWC flatten is the reference's fc1 (the same products, in the same
    order), W.T alone is another function, and the permutation is not the identity."""
    rng = np.random.default_rng(0)
    pool2 = rng.standard_normal((3, 16, 4, 4))                     # NCHW, as the reference
    w = rng.standard_normal((120, 256))
    flat_ref = pool2.reshape(3, -1)
    flat_nhwc = pool2.transpose(0, 2, 3, 1).reshape(3, -1)         # Flatten of NHWC
    kernel = layout.param_to_channels_last("fc1.weight", w)
    np.testing.assert_array_equal(flat_nhwc[:, layout.FC1_ROWS], flat_ref)
    np.testing.assert_allclose(flat_nhwc @ kernel, flat_ref @ w.T, rtol=1e-13, atol=1e-13)
    assert np.abs(flat_nhwc @ w.T - flat_ref @ w.T).max() > 1.0
    assert not np.array_equal(layout.FC1_ROWS, np.arange(256))
    np.testing.assert_array_equal(layout.activation_to_reference("flat", flat_nhwc), flat_ref)


def test_every_parameter_round_trips_exactly():
    params = ref.init_params(4)
    for key, w in params.items():
        k = layout.param_to_channels_last(key, w)
        if key.endswith(".weight"):
            assert k.shape == w.shape[::-1] if w.ndim == 2 else k.shape == (5, 5, w.shape[1], w.shape[0])
        np.testing.assert_array_equal(layout.param_from_channels_last(key, k), w, err_msg=key)


def test_activations_go_back_to_nchw():
    a = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)     # NHWC
    np.testing.assert_array_equal(layout.activation_to_reference("conv1", a), a.transpose(0, 3, 1, 2))
    b = np.ones((2, 84))
    assert layout.activation_to_reference("sig4", b) is not b
