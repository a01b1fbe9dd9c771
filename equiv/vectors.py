"""Golden vectors: a fixed set of cases with the oracle's answers, stored as files.

``generate(out_dir)`` builds about forty cases from the oracle (``reference``) and writes
one ``<name>.npz`` per case plus ``index.json``: the settings of each case (the fields of
``equiv.strategies.Case``, the mode and a description) and the SHA-256 of every stored
array (of its little-endian float64 bytes in C order). All arrays are float64; for a
float32 case the inputs are rounded to float32 first, as ``equiv.dtypes.round_to`` does.

Modes and what a case stores:

- ``train``:     x, gamma, beta -> y; bound_y                                (train_forward)
- ``infer``:     x, gamma, beta, running_mean, running_var -> y; bound_y     (infer_forward)
- ``running``:   x_step1 … x_step3, dy, gamma, beta, running_mean, running_var -> after each
                 step k: running_mean_step{k}, running_var_biased_step{k},
                 running_var_unbiased_step{k}, and their bounds bound_*_step{k} (running_stats)
- ``gradients``: x, dy, gamma, beta -> dx, dgamma, dbeta; bound_dx, bound_dgamma, bound_dbeta
                 (gradients)

Bounds come from ``equiv.tolerance`` for the case's dtype; running-stat bounds add up over
the steps, as in ``equiv.properties.running_stats``. ``check`` runs one stored case against
an adapter. ``equiv vectors [--out DIR]`` (``equiv/cli/generate.py``) regenerates the
files, into ``results/vectors`` unless told another folder (the committed ones:
``reference/data/vectors``); it never replaces an index with fewer cases.
"""
import hashlib
import json
import os
from dataclasses import fields
from decimal import Decimal

import numpy as np

import reference as ref
from equiv import io
from equiv import tolerance as tol
from equiv.core import Unsupported, same_weight
from equiv.strategies import Case

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "reference", "data", "vectors")
INDEX = "index.json"
MODES = {"train": "train_forward", "infer": "infer_forward", "running": "running_stats",
         "gradients": "gradients"}
ESTIMATORS = ("biased", "unbiased")
CASE_FIELDS = [f.name for f in fields(Case) if f.name not in ("arrays", "options")]   # stored at default options

_2D, _4D = (8, 3), (4, 3, 5, 5)

# (name, mode, dtype, shape, settings that differ from the defaults, description)
SPECS = [(f"{mode}-{dt}-{len(shape)}d", mode, dtype, shape, {}, f"baseline {mode}, {dtype}, {len(shape)}-D")
         for mode in MODES for dtype, dt in (("float64", "f64"), ("float32", "f32")) for shape in (_2D, _4D)]
