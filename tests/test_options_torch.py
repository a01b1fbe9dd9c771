"""PyTorch's BatchNorm under its layer options, against the oracle of reference/options.py: momentum=None
over many steps and after a switch from a float momentum, track_running_stats=False given or set
afterwards, affine=False, torch.nn.functional.batch_norm (the path torch.builtin+functional), BatchNorm1d
on (N, C, L) and BatchNorm3d (which the cases draw too: torch.builtin's ndims), LazyBatchNorm2d's first
call (the path torch.builtin+lazy), torch.optim.swa_utils.update_bn over unequal batches; and the
documented divergences under options (equiv.known.OPTION_KNOWN) as strict xfails. Lines cited are
torch/nn/modules/batchnorm.py of torch 2.13.0 unless another file is named."""
import numpy as np
import pytest

import reference as ref
from equiv import tolerance as tol
from equiv.known import OPTION_KNOWN
from equiv.properties import PROPERTIES
from reference import options as opt

torch = pytest.importorskip("torch", reason="install it with: pip install torch==2.13.0")

KNOWN = [d for d in OPTION_KNOWN if all(n.startswith("torch.") for n in d.implementations)]   # this env's
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _batches(shapes, seed=0, dtype="float64"):
    """Batches of the given shapes, one mean and scale per batch (so the batch statistics differ),
    rounded to the dtype."""
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        x = rng.standard_normal(s) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)
        out.append(x.astype(dtype).astype(np.float64))
    return out


def _builtin():
    from equiv.registry import load
    return load("torch.builtin")


def _cumulative_check(m, batches, dtype):
    """Run the batches through layer m (training) and hold its running statistics after every step to
    the oracle's cumulative average, under the summed running-statistics bounds; returns the worst
    error/bound ratio."""
    c = batches[0].shape[1]
    mean, var, bm, bv, worst = np.zeros(c), np.ones(c), 0.0, 0.0, 0.0
    expected = opt.cumulative_running_stats(batches, mean, var, unbiased=True)
    for k, (x, (new_mean, new_var)) in enumerate(zip(batches, expected), start=1):
        m(torch.tensor(x, dtype=DTYPES[dtype]))
        dm, dv = tol.running_stats(x, mean, var, new_mean, new_var, 1.0 / k, dtype)
        bm, bv, mean, var = bm + dm, bv + dv, new_mean, new_var
        assert int(m.num_batches_tracked) == k
        worst = max(worst, tol.assert_close(f"running mean after {k}", m.running_mean.double().numpy(), mean, bm),
                    tol.assert_close(f"running var after {k}", m.running_var.double().numpy(), var, bv))
    return worst


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_momentum_none_over_many_steps_is_the_cumulative_average(dtype):
    """momentum=None: the k-th update weighs the batch 1/num_batches_tracked (batchnorm.py:191-192); over 60
    batches of sizes 2 … 9 the running statistics stay within the bound of the oracle's cumulative average,
    which equals the plain average of the batch statistics (unbiased variance per batch)."""
    batches = _batches([(2 + k % 8, 3) for k in range(60)], seed=1, dtype=dtype)
    m = torch.nn.BatchNorm1d(3, momentum=None, dtype=DTYPES[dtype])
    assert _cumulative_check(m, batches, dtype) <= 1.0
    am, av = opt.batch_average(batches, unbiased=True)
    tight = {"float64": 1e-13, "float32": 1e-5}[dtype]
    np.testing.assert_allclose(m.running_mean.double().numpy(), am, rtol=tight, atol=tight)
    np.testing.assert_allclose(m.running_var.double().numpy(), av, rtol=tight)


