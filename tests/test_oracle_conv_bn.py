"""The conv/linear + BatchNorm oracle (reference/conv_bn.py) on its own: hand-checked values, the
convolution against a direct loop, and the folded layer against the unfolded one."""
import numpy as np
import pytest

from reference import conv_bn as cb


def _loop_conv(x, w, b, stride, padding):
    """The definition, one output element at a time."""
    n, c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.zeros((n, c_in, h + 2 * padding, wd + 2 * padding))
    xp[:, :, padding:padding + h, padding:padding + wd] = x
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, c_out, ho, wo))
    for i in range(n):
        for o in range(c_out):
            for r in range(ho):
                for q in range(wo):
                    acc = 0.0 if b is None else b[o]
                    for c in range(c_in):
                        for p in range(kh):
                            for t in range(kw):
                                acc += w[o, c, p, t] * xp[i, c, r * stride + p, q * stride + t]
                    y[i, o, r, q] = acc
    return y


def test_hand_checked_values():
    # one channel, 1×1 kernel: conv is a scale; BN with var 3, eps 1: sqrt(4) = 2
    x = np.array([[[[1.0, 2.0]]]])
    w, b = np.array([[[[3.0]]]]), np.array([1.0])
    assert cb.conv2d(x, w, b).tolist() == [[[[4.0, 7.0]]]]
    y = cb.conv_bn_infer(x, w, b, gamma=[2.0], beta=[0.5], running_mean=[3.0], running_var=[3.0], eps=1.0)
    assert y.tolist() == [[[[1.5, 4.5]]]]                      # 2·(4 − 3)/2 + 0.5, 2·(7 − 3)/2 + 0.5
    wf, bf = cb.fold(w, b, [2.0], [0.5], [3.0], [3.0], eps=1.0)
    assert wf.tolist() == [[[[3.0]]]] and bf.tolist() == [-1.5]  # s = 1: W' = 3, b' = (1 − 3)·1 + 0.5
    assert cb.fold_scale([2.0, -6.0], [3.0, 8.0], eps=1.0).tolist() == [1.0, -2.0]
    # linear: [1, 2]·[[1, 1], [2, −1]]ᵀ = [3, 0]; no bias
    z = cb.linear([[1.0, 2.0]], [[1.0, 1.0], [2.0, -1.0]])
    assert z.tolist() == [[3.0, 0.0]]
    y = cb.linear_bn_infer([[1.0, 2.0]], [[1.0, 1.0], [2.0, -1.0]], None, [1.0, 4.0], [0.0, 1.0],
                           [1.0, 2.0], [3.0, 15.0], eps=1.0)
    assert y.tolist() == [[1.0, -1.0]]                         # (3 − 1)/2, 4·(0 − 2)/4 + 1
    wf, bf = cb.fold([[1.0, 1.0], [2.0, -1.0]], None, [1.0, 4.0], [0.0, 1.0], [1.0, 2.0], [3.0, 15.0], eps=1.0)
    assert wf.tolist() == [[0.5, 0.5], [2.0, -1.0]] and bf.tolist() == [-0.5, -1.0]


def test_stride_and_padding_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2))
    y = cb.conv2d(x, w, stride=2)
    assert y.tolist() == [[[[10.0, 18.0], [42.0, 50.0]]]]      # sums of the four 2×2 blocks
    y = cb.conv2d(x, w, padding=1, stride=3)
    assert y.tolist() == [[[[0.0, 5.0], [20.0, 50.0]]]]      # x[0,0]; x[0,0:2]; x[2:4,0]; x[2:4,2:4]


@pytest.mark.parametrize("stride,padding,bias", [(1, 0, True), (2, 1, False), (1, 2, True), (3, 1, True)])
def test_conv_matches_a_direct_loop(stride, padding, bias):
    rng = np.random.default_rng(stride * 10 + padding)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4) if bias else None
    np.testing.assert_allclose(cb.conv2d(x, w, b, stride=stride, padding=padding),
                               _loop_conv(x, w, b, stride, padding), rtol=1e-13, atol=1e-13)


def _state(rng, c_out, dead=False, offset=0.0, big_gamma=False):
    gamma = rng.standard_normal(c_out) * (1e3 if big_gamma else 1.0)
    var = rng.uniform(0.1, 4.0, c_out)
    if dead:
        var[0], var[2] = 0.0, 1e-8                                # dead channels
    return gamma, rng.standard_normal(c_out), rng.standard_normal(c_out) * 3 + offset, var


@pytest.mark.parametrize("dead,offset,big_gamma", [(False, 0.0, False), (True, 0.0, False),
                                                   (False, 1e4, False), (True, 1e4, True)])
def test_folded_equals_unfolded(dead, offset, big_gamma):
    """The two forms of y agree to float64 rounding: the difference is within a few units of
    roundoff of Σ|W'|·|x| + |b − mean|·|s| + |beta|, the magnitudes that enter both."""
    rng = np.random.default_rng(7)
    u = 2.0 ** -53
    x = rng.standard_normal((2, 3, 5, 5)) + offset / 100
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    gamma, beta, mean, var = _state(rng, 4, dead, offset, big_gamma)
    eps = 1e-5
    y = cb.conv_bn_infer(x, w, b, gamma, beta, mean, var, eps=eps, stride=2, padding=1)
    wf, bf = cb.fold(w, b, gamma, beta, mean, var, eps=eps)
    yf = cb.conv2d(x, wf, bf, stride=2, padding=1)
    s = np.abs(cb.fold_scale(gamma, var, eps=eps)).reshape(1, -1, 1, 1)
    scale = cb.conv2d(np.abs(x), np.abs(w), stride=2, padding=1) * s + (np.abs(b - mean) * s[0, :, 0, 0]
                                                                          + np.abs(beta)).reshape(1, -1, 1, 1)
    assert np.abs(yf - y).max() > 0 or offset == 0              # not trivially the same computation
    assert (np.abs(yf - y) <= 64 * u * scale).all()
    # linear alike
    x2, w2 = rng.standard_normal((5, 6)) + offset / 100, rng.standard_normal((4, 6))
    y2 = cb.linear_bn_infer(x2, w2, None, gamma, beta, mean, var, eps=eps)
    wf2, bf2 = cb.fold(w2, None, gamma, beta, mean, var, eps=eps)
    scale2 = (np.abs(x2) @ np.abs(w2).T + np.abs(mean)) * s[0, :, 0, 0] + np.abs(beta)
    assert (np.abs(cb.linear(x2, wf2, bf2) - y2) <= 64 * u * scale2).all()


def test_fold_scale_uses_eps_inside_the_root():
    """A dead channel (var 0) folds to gamma/sqrt(eps), finite; without eps it would be inf."""
    s = cb.fold_scale([2.0], [0.0], eps=1e-4)
    assert s.tolist() == [200.0]
