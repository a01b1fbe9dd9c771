"""Lockstep: a framework's BN-LeNet against the NumPy float64 reference, step by step.

Both sides start from the same weights (``reference.lenet.init_params(seed)``, rounded to
the framework's dtype, so that representing the initial weights is not counted as an
error) and see the same batches in the same order (``equiv.lenet.epoch_order``; the images
rounded to the dtype). The reference runs in float64 with the implementation's BN
conventions (``equiv.lenet.CONVENTIONS``). After every SGD step we compare

- the loss and every layer's activation (``reference.lenet.ACTIVATIONS``; fc3 = logits),
- every parameter after the update, every BN running statistic after the update,

each by its normwise relative error  max|a − r| / max|r|  (a whole tensor at once, so a
value near zero does not blow up the ratio).

Tolerance (``tolerance(dtype, batch)``), one number per dtype and batch size for every
quantity, never widened per test:

    K · depth · (u · growth(n) + u64 · growth(m))

with depth = 16 layers, K = 4 and growth(k) = 2 + sqrt(k) as in ``equiv.tolerance``.
First term, the framework's rounding in its dtype (u = 2^-53 or 2^-24): every layer
computes its output with a relative error ≲ growth(n)·u, n = 256 the longest dot product
(fc1's fan-in; conv2: 150); BN renormalizes every block and the sigmoid's slope is ≤ 1/4, so
errors add up over the depth instead of multiplying; the parameters' errors are u-sized
updates added to u-sized weights. Second term, the float64 sums over the m = batch·24·24
values of bn1's channels (the longest reduction): NumPy's strided sums, and torch's in
float64, accumulate an error that grows like sqrt(m) (measured on Fashion-MNIST, batch 128,
30 steps: up to 3.5e-13 for torch.builtin and 1.6e-12 for torch.scratch, against 2.1e-12).
In float32 the frameworks sum in float64 or by cascade summation (torch on the CPU:
float64 accumulators in nn.BatchNorm, cascade sums in torch.mean), so they add no
sqrt(m)·u32 term (measured: at most 5.6e-6 against 6.9e-5); an implementation that sums naively in float32
exceeds the bound, which is a finding. Batch 128: float32 6.9e-5 ("a few 1e-5"), float64
2.1e-12; batch 16: 6.9e-5 and 8.2e-13. (The reference itself sums each channel pairwise,
``reference.batch_norm.channel_sum``; a strided NumPy sum over (N, H, W) was off by 3e-13.)

That bound is for one step. Over the steps the training trajectory itself can amplify a
rounding-sized difference: a BN channel whose variance becomes small, a sigmoid leaving
saturation. The amplification is measured, not assumed: a *shadow* reference runs beside
the reference with every parameter perturbed by a relative 2^-40 (random sign) after every
step, and ``amplification(s)`` = (the shadow's largest relative deviation from the
reference at step s) / (the same at step 1), at least 1. The tolerance at step s is
``tolerance(dtype, batch) · amplification(s)``. Measured on Fashion-MNIST, batch 128, 30
steps: at most 7.3× for seed 0 and 9.4× for seed 1 (bn2 at steps 22-24, where four float64
implementations reach 2.1e-12 … 2.4e-12 against the one-step bound 2.07e-12, and the shadow
jumps 7× there too). A planted difference shows at step 1, where the amplification is 1 by
definition.

Divergence localisation, after LEMON / Audee (Guo et al.): per step and layer l (in network
order), δ_l = mean|a_l − r_l| / (mean|r_l| + tiny) and the rate of change
R_l = (δ_l − δ_{l−1}) / (δ_{l−1} + tiny), with δ_0 = 0 for the identical input. The first
divergent (step, layer) is the first step at which any quantity exceeds the tolerance, and
there the first of: the first activation in forward order over it (the layer that
introduces the difference; R is large there), the loss, the parameter nearest the output
(backward order: a backward bug reaches the earlier layers through it), the first running
statistic in forward order.
"""
import numpy as np

from equiv.dtypes import UNIT_ROUNDOFF, round_to
from equiv.lenet import CONVENTIONS, epoch_order, label_of, scale_images, synthetic
from reference import lenet as ref

K = 4.0
SHADOW = 2.0 ** -40                   # relative perturbation of the shadow reference's parameters
DEPTH = len(ref.ACTIVATIONS)          # 16
LONGEST_DOT = 256                     # fc1 fan-in
TINY = 1e-30
SYNTHETIC_MAX = 60000                 # synthetic examples at most (as many as Fashion-MNIST's training set)