def test_momentum_none_after_a_float_momentum_counts_the_earlier_steps():
    """Setting momentum=None after three steps at momentum 0.1: num_batches_tracked is already 3
    (batchnorm.py:187-190 counts every training step), so the next update weighs the batch 1/4, and the
    one after 1/5 (documented divergence torch-momentum-none-after-float-momentum); after
    reset_running_stats() (batchnorm.py:91-97) it is the plain average of the batches since."""
    xs = _batches([(6, 2)] * 5, seed=2)
    m = torch.nn.BatchNorm1d(2, momentum=0.1, dtype=torch.float64)
    for x in xs[:3]:
        m(torch.tensor(x))
    m.momentum = None
    weights = []
    for x in xs[3:]:
        before = m.running_mean.clone().numpy()
        m(torch.tensor(x))
        bmean = x.mean(axis=0)
        weights.append(float(np.mean((m.running_mean.numpy() - before) / (bmean - before))))
    assert int(m.num_batches_tracked) == 5
    np.testing.assert_allclose(weights, [1 / 4, 1 / 5], rtol=1e-10)
    m.reset_running_stats()
    for x in xs[3:]:
        m(torch.tensor(x))
    np.testing.assert_allclose(m.running_mean.numpy(), opt.batch_average(xs[3:], unbiased=True)[0], rtol=1e-14)


def test_track_running_stats_false_given_and_set_afterwards():
    """Given to the constructor: no buffers (batchnorm.py:85-87), batch statistics in eval (200-203).
    Set on the built layer: training calls no longer update the buffers or the count (187, 213-218), but
    eval() still normalizes with the stored buffers (documented divergence
    torch-track-running-stats-set-false-uses-buffers): the output equals the oracle's inference forward
    from them, exactly in float64 terms of the bound."""
    x = _batches([(8, 3)], seed=3)[0]
    xt = torch.tensor(x)
    given = torch.nn.BatchNorm1d(3, track_running_stats=False, dtype=torch.float64).eval()
    assert given.running_mean is None and given.num_batches_tracked is None
    y_batch = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-5)[0]
    tol.assert_close("eval y", given(xt).detach().numpy(), y_batch, tol.train_forward(x, np.ones(3), np.zeros(3),
                                                                                     1e-5, "float64"))
    later = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    with torch.no_grad():
        later.running_mean.fill_(0.5)
        later.running_var.fill_(2.0)
    later.track_running_stats = False
    later.train()
    later(xt)
    assert int(later.num_batches_tracked) == 0 and torch.all(later.running_mean == 0.5)
    later.eval()
    y = later(xt).detach().numpy()
    y_stored = ref.batch_norm_infer(x, np.ones(3), np.zeros(3), np.full(3, 0.5), np.full(3, 2.0), eps=1e-5)
    tol.assert_close("eval y from the stored buffers", y, y_stored,
                     tol.infer_forward(x, np.ones(3), np.zeros(3), np.full(3, 0.5), np.full(3, 2.0), 1e-5, "float64"))
    assert np.abs(y - y_batch).max() > 0.1


def test_affine_false_has_no_parameters():
    m = torch.nn.BatchNorm2d(3, affine=False)
    assert m.weight is None and m.bias is None and not list(m.parameters())
    a = _builtin()(3, 4, dtype="float64", options={"affine": False})
    x = _batches([(2, 3, 2, 2)], seed=4)[0]
    _, dx, dgamma, dbeta = a.train_step(x, np.ones_like(x))
    assert dgamma is None and dbeta is None
    np.testing.assert_array_equal(a.get_state()["gamma"], np.ones(3))


def test_functional_batch_norm_updates_the_given_buffers_in_place():
    """F.batch_norm(training=True) writes the new running statistics into the tensors it is given (same
    storage), with PyTorch's unbiased variance and the momentum as the new-batch weight; it counts
    nothing (there is no num_batches_tracked to give it)."""
    x = _batches([(5, 2, 3)], seed=5)[0]              # (N, C, L)
    rm, rv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    ptr_m, ptr_v = rm.data_ptr(), rv.data_ptr()
    torch.nn.functional.batch_norm(torch.tensor(x), rm, rv, training=True, momentum=0.3, eps=1e-5)
    assert (rm.data_ptr(), rv.data_ptr()) == (ptr_m, ptr_v)
    _, bmean, bvar = ref.batch_norm_train(x, np.ones(2), np.zeros(2), eps=1e-5)
    em, ev = ref.update_running_stats(np.zeros(2), np.ones(2), bmean, bvar, 15, new_batch_weight=0.3, unbiased=True)
    bm, bv = tol.running_stats(x, np.zeros(2), np.ones(2), em, ev, 0.3, "float64")
    tol.assert_close("running mean", rm.numpy(), em, bm)
    tol.assert_close("running var", rv.numpy(), ev, bv)


