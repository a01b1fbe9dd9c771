"""Each execution path (equiv.paths) against its eager counterpart on Hypothesis cases: outputs,
gradients and the whole state (gamma, beta, running mean and variance) after every one of k training
steps, then the inference output from eager's state loaded into both, under the sum of the two
implementations' bounds (both compute in the case's dtype, so twice the bound of equiv.tolerance).
The eager counterpart is the base adapter in the same dtype (for torch.builtin+bfloat16: bfloat16
parameters and buffers, where the path keeps them in float32). Cases in a documented region of
either are left out, as the properties do.

Below, the findings about what a path does that the protocol does not express (whose buffers an
exported or functional call changes, momentum=None under torch.compile, autocast's dtypes), each
with the torch source line responsible.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings

import reference as ref
from equiv import registry
from equiv import tolerance as tol
from equiv.core import FrameworkMissing
from equiv.dtypes import representable
from equiv.known import excluded
from equiv.paths import PATHS
from equiv.properties import Rejected, build
from equiv.pytest_plugin import selected
from equiv.strategies import cases, profile_for

STEPS = 3
_PROPS = ("train_forward", "gradients", "running_stats", "state_after_calls", "infer_forward")


def pytest_generate_tests(metafunc):
    if "path_name" in metafunc.fixturenames:
        metafunc.parametrize("path_name", [n for n in selected(metafunc.config) if n in PATHS])


def _load(name):
    try:
        return registry.load(name)
    except FrameworkMissing as e:
        pytest.skip(str(e))


def compare_on(P, E, case, device="cpu"):
    """Run path P and eager E side by side on ``case``; returns the largest error/(sum of bounds)."""
    for A in (P, E):
        for prop in _PROPS:
            if excluded(A, prop, case) is not None:
                raise Rejected()
    p, e = build(P, case, device), build(E, case, device)
    eps, w = e.eps, e.new_batch_weight
    assert (p.eps, p.new_batch_weight) == (eps, w)
    worst, mean, var = 0.0, case.running_mean, case.running_var
    bound_m = bound_v = 0.0
    unbiased = E.conventions.running_var == "unbiased"
    # a path that builds another kernel (ExecutionPath.inherits False) and declares another running variance
    # (tf_keras+fused: unbiased, where the default layer keeps the biased one on 2-D and float64 input) is
    # compared with its base on everything else
    keys = ("gamma", "beta", "running_mean", "running_var")
    if not PATHS[P.name].inherits and P.conventions.running_var != E.conventions.running_var:
        keys = keys[:3]
    for i in range(case.steps):
        x = case.batch(i)
        _, bmean, bvar = ref.batch_norm_train(x, case.gamma, case.beta, eps=eps)
        new_mean, new_var = ref.update_running_stats(mean, var, bmean, bvar, case.count,
                                                     new_batch_weight=w, unbiased=unbiased)
        if not all(np.isfinite(v).all() for v in (new_mean, new_var)):
            raise Rejected()
        out_p, out_e = p.train_step(x, case.dy), e.train_step(x, case.dy)
        by = tol.train_forward(x, case.gamma, case.beta, eps, case.dtype)
        bdx, bdg, bdb = tol.gradients(x, case.gamma, case.dy, eps, case.dtype)
        for what, a, b, bound in zip(("y", "dx", "dgamma", "dbeta"), out_p, out_e, (by, bdx, bdg, bdb)):
            worst = max(worst, tol.assert_close(f"{what} at step {i + 1}", a, b, 2 * bound))
        dm, dv = tol.running_stats(x, mean, var, new_mean, new_var, w, case.dtype)
        bound_m, bound_v, mean, var = bound_m + dm, bound_v + dv, new_mean, new_var
        sp, se = p.get_state(), e.get_state()
        for k, bound in zip(keys, (0.0, 0.0, bound_m, bound_v)):
            worst = max(worst, tol.assert_close(f"{k} after step {i + 1}", sp[k], se[k], 2 * bound))
    s = e.get_state()                      # inference from one and the same state
    p.set_state(**s)
    y = ref.batch_norm_infer(case.x, s["gamma"], s["beta"], s["running_mean"], s["running_var"], eps=eps)
    if not representable(case.dtype, y):
        raise Rejected()
    bound = tol.infer_forward(case.x, s["gamma"], s["beta"], s["running_mean"], s["running_var"], eps, case.dtype)
    return max(worst, tol.assert_close("inference y", p.forward_infer(case.x), e.forward_infer(case.x), 2 * bound))


def test_path_agrees_with_eager(path_name, device):
    P = _load(path_name)
    E = _load(PATHS[path_name].base)
    dtypes = [d for d in P.dtypes if d in E.dtypes]
    seen = []

    @settings(settings.get_profile(profile_for(P)))
    @given(case=cases(dtypes=dtypes, max_steps=STEPS))
    def check(case):
        try:
            seen.append(compare_on(P, E, case, device))
        except Rejected:
            assume(False)

    check()
    assert seen, "no case ran"


# --- findings --------------------------------------------------------------------------------
torch_only = pytest.mark.skipif(not registry.framework_installed("torch.builtin"), reason="needs torch")


def _x(shape=(8, 3), seed=0):
    import torch
    return torch.tensor(np.random.default_rng(seed).standard_normal(shape) * 2 + 1)


@torch_only
def test_compile_momentum_none_breaks_the_graph_and_matches_eager():
    """Finding: BatchNorm(momentum=None) (the cumulative average, factor 1/num_batches_tracked) does not
    compile as one graph: torch/nn/modules/batchnorm.py:192 (torch 2.13.0), `exponential_average_factor =
    1.0 / float(self.num_batches_tracked)`, turns a buffer into a Python float. fullgraph=True refuses it
    (a data-dependent guard); the default torch.compile breaks the graph there and runs the update
    eagerly: over three steps the running statistics equal eager's bit for bit."""
    import torch
    xs = [_x(seed=s) for s in range(3)]
    eager = torch.nn.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    for x in xs:
        eager(x)
    strict = torch.compile(torch.nn.BatchNorm1d(3, momentum=None, dtype=torch.float64), fullgraph=True)
    with pytest.raises(Exception, match="data-dependent"):
        strict(xs[0])
    m = torch.nn.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    compiled = torch.compile(m)
    for x in xs:
        compiled(x)
    assert int(m.num_batches_tracked) == 3
    assert torch.equal(m.running_mean, eager.running_mean) and torch.equal(m.running_var, eager.running_var)
    np.testing.assert_allclose(m.running_mean.numpy(), np.mean([x.numpy().mean(axis=0) for x in xs], axis=0),
                               rtol=1e-12)


