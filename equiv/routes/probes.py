"""Measure a route's conventions after conversion by running what it makes, as ``equiv.probes`` measures
an adapter's: per layer of the route (Conv or Linear → BatchNorm, or the BatchNorm alone), on one float32
state built so that each convention is the only unknown,

- ``eps``: the eps the converted model uses, solved on a dead channel (running variance 0, where the
  output is gamma·(z − mean)/sqrt(eps) + beta), given PROBE_EPS, which is no framework's default: a
  route that falls back to its own default (1e-5, 1e-3, 2e-5, 1e-4) or drops eps shows;
- ``mode``: what a plain call of the converted model does: "inference" (the running statistics) or
  "training" (the batch's);
- ``folded``: whether no BatchNorm is left (the tool family's own inspection: modules, graph nodes, ops);
- ``training``: what the route makes of the same source in training mode ("batch statistics": the
  training forward survives; "inference": it silently becomes the inference layer; "neither": the output
  is neither forward; "refused: ...": the tool says no),
  and where what it makes outputs the running statistics (an ONNX training node, jax2tf's mutable
  batch statistics), the new-batch weight and the running-variance estimator of that training step,
  ``training_updates``, against the source's own.

Each tool family's module has ``output(route, state, layer, training=False) -> (outputs, folded)``:
the route applied to the source it builds from a FoldState and run on the state's input; ``outputs``
maps each artifact the route makes ("" for one; onnx2tf: "keras", "saved_model", "tflite") to its output
(NCHW float64). ``measure(route)`` returns one record; ``changes(route, record)`` says in words what
differs from the source (tests/test_routes_probes.py holds each route's record to its declaration).
"""
import importlib
from dataclasses import replace

import numpy as np

from reference.batch_norm import batch_norm_infer, batch_norm_train

PROBE_EPS = 3e-3          # no framework's default eps
DEAD = 0                  # the channel whose running variance is 0: eps alone decides its scale
RTOL = 0.05               # eps solved to ~1e-5 in float32, ~1e-2 in bfloat16; a framework default is ≥ 30 % away
MODE_RTOL = 0.05          # the two modes' outputs differ by O(1) on the probe state; bfloat16 rounds to 4e-3


def _reduce(z):
    return (0,) + tuple(range(2, z.ndim))


def probe_state(layer):
    """The float32 state of ``layer``: running statistics far from the batch's (mean + 2·std, 4·var), so
    that the two modes differ by O(1); channel DEAD's running variance 0; eps PROBE_EPS; no layer bias (so
    that tf2onnx folds the conv as it declares)."""
    from equiv.dtypes import round_to
    from equiv.routes.states import FoldState
    state = FoldState(layer="conv" if layer == "bn" else layer, kind="ordinary", dtype="float32", seed=0,
                      bias=False, eps=PROBE_EPS)
    z = state.layer_out(state.x, state.w, state.b)
    mean, var = z.mean(axis=_reduce(z)), z.var(axis=_reduce(z))
    running_var = 4.0 * var
    running_var[DEAD] = 0.0
    arrays = dict(state._arrays(), running_mean=round_to(mean + 2.0 * np.sqrt(var), "float32"),
                  running_var=round_to(running_var, "float32"),
                  gamma=round_to(np.linspace(0.5, 1.5, len(var)), "float32"))
    return replace(state, arrays=arrays)


def _input(state, layer):
    """The float64 input z of the BatchNorm (the state's layer output; for "bn", rounded as the source takes it)."""
    from equiv.routes.states import bn_input
    return bn_input(state) if layer == "bn" else state.layer_out(state.x, state.w, state.b)


def _close(y, ref, channels):
    y, ref = np.moveaxis(y, 1, 0)[channels], np.moveaxis(ref, 1, 0)[channels]
    return bool(np.all(np.isfinite(y))) and float(np.max(np.abs(y - ref))) <= MODE_RTOL * float(np.max(np.abs(ref)))


def mode_of(y, state, layer):
    """"inference", "training" or "other": the output on every channel but DEAD against the inference and
    the training oracle."""
    z, live = _input(state, layer), [c for c in range(state.gamma.size) if c != DEAD]
    if _close(y, batch_norm_infer(z, **state.bn, eps=state.eps), live):
        return "inference"
    if _close(y, batch_norm_train(z, state.gamma, state.beta, eps=state.eps)[0], live):
        return "training"
    return "other"


def eps_of(y, state, layer):
    """The eps solved on channel DEAD: eps = (gamma·(z − mean)/(y − beta))², the median over the elements
    where z − mean is at least a tenth of its largest."""
    z = np.moveaxis(_input(state, layer), 1, 0)[DEAD].ravel()
    y = np.moveaxis(y, 1, 0)[DEAD].ravel()
    d = z - state.running_mean[DEAD]
    keep = np.abs(d) >= 0.1 * np.max(np.abs(d))
    with np.errstate(divide="ignore", invalid="ignore"):
        est = (state.gamma[DEAD] * d[keep] / (y[keep] - state.beta[DEAD])) ** 2
    return float(f"{np.median(est):.3g}") if np.all(np.isfinite(est)) else float("nan")