SPECS += [
    ("train-f64-batch2", "train", "float64", (2, 3), {}, "batch of two"),
    ("train-f32-batch2-4d", "train", "float32", (2, 2, 1, 1), {}, "batch of two, 4-D with H = W = 1"),
    ("gradients-f32-batch2", "gradients", "float32", (2, 3), {}, "batch of two"),
    ("running-f64-batch2", "running", "float64", (2, 3), {}, "batch of two: unbiased factor m/(m-1) = 2"),
    ("train-f64-zerovar", "train", "float64", (8, 3), dict(constant_channel=True), "channel 0 has zero variance"),
    ("train-f32-zerovar-4d", "train", "float32", (4, 3, 3, 3), dict(constant_channel=True),
     "channel 0 has zero variance"),
    ("gradients-f64-zerovar", "gradients", "float64", (8, 3), dict(constant_channel=True),
     "channel 0 has zero variance"),
    ("running-f32-zerovar", "running", "float32", (8, 3), dict(constant_channel=True),
     "channel 0 has zero variance"),
    ("train-f64-offset1e2", "train", "float64", (8, 3), dict(log10_offset=2.0), "|mean|/std ~ 1e2"),
    ("gradients-f32-offset1e2-4d", "gradients", "float32", (4, 2, 3, 3), dict(log10_offset=2.0),
     "|mean|/std ~ 1e2"),
    ("train-f32-offset1e4", "train", "float32", (16, 3), dict(log10_offset=4.0), "|mean|/std ~ 1e4"),
    ("train-f64-offset1e4-4d", "train", "float64", (4, 2, 3, 3), dict(log10_offset=4.0), "|mean|/std ~ 1e4"),
    ("gradients-f64-offset1e4", "gradients", "float64", (16, 3), dict(log10_offset=4.0), "|mean|/std ~ 1e4"),
    ("running-f32-offset1e4", "running", "float32", (8, 3), dict(log10_offset=4.0), "|mean|/std ~ 1e4"),
    ("train-f32-scale1e-3", "train", "float32", (8, 3), dict(log10_scale=-3.0), "data scale 1e-3"),
    ("gradients-f64-scale1e-3-4d", "gradients", "float64", (4, 2, 3, 3), dict(log10_scale=-3.0),
     "data scale 1e-3"),
    ("train-f64-scale1e3", "train", "float64", (8, 3), dict(log10_scale=3.0), "data scale 1e3"),
    ("gradients-f32-scale1e3", "gradients", "float32", (8, 3), dict(log10_scale=3.0), "data scale 1e3"),
    ("infer-f32-scale1e3", "infer", "float32", (8, 3), dict(log10_scale=3.0), "data scale 1e3"),
    ("train-f64-eps1e-12-zerovar", "train", "float64", (8, 3), dict(eps=1e-12, constant_channel=True),
     "eps 1e-12, channel 0 has zero variance"),
    ("gradients-f32-eps1e-12", "gradients", "float32", (8, 3), dict(eps=1e-12), "eps 1e-12"),
    ("train-f32-eps0.1-scale1e-3-4d", "train", "float32", (4, 3, 2, 2), dict(eps=0.1, log10_scale=-3.0),
     "eps 0.1 far above the variance (1e-6)"),
    ("running-f64-eps0.1", "running", "float64", (8, 3), dict(eps=0.1), "eps 0.1"),
    ("running-f64-weight0", "running", "float64", (8, 3), dict(new_batch_weight=0.0),
     "new-batch weight 0: running stats never move"),
    ("running-f32-weight1", "running", "float32", (8, 3), dict(new_batch_weight=1.0),
     "new-batch weight 1: running stats are the last batch's"),
    ("running-f32-weight0.5", "running", "float32", (8, 3), dict(new_batch_weight=0.5),
     "new-batch weight 0.5, exact in float32 (gluon keeps momentum as a float32)"),
    ("running-f64-weight1-4d", "running", "float64", (2, 2, 3, 3), dict(new_batch_weight=1.0),
     "new-batch weight 1: running stats are the last batch's"),
]
DEFAULTS = dict(log10_scale=0.0, log10_offset=None, constant_channel=False, eps=1e-5, new_batch_weight=0.1)


