"""Shared checks of the BN-LeNet lockstep tests (one per framework file)."""
import json
import types

from equiv import lenet
from equiv.known import net_findings, shows
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


def assert_lockstep(r, label, dtype, data, quantities):
    """The lockstep result ``r`` agrees with the reference, or diverges exactly where documented."""
    assert len(r["max_rel_error"]) == quantities       # every quantity was compared
    assert len(r["per_step"]) == r["steps"]
    assert r["conventions"] == lenet.CONVENTIONS[label]
    known = net_findings(label, dtype, data)
    f = r["first_divergence"]
    if known:
        (finding,) = known
        assert f is not None, f"{finding.id} no longer shows: remove it from equiv.known.NET_FINDINGS"
        assert shows(finding, r), (finding.id, f)
        return
    assert f is None, f
    assert r["passed"]
    for step in r["per_step"]:                         # within the step's tolerance, every step
        assert step["tolerance"] == r["tolerance"] * step["amplification"]
        assert max(step["rel_error"].values()) <= step["tolerance"], step["step"]
    assert r["per_step"][0]["amplification"] == 1.0
    json.dumps(r, allow_nan=False)                     # JSON-able, no NaN/inf
