"""BN-LeNet through the routes that take a whole network (``Route.nets``): the net in float32, its
parameters and running statistics those of the float64 reference after four training steps
(reference/lenet.py, synthetic data), made eval-mode and handed to the route whole; its logits against
the reference's inference forward and against the same net run eagerly.

The bound is the lockstep's one-step tolerance (equiv.lenet.lockstep.tolerance: every layer's rounding
in the dtype, K·depth·growth(256)·u, plus the reference's float64 sums). Folding does not add to it: it
trades the BatchNorm's roundings on the activation (subtract the mean, scale by rsqrt(var + eps)·γ, add
β) for as many in the weights and bias (rsqrt, γ·rsqrt, W·scale, (b − mean)·scale + β), each of
relative size u where the running statistics are those of a trained net (no dead channel: the
single-layer route tests draw those, tests/test_routes_*.py). Against eager torch: the sum of both."""
import pytest

from equiv import registry
from equiv.routes import ROUTES

torch = pytest.importorskip("torch", reason="BN-LeNet through the torch routes needs torch: pip install torch")

BATCH = 96
NET_ROUTES = sorted(n for n, r in ROUTES.items() if "torch.builtin" in r.nets)


@pytest.fixture(scope="module")
def trained():
    """(x, the reference's inference logits, the eval-mode torch.builtin BN-LeNet in float32 holding the
    reference's parameters and running statistics after four steps, its eager logits)."""
    from equiv import lenet
    from equiv.lenet import synthetic
    from equiv.lenet import torch_net as tn
    from reference import lenet as ref
    x, y = synthetic(BATCH, 1)
    conv = lenet.CONVENTIONS["torch.builtin"]
    params, state = ref.init_params(1), ref.init_state()
    for i in range(0, 64, 16):
        _, grads, state, _ = ref.loss_and_grads(params, state, x[i:i + 16], y[i:i + 16], **conv)
        params = ref.sgd_step(params, grads, 0.1)
    logits, _, _ = ref.forward(params, state, x, training=False, **conv)
    net = tn.build("builtin", "float32", "cpu")
    tn.load_params(net, params)
    tn._set_state(net, state)
    net.eval()
    return x, logits, net, _logits(net, x)


def _logits(model, x):
    with torch.no_grad():
        return model(torch.tensor(x, dtype=torch.float32)).to(torch.float64).numpy()


def test_every_route_that_takes_a_net_is_run_here():
    assert NET_ROUTES == ["torch.builtin+ao_fuse_modules", "torch.builtin+fx_fuse", "torch.builtin+inductor_freezing"]


@pytest.mark.parametrize("name", NET_ROUTES)
def test_bn_lenet_through_the_route_within_the_lockstep_bound(name, trained):
    from equiv.lenet import lockstep
    from equiv.routes import torch_fold as tf
    x, logits, net, eager = trained
    tol = lockstep.tolerance("float32", BATCH)
    made = registry.load_route(name)(net)
    out = _logits(made, x)
    if isinstance(made, tf.Frozen):   # inductor folds the convolutions' BatchNorms, keeps the Linears' (1-D)
        assert any("batch_norm" in c for c in made.code), "inductor folded the Linear → BatchNorm1d too"
    else:
        assert not tf.has_batch_norm(made), f"{name} left a BatchNorm module in BN-LeNet"
    assert lockstep.rel_error(eager, logits) <= tol
    assert lockstep.rel_error(out, logits) <= tol, f"{name}: logits off the reference by " \
                                                   f"{lockstep.rel_error(out, logits):.3g} > {tol:.3g}"
    assert lockstep.rel_error(out, eager) <= 2 * tol
