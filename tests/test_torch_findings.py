"""Measured behaviours of the two torch implementations that the generic properties do
not express: the book's mode switch, batch of one, and ``momentum=None``."""
import numpy as np
import pytest

import reference as ref

torch = pytest.importorskip("torch", reason="install it with: pip install torch==2.13.0")


def _x(shape=(8, 3), seed=0, mean=1.0):
    return np.random.default_rng(seed).standard_normal(shape) + mean


def test_scratch_mode_follows_grad_mode_not_eval():
    """Finding: the book's layer ignores ``model.eval()``. Under eval() with gradients enabled
    it still normalizes with batch statistics and updates its moving averages; under
    ``torch.no_grad()`` it predicts even in train() mode."""
    from equiv.book.d2l_torch import BatchNorm
    layer = BatchNorm(3, num_dims=2).double()
    layer.moving_mean, layer.moving_var = torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    x = _x()
    layer.eval()
    y = layer(torch.tensor(x)).detach().numpy()
    y_train, mean, _ = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-5)
    np.testing.assert_allclose(y, y_train, rtol=1e-10, atol=1e-12)              # batch stats in eval()
    np.testing.assert_allclose(layer.moving_mean.numpy().ravel(), 0.1 * mean, rtol=1e-12)  # and updated
    layer.train()
    before = layer.moving_mean.clone()
    with torch.no_grad():
        y = layer(torch.tensor(x)).numpy()
    y_infer = ref.batch_norm_infer(x, np.ones(3), np.zeros(3), before.numpy().ravel(),
                                   layer.moving_var.numpy().ravel(), eps=1e-5)
    np.testing.assert_allclose(y, y_infer, rtol=1e-10, atol=1e-12)                # running stats in train()
    assert torch.equal(layer.moving_mean, before)


def test_builtin_batch_of_one():
    """Finding: nn.BatchNorm1d refuses one value per channel in training; BatchNorm2d refuses a
    (1, C, 1, 1) batch but takes (1, C, 2, 2), where the count per channel is 4."""
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm1d(3)(torch.ones(1, 3))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm2d(3)(torch.ones(1, 3, 1, 1))
    assert torch.nn.BatchNorm2d(3)(torch.randn(1, 3, 2, 2)).shape == (1, 3, 2, 2)
    # in eval() a single row is fine: it uses the running statistics
    m = torch.nn.BatchNorm1d(3).eval()
    assert torch.equal(m(torch.zeros(1, 3)), torch.zeros(1, 3))


def test_scratch_batch_of_one_outputs_beta():
    """Finding: the book's code takes a single row; the variance is 0, x̂ = 0 and y = beta,
    and the moving variance decays towards 0 by the factor 0.9 per step."""
    from equiv.book.d2l_torch import BatchNorm
    layer = BatchNorm(3, num_dims=2)
    with torch.no_grad():
        layer.beta.fill_(0.5)
    y = layer(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.equal(y.detach(), torch.full((1, 3), 0.5))
    np.testing.assert_allclose(layer.moving_var.numpy(), 0.9, rtol=1e-6)


def test_builtin_momentum_none_is_cumulative_average():
    m = torch.nn.BatchNorm1d(3, momentum=None).double()
    mean, var = np.zeros(3), np.ones(3)
    for k in range(1, 5):
        x = _x(seed=k, mean=k)
        m(torch.tensor(x))
        _, bm, bv = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-5)
        mean, var = ref.update_running_stats(mean, var, bm, bv, 8, new_batch_weight=ref.cumulative_weight(k),
                                             unbiased=True)
        assert int(m.num_batches_tracked) == k
    np.testing.assert_allclose(m.running_mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(m.running_var.numpy(), var, rtol=1e-12)


def test_scratch_layer_defaults_equal_adapter_path():
    """The adapter runs the book's function with the requested setting; at the book's own
    setting (eps 1e-5, momentum 0.1) its result equals the book layer's own forward."""
    from equiv.registry import load
    A = load("torch.scratch")
    a = A(3, 4, dtype="float64")
    x = _x((4, 3, 2, 2))
    y_layer = a.forward_train(x)                # takes the layer path (book setting)
    b = A(3, 4, dtype="float64", eps=1e-5 * (1 + 1e-15))
    assert b.eps != a.eps
    np.testing.assert_allclose(b.forward_train(x), y_layer, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.get_state()["running_mean"], b.get_state()["running_mean"], rtol=1e-12)
