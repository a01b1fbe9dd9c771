"""The oracle's run for a data-parallel implementation, from what it declares, and the comparison
of a measured run with it under ``equiv.tolerance``.

``expected`` reads the declaration field by field (``ParallelConventions``) and the base layer's
single-device row (momentum meaning, running-variance estimator); it never looks at what the
implementation computed. ``compare`` bounds every output by the tolerance of the batch it was
normalized over (the global batch when synchronized, the shard when not).
"""
import numpy as np

import reference as ref
from equiv import tolerance as tol
from reference import parallel as par


def expected(conv, single, state, steps, *, eps, new_batch_weight):
    """The oracle's ``Run`` for ``steps`` [(shards, dy shards), ...] from ``state`` under the
    data-parallel conventions ``conv`` and the single-device conventions ``single``."""
    from equiv.parallel import Run
    R = len(steps[0][0])
    unbiased = single.running_var == "unbiased"
    gamma, beta = state["gamma"], state["beta"]
    states = [dict(running_mean=np.asarray(state["running_mean"], dtype=np.float64),
                   running_var=np.asarray(state["running_var"], dtype=np.float64)) for _ in range(R)]
    run = Run(ys=[], dxs=[], dgammas=[], dbetas=[])
    run.history = [states]
    for shards, dys in steps:
        if conv.running_stats == "rank0-broadcast":
            states = [dict(states[0]) for _ in range(R)]
        if conv.synchronized:
            ys, mean, var = par.merged_batch_norm_train(shards, gamma, beta, eps=eps, weighting=conv.weighting)
            if conv.dx == "global":
                dxs, dgs, dbs = par.merged_batch_norm_backward(shards, gamma, dys, eps=eps, weighting=conv.weighting)
            else:
                raise NotImplementedError("dx='local' has no oracle yet")
            n = par.count_per_channel(par.global_batch(shards))
            batch = [(mean, var, n)] * R
        else:
            # a replica given no values outputs nothing, has zero gradients and keeps its running
            # statistics (empty_shard "skip"; batch (None, None, 0) below)
            full = [i for i, s in enumerate(shards) if len(s)]
            fw = dict(zip(full, par.local_batch_norm_train([shards[i] for i in full], gamma, beta, eps=eps)))
            bw = dict(zip(full, par.local_batch_norm_backward([shards[i] for i in full], gamma,
                                                              [dys[i] for i in full], eps=eps)))
            zero = np.zeros(len(np.asarray(gamma)))
            empty = lambda i: np.zeros(np.shape(shards[i]))  # noqa: E731, B023
            ys = [fw[i][0] if i in fw else empty(i) for i in range(R)]
            dxs = [bw[i][0] if i in bw else empty(i) for i in range(R)]
            dgs = np.array([bw[i][1] if i in bw else zero for i in range(R)])
            dbs = np.array([bw[i][2] if i in bw else zero for i in range(R)])
            batch = [(fw[i][1], fw[i][2], par.count_per_channel(shards[i])) if i in fw else (None, None, 0)
                     for i in range(R)]
        dgs, dbs = _reduce(dgs, conv.param_grads), _reduce(dbs, conv.param_grads)
        run.ys.append(ys), run.dxs.append(dxs), run.dgammas.append(list(dgs)), run.dbetas.append(list(dbs))
        states = [dict(zip(("running_mean", "running_var"),
                           ref.update_running_stats(s["running_mean"], s["running_var"], m, v, n,
                                                    new_batch_weight=new_batch_weight, unbiased=unbiased)))
                  if n else dict(s) for s, (m, v, n) in zip(states, batch)]
        run.history.append(states)
    run.states = [dict(gamma=np.asarray(gamma, dtype=np.float64), beta=np.asarray(beta, dtype=np.float64), **s)
                  for s in states]
    return run


def _reduce(per_replica, how):
    per_replica = np.asarray(per_replica, dtype=np.float64)
    if how == "local":
        return per_replica
    total = per_replica.sum(axis=0)
    return np.array([total if how == "sum" else total / len(per_replica)] * len(per_replica))