def sha256(a):
    """SHA-256 of an array's little-endian float64 bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f8").tobytes()).hexdigest()


class GoldenCase(Case):
    """A Case drawn the same on every machine: np.power's SIMD paths round 10**u differently (an ulp)
    across numpy releases and processors; decimal's power is computed in software, 28 digits, then
    rounded once to float64."""

    @staticmethod
    def pow10(u):
        one = lambda v: float(Decimal(10) ** Decimal(float(v)))  # noqa: E731
        return np.vectorize(one, otypes=[np.float64])(u) if np.ndim(u) else one(u)


def make_case(seed, mode, dtype, shape, overrides):
    settings = dict(DEFAULTS, **overrides)
    return GoldenCase(dtype=dtype, shape=tuple(shape), seed=seed, steps=3 if mode == "running" else 1, **settings)


def expected(case, mode):
    """The stored arrays of one case: inputs, the oracle's outputs and their bounds."""
    a = dict(gamma=case.gamma, beta=case.beta, running_mean=case.running_mean, running_var=case.running_var)
    g, b, eps, dt = case.gamma, case.beta, case.eps, case.dtype
    if mode == "train":
        a["x"] = x = case.x
        a["y"] = ref.batch_norm_train(x, g, b, eps=eps)[0]
        a["bound_y"] = tol.train_forward(x, g, b, eps, dt)
    elif mode == "infer":
        a["x"] = x = case.x
        a["y"] = ref.batch_norm_infer(x, g, b, case.running_mean, case.running_var, eps=eps)
        a["bound_y"] = tol.infer_forward(x, g, b, case.running_mean, case.running_var, eps, dt)
    elif mode == "gradients":
        a["x"], a["dy"] = x, dy = case.x, case.dy
        a["dx"], a["dgamma"], a["dbeta"] = ref.batch_norm_backward(x, g, dy, eps=eps)
        a["bound_dx"], a["bound_dgamma"], a["bound_dbeta"] = tol.gradients(x, g, dy, eps, dt)
    else:
        a["dy"] = case.dy
        for est in ESTIMATORS:
            mean, var, bound_m, bound_v = case.running_mean, case.running_var, 0.0, 0.0
            for i in range(case.steps):
                k = i + 1
                a[f"x_step{k}"] = x = case.batch(i)
                _, bmean, bvar = ref.batch_norm_train(x, g, b, eps=eps)
                new_mean, new_var = ref.update_running_stats(mean, var, bmean, bvar, case.count,
                                                              new_batch_weight=case.new_batch_weight,
                                                              unbiased=est == "unbiased")
                dm, dv = tol.running_stats(x, mean, var, new_mean, new_var, case.new_batch_weight, dt)
                bound_m, bound_v, mean, var = bound_m + dm, bound_v + dv, new_mean, new_var
                a[f"running_mean_step{k}"], a[f"bound_running_mean_step{k}"] = mean, bound_m
                a[f"running_var_{est}_step{k}"], a[f"bound_running_var_{est}_step{k}"] = var, bound_v
    out = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in sorted(a.items())}
    for k, v in out.items():
        assert np.all(np.isfinite(v)), (k, case)
    return out