def _growth(k):
    return 2.0 + np.sqrt(k)


def tolerance(dtype, batch):
    """Normwise relative tolerance for every lockstep quantity (see the module docstring)."""
    m = batch * 24 * 24                   # values per channel of bn1
    return float(K * DEPTH * (UNIT_ROUNDOFF[dtype] * _growth(LONGEST_DOT)
                              + UNIT_ROUNDOFF["float64"] * _growth(m)))


def rel_error(actual, expected):
    """max|a − r| / max|r| (NaN or inf counts as inf; 0 when both are exactly 0).

    A shape that differs from the reference's is an infinite error: the implementation keeps
    something else (the book's JAX layer keeps per-row statistics of shape (1, H, 1, C))."""
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(expected, dtype=np.float64)
    if a.shape != r.shape:
        return float("inf")
    err = np.abs(a - r)
    if not np.all(np.isfinite(err)):
        return float("inf")
    e, s = float(err.max(initial=0.0)), float(np.abs(r).max(initial=0.0))
    return 0.0 if e == 0.0 else (e / s if s > 0 else float("inf"))


def lemon(acts, ref_cache):
    """(δ, R) dicts over the layers, in network order."""
    delta, rate, prev = {}, {}, 0.0
    for name in ref.ACTIVATIONS:
        a, r = np.asarray(acts[name], dtype=np.float64), ref_cache[name]
        d = float(np.mean(np.abs(a - r)) / (np.mean(np.abs(r)) + TINY))
        delta[name], rate[name] = d, float((d - prev) / (prev + TINY))
        prev = d
    return delta, rate


def data(n, seed, data_dir=None, download=False, real=None):
    """(x, y, source): x float64 (n, 1, 28, 28) in [0, 1] or uint8 (N, 28, 28); synthetic by default, Fashion-MNIST's
    training set when ``data_dir`` is given or ``real`` is true (``equiv.data`` finds it)."""
    if real is None:
        real = data_dir is not None
    if not real:
        return synthetic(n, seed) + ("synthetic",)
    from equiv.data import load_fashion_mnist
    d = load_fashion_mnist(data_dir, download=download)
    return d["train_x"], d["train_y"].astype(np.int64), "fashion-mnist"   # scaled per batch


def _perturb(params, rng):
    """The parameters, each value times (1 ± SHADOW) (the shadow reference's perturbation)."""
    return {k: v * (1.0 + SHADOW * rng.choice((-1.0, 1.0), size=np.shape(v))) for k, v in params.items()}


def _first(step, errs, tol):
    def over(k):
        return errs[k] > tol

    order = ([f"act:{n}" for n in ref.ACTIVATIONS] + ["loss"]
             + [f"param:{n}" for n in reversed(ref.PARAM_NAMES)]
             + [f"state:{n}" for n in ref.init_state()])
    for key in order:
        if over(key):
            kind, _, name = key.partition(":")
            return dict(step=step, kind=kind, layer=name or "loss", rel_error=errs[key], tolerance=tol)
    return None


def data_parallel(impl_module, impl):
    """(replicas, synchronized) of ``impl_module``'s variant ``impl``, None for a single device:
    ``DATA_PARALLEL`` is that pair, or a dict variant -> pair."""
    dp = getattr(impl_module, "DATA_PARALLEL", None)
    return dp.get(impl) if isinstance(dp, dict) else dp


def reference_step(impl_module, impl=None):
    """The reference's training step for ``impl_module``'s variant ``impl``: ``reference.lenet.loss_and_grads``,
    or for a data-parallel net (``DATA_PARALLEL = (replicas, synchronized)``) the data-parallel step on
    the global batch (``reference.lenet.data_parallel_loss_and_grads``), with rank 0's new state."""
    dp = data_parallel(impl_module, impl)
    if dp is None:
        return ref.loss_and_grads
    replicas, synchronized = dp

    def step(params, state, x, y, **conv):
        loss, grads, states, cache = ref.data_parallel_loss_and_grads(
            params, state, x, y, replicas=replicas, synchronized=synchronized, **conv)
        return loss, grads, states[0], cache
    return step