@torch_only
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_export_program_changes_the_layers_own_buffers(mode):
    """Finding: torch.export.export (torch 2.13.0, the default non-strict training IR) keeps
    aten.batch_norm with its in-place running-statistics update, and ExportedProgram.module() holds
    the very tensors of the exported layer (ep.state_dict too). A training-mode program therefore
    changes running_mean, running_var and num_batches_tracked of the original layer, in place,
    exactly as eager does; an eval-mode program changes nothing. The mode is frozen at export:
    .train()/.eval() on the exported module raise NotImplementedError ("Calling train() / eval() is
    not supported yet.", torch/export/exported_program.py:1481 and :1484 in torch 2.13.0)."""
    import torch
    x = _x((4, 3, 2, 2))
    layer = getattr(torch.nn.BatchNorm2d(3, momentum=0.3, dtype=torch.float64), mode)()
    eager = getattr(torch.nn.BatchNorm2d(3, momentum=0.3, dtype=torch.float64), mode)()
    ep = torch.export.export(layer, (x,))
    gm = ep.module()
    assert gm.running_mean is layer.running_mean and ep.state_dict["running_var"] is layer.running_var
    assert torch.equal(gm(x), eager(x))
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(layer, k), getattr(eager, k)), k
    assert int(layer.num_batches_tracked) == (1 if mode == "train" else 0)
    with pytest.raises(NotImplementedError, match="not supported"):
        gm.eval() if mode == "train" else gm.train()


@torch_only
def test_functional_call_runs_through_torch_func_functional_call():
    """torch.builtin+functional_call wraps the layer in torch_paths._Functional, which calls
    torch.func.functional_call with explicit tensors (not the F.batch_norm wrapper of the options)."""
    from equiv.paths import torch_paths
    a = registry.load("torch.builtin+functional_call")(3, 2, dtype="float64", new_batch_weight=0.1, eps=1e-5)
    assert type(a.module) is torch_paths._Functional and set(a.module.tensors) >= {"weight", "bias"}


