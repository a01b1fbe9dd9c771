"""The adapter protocol itself, for every selected adapter: state round trip, copies not
views, canonical layout and shapes, and refusals the user can act on."""
import numpy as np
import pytest

from equiv.core import MomentumRequired, Unsupported


def _state(c, seed=0):
    rng = np.random.default_rng(seed)
    return dict(gamma=rng.uniform(0.5, 2, c), beta=rng.standard_normal(c),
                running_mean=rng.standard_normal(c), running_var=rng.uniform(0.5, 2, c))


SHAPES = {2: (4, 3), 3: (4, 3, 5), 4: (4, 3, 2, 2), 5: (4, 3, 2, 2, 2)}   # one per rank (equiv.core.RANKS)


@pytest.mark.parametrize("ndim", list(SHAPES))
def test_state_round_trip_and_copies(adapter, ndim):
    if ndim not in adapter.ndims:
        pytest.skip(f"{adapter.name} takes no {ndim}-D input")
    dtype = "float64" if "float64" in adapter.dtypes else "float32"
    try:
        a = adapter(3, ndim, dtype=dtype)
    except MomentumRequired:          # the framework has no default momentum (Haiku's decay_rate)
        a = adapter(3, ndim, dtype=dtype, new_batch_weight=0.1)
    s = {k: np.asarray(v, dtype=dtype).astype(np.float64) for k, v in _state(3).items()}
    a.set_state(**s)
    if adapter.conventions.running_var == "none":     # no running statistics to keep (stax)
        s = {k: s[k] for k in ("gamma", "beta")}
        assert sorted(a.get_state()) == ["beta", "gamma"]
    got = a.get_state()
    for k in s:
        assert got[k].shape == (3,) and got[k].dtype == np.float64, k
        np.testing.assert_array_equal(got[k], s[k], err_msg=k)
    shape = SHAPES[ndim]
    x = np.random.default_rng(1).standard_normal(shape) + 2.0
    a.train_step(x, np.ones(shape))
    for k in s:   # the earlier get_state result is a copy, not a view of live buffers
        np.testing.assert_array_equal(got[k], s[k], err_msg=f"{k} changed after a training step")
    y = a.forward_train(x)
    assert y.shape == shape and y.dtype == np.float64


def test_unsupported_dtype_and_device_are_refused(adapter):
    missing = [d for d in ("float64", "float32", "float16", "bfloat16") if d not in adapter.dtypes]
    if missing:
        with pytest.raises(Unsupported):
            adapter(2, 2, dtype=missing[0])
    with pytest.raises(Unsupported):
        adapter(2, 2, dtype=adapter.dtypes[0], device="tpu-that-does-not-exist")
    with pytest.raises(ValueError):
        adapter(2, 6, dtype=adapter.dtypes[0])
    for ndim in sorted(set(SHAPES) - set(adapter.ndims)):   # a rank the protocol knows, not this adapter
        with pytest.raises(Unsupported):
            adapter(2, ndim, dtype=adapter.dtypes[0])