def run(impl_module, impl, steps=30, dtype="float64", seed=0, batch=128, lr=0.1, *,
        device="cpu", data_dir=None, real=None, download=False, conventions=None, dataset=None, on_step=None):
    """Run ``steps`` SGD steps of ``impl_module``'s variant ``impl`` beside the reference.

    ``dataset``: (x, y) to use instead of loading one (x float (N, 1, 28, 28) in [0, 1], or uint8).
    ``conventions``: the reference's BN conventions (default: the implementation's, from
    ``equiv.lenet.CONVENTIONS``); pass another implementation's to see what it changes.
    ``on_step(1)``, when given, is called after every step (progress bars).
    Returns a JSON-able dict (see the keys below); ``passed`` is True when no quantity
    exceeded the step's tolerance (``tolerance`` × the step's measured ``amplification``).
    Synthetic data has at most ``SYNTHETIC_MAX`` examples; longer runs start new epochs.
    A data-parallel net (``DATA_PARALLEL``) is given the global batch and compared with
    ``reference_step(impl_module, impl)``; the result says ``replicas`` and ``bn`` ("global",
    "per-shard", or "single" for one device).
    """
    label = label_of(impl_module, impl)
    conv = dict(CONVENTIONS[label] if conventions is None else conventions)
    tol = tolerance(dtype, batch)
    if dataset is not None:
        x_all, y_all, source = dataset[0], dataset[1], "given"
    else:
        x_all, y_all, source = data(min(max(steps * batch, batch), SYNTHETIC_MAX), seed, data_dir, download, real)
    n = len(y_all)
    reference = reference_step(impl_module, impl)
    dp = data_parallel(impl_module, impl)

    params = {k: round_to(v, dtype) for k, v in ref.init_params(seed).items()}
    state = ref.init_state()
    net = impl_module.build(impl, dtype, device)
    impl_module.load_params(net, params)

    rng = np.random.default_rng([seed, 4040])
    shadow_params, shadow_state, shadow_first = _perturb(params, rng), state, None

    records, first = [], None
    order, epoch, pos = epoch_order(n, seed, 0), 0, 0
    for s in range(1, steps + 1):
        if pos + batch > n:
            epoch, pos = epoch + 1, 0
            order = epoch_order(n, seed, epoch)
        idx = order[pos:pos + batch]
        pos += batch
        x, y = round_to(scale_images(x_all[idx]), dtype), np.asarray(y_all[idx])

        loss_r, grads, state, cache = reference(params, state, x, y, **conv)
        params = ref.sgd_step(params, grads, lr)
        loss_h, grads_h, shadow_state, cache_h = reference(shadow_params, shadow_state, x, y, **conv)
        shadow_params = ref.sgd_step(shadow_params, grads_h, lr)
        spread = max([rel_error(loss_h, loss_r)] + [rel_error(cache_h[k], cache[k]) for k in ref.ACTIVATIONS]
                     + [rel_error(shadow_params[k], params[k]) for k in ref.PARAM_NAMES]
                     + [rel_error(shadow_state[k], state[k]) for k in state])
        shadow_first = shadow_first or spread
        amplification = max(1.0, spread / shadow_first)
        shadow_params = _perturb(shadow_params, rng)
        loss, acts = impl_module.step(net, x, y, lr)
        got_p, got_s = impl_module.get_params(net), impl_module.get_state(net)

        errs = {f"act:{k}": rel_error(acts[k], cache[k]) for k in ref.ACTIVATIONS}
        errs["loss"] = rel_error(loss, loss_r)
        errs.update({f"param:{k}": rel_error(got_p[k], params[k]) for k in ref.PARAM_NAMES})
        errs.update({f"state:{k}": rel_error(got_s[k], state[k]) for k in state})
        delta, rate = lemon(acts, cache)
        records.append(dict(step=s, loss=loss, loss_ref=loss_r, rel_error=errs, delta=delta, rate=rate,
                            amplification=amplification, tolerance=tol * amplification))
        if first is None:
            first = _first(s, errs, tol * amplification)
        if on_step:
            on_step(1)

    keys = records[0]["rel_error"].keys()
    max_err = {k: max(r["rel_error"][k] for r in records) for k in keys}
    groups = {g: max(v for k, v in max_err.items() if k.split(":")[0] == g)
              for g in ("act", "loss", "param", "state")}
    return dict(label=label, framework=impl_module.FRAMEWORK, version=impl_module.version(),
                impl=impl, dtype=dtype, device=str(device), seed=seed, steps=steps, batch=batch,
                lr=lr, data=source, conventions=conv, tolerance=tol,
                replicas=dp[0] if dp else 1, bn=("global" if dp[1] else "per-shard") if dp else "single",
                max_rel_error=max_err, max_rel_error_by_kind=groups,
                max_amplification=max(r["amplification"] for r in records),
                first_divergence=first, passed=first is None, per_step=records)