@torch_only
def test_functional_call_updates_the_explicit_buffers_in_place():
    """Finding: torch.func.functional_call(module, tensors, (x,)) in training mode writes the new
    running statistics (and num_batches_tracked + 1) into the tensors passed in, in place, and leaves
    the module's own buffers as they were: the caller owns the state, and must keep the dict it
    passed (torch/nn/utils/stateless.py swaps the given tensors into the module for the call; the
    in-place update of aten.batch_norm lands in them)."""
    import torch
    x = _x()
    m = torch.nn.BatchNorm1d(3, momentum=0.3, dtype=torch.float64)
    eager = torch.nn.BatchNorm1d(3, momentum=0.3, dtype=torch.float64)
    tensors = {k: v.detach().clone() for k, v in [*m.named_parameters(), *m.named_buffers()]}
    before = {k: v.clone() for k, v in tensors.items()}
    torch.func.functional_call(m, tensors, (x,))
    eager(x)
    assert torch.equal(tensors["running_mean"], eager.running_mean)
    assert torch.equal(tensors["running_var"], eager.running_var)
    assert int(tensors["num_batches_tracked"]) == 1
    assert torch.equal(m.running_mean, before["running_mean"]) and int(m.num_batches_tracked) == 0


@torch_only
def test_autocast_leaves_batch_norm_in_the_input_dtype():
    """Finding: torch.autocast("cpu", dtype=torch.bfloat16) has no rule for batch_norm (the CPU
    lower-precision and fp32 lists of aten/src/ATen/autocast_mode.cpp do not name it): a float32 input
    gives a float32 output bit-identical to eager, and a bfloat16 input (what an autocast convolution
    hands over) gives a bfloat16 output, with the batch statistics accumulated and the running
    statistics kept in the module's float32 (aten/src/ATen/native/cpu/batch_norm_kernel.cpp, the mixed
    bfloat16/float32 kernels: opmath float)."""
    import torch
    x = _x().float()
    m, eager = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        conv_like = torch.nn.Linear(3, 3)(x)
        yb = torch.nn.BatchNorm1d(3)(conv_like)
    assert y.dtype == torch.float32 and torch.equal(y, eager(x))
    assert torch.equal(m.running_var, eager.running_var)
    assert conv_like.dtype == torch.bfloat16 and yb.dtype == torch.bfloat16
    m2 = torch.nn.BatchNorm1d(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m2(x.bfloat16())
    assert m2.running_mean.dtype == torch.float32


@torch_only
def test_bfloat16_input_with_float32_buffers_is_more_accurate_than_bfloat16_buffers():
    """Finding (a path more accurate than its eager counterpart): with float32 parameters and buffers
    the CPU kernel for bfloat16 input (aten/src/ATen/native/cpu/batch_norm_kernel.cpp, the mixed-type
    path: statistics in opmath float) keeps the running statistics in float32; eager bfloat16 rounds
    them to bfloat16 (8 bits) at every step. Measured after 3 steps of new-batch weight 0.1 on a
    (16, 3) batch of |mean|/std ~3: running-mean error 1.9e-7 against 1.1e-2 of eager, 6e4× smaller.
    The output is bfloat16 either way."""
    from equiv.strategies import Case
    P, E = _load("torch.builtin+bfloat16"), _load("torch.builtin")
    case = Case(dtype="bfloat16", shape=(16, 3), seed=3, log10_scale=0.0, log10_offset=0.5,
                constant_channel=False, eps=1e-5, new_batch_weight=0.1, steps=3)
    errors = {}
    for A in (P, E):
        a = build(A, case, "cpu")
        mean, var = case.running_mean, case.running_var
        for i in range(case.steps):
            x = case.batch(i)
            a.train_step(x, case.dy)
            _, bm, bv = ref.batch_norm_train(x, case.gamma, case.beta, eps=1e-5)
            mean, var = ref.update_running_stats(mean, var, bm, bv, case.count, new_batch_weight=0.1, unbiased=True)
        errors[A.name] = float(np.abs(a.get_state()["running_mean"] - mean).max())
    assert errors[P.name] < 1e-6 and errors[E.name] > 5e-3, errors