@pytest.mark.parametrize("prop", ["train_forward", "infer_forward", "running_stats", "gradients", "state_after_calls"])
def test_functional_batch_norm_properties(prop):
    """The properties on torch.builtin's layer called as F.batch_norm (the path torch.builtin+functional,
    equiv.paths.torch_paths.functional), under the options' smaller budget."""
    from equiv.properties import run
    from equiv.registry import load
    from equiv.strategies import default_profile
    A = load("torch.builtin+functional")
    stats = run(PROPERTIES[prop], A, profile=f"{default_profile()}-options")   # the options' smaller budget
    assert stats["examples"] > 0


@pytest.mark.parametrize("cls,shape", [(torch.nn.BatchNorm1d, (4, 3, 5)), (torch.nn.BatchNorm3d, (2, 3, 2, 3, 2))])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ranks_three_and_five_by_hand(cls, shape, dtype):
    """BatchNorm1d on (N, C, L) and BatchNorm3d on (N, C, D, H, W), on the modules themselves (the suite
    draws these ranks through the adapter): training output, gradients, running statistics after two steps
    and the inference output, each within the oracle's bound."""
    c = shape[1]
    rng = np.random.default_rng(6)
    gamma, beta = rng.uniform(0.5, 2, c), rng.standard_normal(c)
    m = cls(c, momentum=0.2, dtype=DTYPES[dtype])
    with torch.no_grad():
        m.weight.copy_(torch.tensor(gamma))
        m.bias.copy_(torch.tensor(beta))
    gamma, beta = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
    mean, var, bm, bv = np.zeros(c), np.ones(c), 0.0, 0.0
    for x in _batches([shape, shape], seed=7, dtype=dtype):
        dy = rng.standard_normal(shape).astype(dtype).astype(np.float64)
        xt = torch.tensor(x, dtype=DTYPES[dtype], requires_grad=True)
        y = m(xt)
        y.backward(torch.tensor(dy, dtype=DTYPES[dtype]))
        ry, bmean, bvar = ref.batch_norm_train(x, gamma, beta, eps=1e-5)
        tol.assert_close("y", y.detach().double().numpy(), ry, tol.train_forward(x, gamma, beta, 1e-5, dtype))
        rdx, rdg, rdb = ref.batch_norm_backward(x, gamma, dy, eps=1e-5)
        bdx, bdg, bdb = tol.gradients(x, gamma, dy, 1e-5, dtype)
        tol.assert_close("dx", xt.grad.double().numpy(), rdx, bdx)
        tol.assert_close("dgamma", m.weight.grad.double().numpy(), rdg, bdg)
        tol.assert_close("dbeta", m.bias.grad.double().numpy(), rdb, bdb)
        m.zero_grad()
        count = x.size // c
        new_mean, new_var = ref.update_running_stats(mean, var, bmean, bvar, count, new_batch_weight=0.2, unbiased=True)
        dm, dv = tol.running_stats(x, mean, var, new_mean, new_var, 0.2, dtype)
        bm, bv, mean, var = bm + dm, bv + dv, new_mean, new_var
        tol.assert_close("running mean", m.running_mean.double().numpy(), mean, bm)
        tol.assert_close("running var", m.running_var.double().numpy(), var, bv)
    m.eval()
    rm, rv = m.running_mean.double().numpy(), m.running_var.double().numpy()
    y = m(torch.tensor(x, dtype=DTYPES[dtype])).detach().double().numpy()
    tol.assert_close("inference y", y, ref.batch_norm_infer(x, gamma, beta, rm, rv, eps=1e-5),
                     tol.infer_forward(x, gamma, beta, rm, rv, 1e-5, dtype))


