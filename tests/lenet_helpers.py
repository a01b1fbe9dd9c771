"""Shared checks of the BN-LeNet lockstep tests (one per framework file)."""
import types

from reference import lenet as ref


def patched(module, **overrides):
    """An implementation module with some protocol functions replaced (a planted difference)."""
    return types.SimpleNamespace(**{**vars(module), **overrides})


def assert_named_at(r, where, ratio=None):
    """The lockstep result ``r`` first leaves tolerance at ``where`` = (step, kind, layer).

    With ``ratio`` (an activation): every layer before it is within tolerance at that step, the
    layer's δ exceeds ``ratio`` × the tolerance, and LEMON's rate of change R peaks there: the
    layer that introduces the difference is named, not just the output.
    """
    f = r["first_divergence"]
    assert f is not None and (f["step"], f["kind"], f["layer"]) == tuple(where), f
    assert not r["passed"]
    if ratio is None:
        return
    step, layer = r["per_step"][where[0] - 1], where[2]
    tol = r["tolerance"]
    for upstream in ref.ACTIVATIONS[:ref.ACTIVATIONS.index(layer)]:
        assert step["delta"][upstream] <= tol, upstream
    assert step["delta"][layer] > ratio * tol
    assert step["rate"][layer] == max(step["rate"][k] for k in ref.ACTIVATIONS[1:])