def generate(out_dir):
    """Write every case's .npz and index.json into out_dir (each file atomically); returns the
    index (a dict). Refused (``io.WouldLoseData``) when out_dir's index lists cases this
    generator does not make."""
    old = io.read_json(os.path.join(out_dir, INDEX))
    if isinstance(old, dict):
        names = {spec[0] for spec in SPECS}
        lost = sorted(r.get("name", "?") for r in old.get("cases", []) if r.get("name") not in names)
        if lost:
            raise io.WouldLoseData(f"{os.path.join(out_dir, INDEX)} lists cases this generator does not make "
                                   f"({', '.join(lost)}); nothing written (give another --out)")
    os.makedirs(out_dir, exist_ok=True)
    records = []
    for seed, (name, mode, dtype, shape, overrides, description) in enumerate(SPECS, start=1):
        case = make_case(seed, mode, dtype, shape, overrides)
        arrays = expected(case, mode)
        file = f"{name}.npz"
        with io.atomic_path(os.path.join(out_dir, file)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        settings = {k: getattr(case, k) for k in CASE_FIELDS}
        settings["shape"] = list(case.shape)
        records.append(dict(name=name, file=file, mode=mode, property=MODES[mode], description=description,
                            settings=settings, arrays={k: sha256(v) for k, v in arrays.items()}))
    index = dict(format=1, generator="equiv.vectors.generate",
                 checksum="sha256 of each array's little-endian float64 bytes in C order",
                 cases=records)
    io.write_text(os.path.join(out_dir, INDEX), json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


def load_index(folder=DEFAULT_DIR):
    with open(os.path.join(folder, INDEX), encoding="utf-8") as f:
        return json.load(f)


def load_arrays(folder, record):
    with np.load(os.path.join(folder, record["file"])) as f:
        return {k: f[k] for k in f.files}


class StoredCase(Case):
    """A Case whose batches and vectors are the stored arrays, not regenerated from the seed."""

    def batch(self, i=0):
        return self.arrays["x"] if self.steps == 1 else self.arrays[f"x_step{i + 1}"]


def case_of(record, arrays):
    settings = dict(record["settings"], shape=tuple(record["settings"]["shape"]))
    vectors = dict(arrays)
    vectors.setdefault("dy", np.zeros(settings["shape"]))   # train / infer cases store no dy
    return StoredCase(**settings, arrays=vectors)


def run_case(adapter_cls, case_record, arrays, device="cpu"):
    """Run one stored case through an adapter; returns (status, reason, outputs).

    status is "ran", "skipped" (the adapter cannot run it: dtype, device, no gradients,
    hard-coded eps or weight) or "documented" (inside a known divergence of equiv.known).
    outputs maps the stored expectation's key (running variances as running_var_step{k})
    to the adapter's float64 result.
    """
    from equiv.known import excluded

    rec, mode, prop = case_record, case_record["mode"], case_record["property"]
    case = case_of(rec, arrays)
    if case.dtype not in adapter_cls.dtypes:
        return "skipped", f"{adapter_cls.name} has no dtype {case.dtype}", {}
    if mode == "gradients" and not adapter_cls.has_gradients:
        return "skipped", f"{adapter_cls.name} computes no gradients", {}
    if mode in ("infer", "running") and adapter_cls.conventions.running_var == "none":
        return "skipped", f"{adapter_cls.name} keeps no running statistics", {}
    try:
        a = adapter_cls(case.channels, case.ndim, dtype=case.dtype, device=device,
                        new_batch_weight=case.new_batch_weight, eps=case.eps)
    except Unsupported as e:
        return "skipped", str(e), {}
    if a.eps != case.eps or (mode == "running"
                             and not same_weight(a.new_batch_weight, case.new_batch_weight, case.dtype)):
        return "skipped", (f"{adapter_cls.name} hard-codes eps {a.eps:g} and weight {a.new_batch_weight:g}; "
                           f"the case has {case.eps:g} and {case.new_batch_weight:g}"), {}
    known = excluded(adapter_cls, prop, case)
    if known is not None:
        return "documented", known.id, {}
    a.set_state(**case.state)
    A, out = arrays, {}
    if mode == "train":
        out["y"] = a.forward_train(A["x"])
    elif mode == "infer":
        out["y"] = a.forward_infer(A["x"])
    elif mode == "gradients":
        _, out["dx"], out["dgamma"], out["dbeta"] = a.train_step(A["x"], A["dy"])
    else:
        for k in range(1, case.steps + 1):
            a.train_step(A[f"x_step{k}"], A["dy"])
            s = a.get_state()
            out[f"running_mean_step{k}"], out[f"running_var_step{k}"] = s["running_mean"], s["running_var"]
    return "ran", "", out


def check(adapter_cls, case_record, arrays, device="cpu"):
    """Run one stored case against an adapter class and compare with the stored answers.

    Returns {"case", "status", "reason", "worst"}: status is "passed", "failed", "skipped"
    or "documented" (see run_case); worst is the largest error/bound ratio seen. Running
    variances are compared with the estimator the adapter declares.
    """
    result = dict(case=case_record["name"], status="skipped", reason="", worst=0.0)
    status, reason, out = run_case(adapter_cls, case_record, arrays, device)
    if status != "ran":
        return dict(result, status=status, reason=reason)
    est = adapter_cls.conventions.running_var
    worst = 0.0
    try:
        for key, value in out.items():
            stored = key.replace("running_var_", f"running_var_{est}_")
            worst = max(worst, tol.assert_close(key.replace("_step", " after step "), value,
                                                arrays[stored], arrays[f"bound_{stored}"]))
    except AssertionError as e:
        return dict(result, status="failed", reason=str(e))
    return dict(result, status="passed", worst=worst)


def check_all(adapter_cls, device="cpu", folder=DEFAULT_DIR):
    """Every stored case against one adapter: (results, ["case: reason" for each failure])."""
    results = [check(adapter_cls, r, load_arrays(folder, r), device) for r in load_index(folder)["cases"]]
    return results, [f"{r['case']}: {r['reason']}" for r in results if r["status"] == "failed"]