# a loader of unequal batches: 2, 7, 3 and 12 images of 3 channels, 4×4, each batch its own mean
UPDATE_BN_SHAPES = [(2, 3, 4, 4), (7, 3, 4, 4), (3, 3, 4, 4), (12, 3, 4, 4)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_swa_update_bn_is_the_cumulative_average_not_the_whole_data(dtype):
    """What torch.optim.swa_utils.update_bn computes (torch/optim/swa_utils.py of torch 2.13.0): under
    no_grad (371) it resets every BatchNorm's running statistics to 0, 1 and its count to 0 (404-407, with
    batchnorm.py:91-97), puts the model in train() (413), sets momentum=None (414-415), calls the model on
    each batch, the first element of a list or tuple (417-423), then gives back each momentum (425-426)
    and the model's mode (427). So the k-th batch weighs 1/k (batchnorm.py:191-192): the result is the
    oracle's cumulative average of the per-batch statistics within its bound (measured: 3.3e-16 in the
    mean, 0.0054 of its bound, 1.8e-15 in the variance, 0.016 of its bound; in float32 4.4e-8 and 1.4e-7,
    0.0015 and 0.0022), whatever the running statistics were before. It is not the
    statistics of the whole data: the gap equals reference.options.average_gap (the formula, within the
    bound) and is a convention. On this loader the variance gap is −0.35 … −0.40 of the whole data's
    (unbiased) variance (the spread of the batch means is left out, the small batches weigh as much as
    the large), the mean gap −0.10 … −0.14 of its std."""
    from torch.optim.swa_utils import update_bn
    batches = _batches(UPDATE_BN_SHAPES, seed=8, dtype=dtype)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3, dtype=DTYPES[dtype])).eval()
    bn = model[0]
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
    update_bn([(torch.tensor(x, dtype=DTYPES[dtype]), i) for i, x in enumerate(batches)], model)   # (input, label)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == len(batches) and not model.training
    got_m, got_v = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    mean, var, bm, bv = np.zeros(3), np.ones(3), 0.0, 0.0
    for k, (x, (nm, nv)) in enumerate(zip(batches, opt.cumulative_running_stats(batches, mean, var, unbiased=True)), 1):
        dm, dv = tol.running_stats(x, mean, var, nm, nv, 1.0 / k, dtype)
        bm, bv, mean, var = bm + dm, bv + dv, nm, nv
    tol.assert_close("update_bn mean", got_m, mean, bm)
    tol.assert_close("update_bn var", got_v, var, bv)
    wm, wv = opt.whole_data_stats(batches, unbiased=True)
    gm, gv = opt.average_gap(batches, unbiased=True)
    tol.assert_close("mean gap", got_m - wm, gm, bm + 1e-14 * np.abs(wm))
    tol.assert_close("var gap", got_v - wv, gv, bv + 1e-14 * wv)
    rel_var, rel_mean = (got_v - wv) / wv, np.abs(got_m - wm) / np.sqrt(wv)
    assert np.all((-0.45 < rel_var) & (rel_var < -0.3)) and np.all((0.09 < rel_mean) & (rel_mean < 0.15)), \
        (rel_var, rel_mean)


