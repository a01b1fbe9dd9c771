"""The oracle's own tests: finite differences, closed forms, invariances, and agreement
with independent implementations (a pure-Python one here; torch's when installed)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from equiv.strategies import cases


def pure_python_train(x, gamma, beta, eps):
    """Independent, loop-and-fsum batch norm over axis 1 of an (N, C[, H, W]) nested array."""
    x = np.asarray(x)
    n, c = x.shape[:2]
    values = [[float(v) for v in x[:, j].ravel()] for j in range(c)]
    out = np.empty_like(x, dtype=float)
    means, vars_ = [], []
    for j in range(c):
        m = len(values[j])
        mean = math.fsum(values[j]) / m
        var = math.fsum((v - mean) ** 2 for v in values[j]) / m
        means.append(mean)
        vars_.append(var)
        out[:, j] = gamma[j] * (x[:, j] - mean) / math.sqrt(var + eps) + beta[j]
    return out, np.array(means), np.array(vars_)


@given(cases(dtypes=("float64",)))
def test_train_matches_pure_python(case):
    y, mean, var = ref.batch_norm_train(case.x, case.gamma, case.beta, eps=case.eps)
    y2, mean2, var2 = pure_python_train(case.x, case.gamma, case.beta, case.eps)
    scale = np.abs(case.x).max() + 1
    np.testing.assert_allclose(mean, mean2, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(var, var2, rtol=1e-9, atol=1e-13 * scale ** 2)
    from equiv.tolerance import train_forward
    assert np.all(np.abs(y - y2) <= train_forward(case.x, case.gamma, case.beta, case.eps, "float64"))


def test_train_matches_torch_functional():
    torch = pytest.importorskip("torch", reason="install torch==2.13.0 to compare with torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4, 2)) * 3 + 2
    g, b = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = np.zeros(3), np.ones(3)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    trm, trv = t(rm), t(rv)
    y_t = torch.nn.functional.batch_norm(t(x), trm, trv, t(g), t(b), training=True, momentum=0.3, eps=1e-3)
    y, mean, var = ref.batch_norm_train(x, g, b, eps=1e-3)
    np.testing.assert_allclose(y, y_t.numpy(), rtol=1e-12, atol=1e-12)
    m, v = ref.update_running_stats(rm, rv, mean, var, 5 * 4 * 2, new_batch_weight=0.3, unbiased=True)
    np.testing.assert_allclose(m, trm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(v, trv.numpy(), rtol=1e-12)
    y_i = torch.nn.functional.batch_norm(t(x), t(m), t(v), t(g), t(b), training=False, eps=1e-3)
    np.testing.assert_allclose(ref.batch_norm_infer(x, g, b, m, v, eps=1e-3), y_i.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 3, 2)])
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_backward_matches_central_differences(shape, eps):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    dy = rng.standard_normal(shape)
    loss = lambda x, g, b: float((ref.batch_norm_train(x, g, b, eps=eps)[0] * dy).sum())  # noqa: E731
    dx, dgamma, dbeta = ref.batch_norm_backward(x, gamma, dy, eps=eps)
    h = 1e-6

    def numeric(f, a):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            e = np.zeros_like(a)
            e[i] = h
            g[i] = (f(a + e) - f(a - e)) / (2 * h)
        return g

    np.testing.assert_allclose(dx, numeric(lambda v: loss(v, gamma, beta), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, numeric(lambda v: loss(x, v, beta), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, numeric(lambda v: loss(x, gamma, v), beta), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("unbiased", [False, True])
@given(w=st.floats(0, 1), k=st.integers(1, 30))
def test_running_stats_closed_form_from_zero_one(unbiased, w, k):
    """From (0, 1) with the same batch stats (mu, v) every step:
    mean_k = (1 − (1 − w)^k)·mu,  var_k = (1 − w)^k + (1 − (1 − w)^k)·v'  (v' = v·m/(m−1) if unbiased)."""
    mu, v, m = np.array([2.0, -1.0]), np.array([4.0, 0.5]), 8
    mean, var = np.zeros(2), np.ones(2)
    for _ in range(k):
        mean, var = ref.update_running_stats(mean, var, mu, v, m, new_batch_weight=w, unbiased=unbiased)
    keep = (1 - w) ** k
    v_est = v * m / (m - 1) if unbiased else v
    np.testing.assert_allclose(mean, (1 - keep) * mu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(var, keep + (1 - keep) * v_est, rtol=1e-12)


def test_cumulative_weight_gives_plain_average():
    rng = np.random.default_rng(2)
    means, vars_ = rng.standard_normal((5, 3)), rng.uniform(0.5, 2, (5, 3))
    mean, var = np.full(3, 7.0), np.full(3, 9.0)
    for k in range(1, 6):
        mean, var = ref.update_running_stats(mean, var, means[k - 1], vars_[k - 1], 4,
                                             new_batch_weight=ref.cumulative_weight(k), unbiased=False)
    np.testing.assert_allclose(mean, means.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var, vars_.mean(axis=0), rtol=1e-12)
    with pytest.raises(ValueError):
        ref.cumulative_weight(0)


def test_unbiased_needs_two_values():
    with pytest.raises(ValueError):
        ref.update_running_stats(0.0, 1.0, 0.0, 0.0, 1, new_batch_weight=0.1, unbiased=True)


@given(cases(dtypes=("float64",)))
def test_invariances(case):
    """Output moments are (beta, gamma²·var/(var+eps)); dx sums to zero per channel;
    channel-last with axis=-1 equals channel-first with axis=1. Bounds: equiv.tolerance, float64."""
    from equiv import tolerance as tol
    x, g, b = case.x, case.gamma, case.beta
    y, mean, var = ref.batch_norm_train(x, g, b, eps=case.eps)
    red = (0,) + tuple(range(2, x.ndim))
    e = tol.train_forward(x, g, b, case.eps, "float64").max(axis=red)
    sd = np.abs(g) * np.sqrt(var / (var + case.eps))
    tol.assert_close("mean(y)", y.mean(axis=red), b, 2 * e)
    tol.assert_close("var(y)", y.var(axis=red), sd ** 2, 2 * (2 * sd * e + e ** 2))
    dx, _, _ = ref.batch_norm_backward(x, g, case.dy, eps=case.eps)
    e_dx = tol.gradients(x, g, case.dy, case.eps, "float64")[0].max(axis=red)
    tol.assert_close("Σ dx", dx.sum(axis=red), np.zeros(case.channels), case.count * e_dx)
    x_last = np.moveaxis(x, 1, -1)
    y_last, mean_last, var_last = ref.batch_norm_train(x_last, g, b, eps=case.eps, axis=-1)
    np.testing.assert_array_equal(np.moveaxis(y_last, -1, 1), y)


def test_oracle_imports_numpy_only():
    import ast
    import pathlib
    for path in pathlib.Path(ref.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for n in names:
                    assert n.split(".")[0] in ("numpy", "reference"), f"{path.name} imports {n}"


def test_excess_counts_equal_values_and_only_those_as_no_error():
    """Equal infinities (two implementations overflowing alike) agree; NaN, or inf against a finite
    value, is an infinite excess; otherwise the error over the bound."""
    from equiv.tolerance import ToleranceError, assert_close, excess
    inf, nan = np.inf, np.nan
    assert excess(np.array([-inf, 1.0]), np.array([-inf, 1.0]), 1e-9) == 0.0
    assert excess(np.array([inf]), np.array([1.0]), 1e-9) == inf
    assert excess(np.array([nan]), np.array([nan]), 1e-9) == inf
    assert excess(np.array([1.5]), np.array([1.0]), 1.0) == 0.5
    with pytest.raises(ToleranceError, match=r"index \(1,\)"):
        assert_close("v", np.array([-inf, 2.0]), np.array([-inf, 1.0]), 0.5)