def _output(route, state, layer, training=False):
    return importlib.import_module(route.module).output(route, state, layer, training)


def _first_line(e):
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:160]


def training_of(route):
    """What the route makes of its source in training mode, on the route's BatchNorm alone where it takes
    one, else on its first layer: ("batch statistics", "inference" or "neither", {artifact: update_of}) for
    the artifacts that output the running statistics), or "refused: <the error>"."""
    layer = "bn" if "bn" in route.layers else route.layers[0]
    state = probe_state(layer)
    try:
        outputs, _ = _output(route, state, layer, training=True)
    except Exception as e:   # the tool's refusal is the measurement
        return f"refused: {_first_line(e)}"
    modes = {mode_of(y[0] if isinstance(y, tuple) else y, state, layer) for y in outputs.values()}
    mode = modes.pop() if len(modes) == 1 else "differs: " + ", ".join(sorted(modes))
    mode = {"training": "batch statistics", "other": "neither"}.get(mode, mode)
    updates = {t: update_of(y[1:], state, layer) for t, y in outputs.items() if isinstance(y, tuple)}
    return mode, updates


def update_of(stats, state, layer):
    """The new-batch weight w and the running-variance estimator of one training step, solved from the running
    mean and variance it outputs: new mean = (1 − w)·mean + w·batch mean; new var = (1 − w)·var + w·v with v
    the batch's biased variance or m/(m − 1) times it (m values per channel)."""
    z = _input(state, layer)
    red = _reduce(z)
    m = z.size // z.shape[1]
    batch_mean, batch_var = z.mean(axis=red), z.var(axis=red)
    new_mean, new_var = (np.asarray(a, dtype=np.float64).ravel() for a in stats)
    w = float(np.median((new_mean - state.running_mean) / (batch_mean - state.running_mean)))
    v = np.median((new_var - (1 - w) * state.running_var) / (w * batch_var)) if w else float("nan")
    return {"new_batch_weight": float(f"{w:.3g}"),
            "running_var": "unbiased" if abs(v - m / (m - 1)) < abs(v - 1) else "biased"}


def measure(route):
    """One record of a route's measured conventions: per layer (and artifact) its eps and mode, the layers
    it folds, and what it makes of a training-mode source."""
    rec = {"route": route.name, "eps": {}, "mode": {}, "folded": []}
    for layer in route.layers:
        state = probe_state(layer)
        outputs, folded = _output(route, state, layer)
        for target, y in outputs.items():
            key = f"{layer} {target}".strip()
            rec["mode"][key] = mode_of(y, state, layer)
            rec["eps"][key] = eps_of(y, state, layer) if rec["mode"][key] == "inference" else "n/a"
        if folded:
            rec["folded"].append(layer)
    training = training_of(route)
    rec["training"], rec["training_updates"] = (training, {}) if isinstance(training, str) else training
    return rec


def source_update(route):
    """What the source's own training step does to its running statistics (its declared conventions:
    equiv.conventions.DECLARED), as update_of says it: the probes build the source with its default momentum."""
    from equiv.conventions import DECLARED
    conv = DECLARED[route.source_adapter]
    return {"new_batch_weight": conv.default_new_batch_weight, "running_var": conv.running_var}


def eps_kept(value):
    return isinstance(value, float) and abs(value - PROBE_EPS) <= RTOL * PROBE_EPS


def changes(route, rec):
    """What the route changes of its source, in words (an eval-mode source with eps PROBE_EPS, and the same
    source in training mode): [] when eps, the inference mode and the training mode all survive."""
    out = [f"{key}: eps {PROBE_EPS:g} became {value:g}" for key, value in rec["eps"].items()
           if value != "n/a" and not eps_kept(value)]
    out += [f"{key}: an eval-mode source became a {mode} call" for key, mode in rec["mode"].items()
            if mode != "inference"]
    source = source_update(route)
    for target, update in rec.get("training_updates", {}).items():
        for key, value in update.items():
            same = np.isclose(value, source[key], rtol=RTOL) if isinstance(value, float) else value == source[key]
            if not same:
                out.append(f"{target or 'the model'}: a training step's {key.replace('_', ' ')} {source[key]} "
                           f"became {value}")
    training = rec["training"]
    if training == "inference":
        out.append("a training-mode source silently became the inference layer (running statistics)")
    elif training.startswith(("refused", "neither", "differs")):
        out.append(f"a training-mode source: {training}")
    return out