def test_lazy_batch_norm_infers_on_its_first_call():
    """LazyBatchNorm2d holds no tensors until its first call (num_features 0, UninitializedParameter and
    UninitializedBuffer: batchnorm.py:231-273). The first call's forward pre-hook (torch/nn/modules/lazy.py:178)
    runs initialize_parameters (lazy.py:263): num_features = x.shape[1], weight, bias and the running
    statistics materialized in the constructor's dtype, not the input's (parameter.py:145-147), at 1, 0, 0, 1
    (batchnorm.py:280-303), and the module becomes a BatchNorm2d (lazy.py:271); then the call runs as that
    layer. The inference happens before the rank check: a 3-D first call raises and still leaves a
    BatchNorm2d of its width (batchnorm.py:177); a float64 first call into a float32 layer raises too."""
    x = _batches([(4, 3, 2, 2)], seed=9)[0]
    m = torch.nn.LazyBatchNorm2d(momentum=0.5, dtype=torch.float64)
    assert m.num_features == 0 and isinstance(m.weight, torch.nn.UninitializedParameter)
    y = m(torch.tensor(x))
    assert type(m) is torch.nn.BatchNorm2d and m.num_features == 3 and m.weight.dtype == torch.float64
    np.testing.assert_array_equal(m.weight.detach().numpy(), np.ones(3))
    np.testing.assert_array_equal(m.bias.detach().numpy(), np.zeros(3))
    ry, bmean, bvar = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=1e-5)
    tol.assert_close("first-call y", y.detach().numpy(), ry, tol.train_forward(x, np.ones(3), np.zeros(3), 1e-5,
                                                                               "float64"))
    em, ev = ref.update_running_stats(np.zeros(3), np.ones(3), bmean, bvar, 16, new_batch_weight=0.5, unbiased=True)
    bm, bv = tol.running_stats(x, np.zeros(3), np.ones(3), em, ev, 0.5, "float64")
    tol.assert_close("running mean", m.running_mean.numpy(), em, bm)
    tol.assert_close("running var", m.running_var.numpy(), ev, bv)
    wrong_rank = torch.nn.LazyBatchNorm2d()
    with pytest.raises(ValueError, match="expected 4D input"):
        wrong_rank(torch.zeros(4, 5, 2))
    assert type(wrong_rank) is torch.nn.BatchNorm2d and wrong_rank.num_features == 5
    with pytest.raises(RuntimeError, match="mixed dtype"):
        torch.nn.LazyBatchNorm2d()(torch.tensor(x))


def test_lazy_path_loads_a_state_set_before_the_first_call():
    """torch.builtin+lazy: a state set before the first call is loaded after the layer's own inference (a
    forward pre-hook behind the layer's); the first call is then the oracle's, and the layer a BatchNorm2d."""
    from equiv.registry import load
    x = _batches([(4, 3, 2, 2)], seed=10)[0]
    a = load("torch.builtin+lazy")(3, 4, dtype="float64", new_batch_weight=0.1)
    state = dict(gamma=np.array([2.0, -1.0, 0.5]), beta=np.array([0.1, 0.2, 0.3]), running_mean=np.zeros(3),
                 running_var=np.ones(3))
    a.set_state(**state)
    assert isinstance(a.module, torch.nn.LazyBatchNorm2d)
    y = a.forward_infer(x)
    assert type(a.module) is torch.nn.BatchNorm2d and a.module.num_features == 3
    ry = ref.batch_norm_infer(x, state["gamma"], state["beta"], np.zeros(3), np.ones(3), eps=1e-5)
    tol.assert_close("y", y, ry, tol.infer_forward(x, state["gamma"], state["beta"], np.zeros(3), np.ones(3), 1e-5,
                                                  "float64"))
    assert all(np.array_equal(v, state[k]) for k, v in a.get_state().items())


@pytest.mark.parametrize("d", KNOWN, ids=lambda d: d.id)
def test_option_witness_lies_in_its_region(d):
    assert d.region(d.witness, d.witness_property) and d.witness.options


@pytest.mark.parametrize("d", [pytest.param(d, marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                                                       reason=d.reason)) for d in KNOWN],
                         ids=lambda d: d.id)
def test_option_witness_diverges(d):
    from equiv.registry import load
    for name in d.implementations:
        PROPERTIES[d.witness_property].check(load(name), d.witness, "cpu")