def compare(conv, run, want, steps, state, *, eps, new_batch_weight, dtype, gradients=True, worst_by=None):
    """The largest error/bound ratio of ``run`` against ``want`` (an ``expected`` run; ≤ 1 passes);
    raises ``tolerance.ToleranceError`` naming the step, the replica and the quantity otherwise.
    Every output is bounded by the tolerance of the batch it was normalized over: the global batch
    when synchronized, the replica's shard when not. ``worst_by``, a dict, gets the largest ratio of
    each quantity (y, dx, dgamma, dbeta, running mean, running var) over steps and replicas."""
    def close(label, got, exp, bound):
        ratio = tol.assert_close(label, got, exp, bound)
        if worst_by is not None:
            q = label.split(" (")[0]
            worst_by[q] = max(worst_by.get(q, 0.0), ratio)
        return ratio

    gamma = state["gamma"]
    R = len(steps[0][0])
    worst = 0.0
    bound_m, bound_v = [0.0] * R, [0.0] * R
    for k, (shards, dys) in enumerate(steps):
        if conv.running_stats == "rank0-broadcast":   # every replica starts the step from rank 0's state
            bound_m, bound_v = [bound_m[0]] * R, [bound_v[0]] * R
        if gradients and not conv.synchronized and conv.param_grads != "local":
            # a gradient summed (or averaged) over replicas adds the replicas' own bounds (or their mean)
            own = [tol.gradients(s, gamma, d, eps, dtype)[1:] for s, d in zip(shards, dys) if len(s)]
            shared = [sum(b[i] for b in own) / (len(shards) if conv.param_grads == "mean" else 1) for i in (0, 1)]
        for r in range(R):
            at = f"step {k + 1}, replica {r}"
            if not conv.synchronized and not len(shards[r]):
                # an empty shard: nothing to bound but the shapes, the (shared) gradients and unchanged state
                worst = max(worst, _empty_replica(at, run, want, k, r, shards, conv, gradients,
                                                  shared if gradients and conv.param_grads != "local" else None))
                continue
            if conv.synchronized:
                x, dy = par.global_batch(shards), par.global_batch(dys)
                mine = lambda b: par.split_like(b, shards)[r]  # noqa: E731, B023
            else:
                x, dy = np.asarray(shards[r], dtype=np.float64), np.asarray(dys[r], dtype=np.float64)
                mine = lambda b: b  # noqa: E731
            worst = max(worst, close(f"y ({at})", run.ys[k][r], want.ys[k][r],
                                     mine(tol.train_forward(x, gamma, state["beta"], eps, dtype))))
            if gradients:
                bdx, bdg, bdb = tol.gradients(x, gamma, dy, eps, dtype)
                scale = R if conv.param_grads == "sum" else 1   # a sum over replicas adds R bounds
                if not conv.synchronized and conv.param_grads != "local":
                    (bdg, bdb), scale = shared, 1
                worst = max(worst, close(f"dx ({at})", run.dxs[k][r], want.dxs[k][r], mine(bdx)),
                            close(f"dgamma ({at})", run.dgammas[k][r], want.dgammas[k][r], scale * bdg),
                            close(f"dbeta ({at})", run.dbetas[k][r], want.dbetas[k][r], scale * bdb))
            old, new = want.history[k][r], want.history[k + 1][r]
            dm, dv = tol.running_stats(x, old["running_mean"], old["running_var"], new["running_mean"],
                                       new["running_var"], new_batch_weight, dtype)
            # each update's bound adds up; earlier errors are carried forward with factor 1 − w ≤ 1
            bound_m[r], bound_v[r] = bound_m[r] + dm, bound_v[r] + dv
    for r in range(R):
        got, exp = run.states[r], want.states[r]
        worst = max(worst,
                    close(f"running mean (replica {r}, after {len(steps)} steps)",
                          got["running_mean"], exp["running_mean"], bound_m[r]),
                    close(f"running var (replica {r}, after {len(steps)} steps)",
                          got["running_var"], exp["running_var"], bound_v[r]))
    return worst


def _empty_replica(at, run, want, k, r, shards, conv, gradients, shared):
    """An unsynchronized replica given no values: its outputs have its shard's (empty) shape, its
    gradients are zero (or the replicas' shared sum or mean, bounded by ``shared``)."""
    worst = 0.0
    for what, got in (("y", run.ys[k][r]), ("dx", run.dxs[k][r] if gradients else None)):
        if got is not None and np.shape(got) != np.shape(shards[r]):
            raise AssertionError(f"{what} ({at}, empty shard): shape {np.shape(got)}, not {np.shape(shards[r])}")
    if gradients:
        bounds = shared or [np.zeros(len(want.dgammas[k][r]))] * 2
        worst = max(tol.assert_close(f"dgamma ({at})", run.dgammas[k][r], want.dgammas[k][r], bounds[0]),
                    tol.assert_close(f"dbeta ({at})", run.dbetas[k][r], want.dbetas[k][r], bounds[1]))
    return worst
