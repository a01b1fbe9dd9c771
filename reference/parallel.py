"""Batch norm over one batch split into R shards, one per replica (data parallelism), as the math.

Synchronized, every replica normalizes its shard with the statistics of the *global* batch, the
shards concatenated: its outputs, its gradients and its running statistics (updated with the
global count of values per channel) are those of batch norm on that batch. Unsynchronized, each
replica is batch norm on its own shard.

A framework may merge per-shard statistics other than exactly. With n_r values, mean mu_r and
biased variance v_r on shard r (N = Σ n_r):

    count-weighted:  mu = Σ n_r·mu_r / N          v = Σ n_r·(v_r + (mu_r − mu)²) / N   (exact)
    equal-weighted:  mu = (1/R) Σ mu_r            v = (1/R) Σ (v_r + mu_r²) − mu²      (pmean of E[x], E[x²])

and the variance from per-shard sums of x and x² ("fast": E[x²] − E[x]², which loses digits to
a large offset) or from per-shard two-pass moments as above ("two-pass"). The two weightings agree
when every shard holds the same count; the fast variance equals the two-pass one in exact
arithmetic.
"""
import numpy as np

from reference.batch_norm import batch_norm_backward, batch_norm_train

# true for a type checker only, as typing.TYPE_CHECKING: the oracle imports NumPy alone (tests/test_oracle.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    Float64Array = NDArray[np.float64]
    # one array per replica, each (n_r, C) or (n_r, C, H, W)
    Shards = list[np.ndarray] | tuple[np.ndarray, ...]


def global_batch(shards: "Shards") -> "Float64Array":
    """The shards concatenated along the batch axis: the batch a single device would see."""
    return np.concatenate([np.asarray(s, dtype=np.float64) for s in shards], axis=0)


def split_like(a: "ArrayLike", shards: "Shards") -> "list[Float64Array]":
    """``a`` (one row per value of the global batch) cut back into pieces the sizes of ``shards``."""
    return np.split(np.asarray(a, dtype=np.float64), np.cumsum([len(s) for s in shards])[:-1], axis=0)


def count_per_channel(shard: "ArrayLike", axis: int = 1) -> int:
    """Values per channel in a shard (N·H·W)."""
    shard = np.asarray(shard)
    return shard.size // shard.shape[axis]


def sync_batch_norm_train(shards: "Shards", gamma: "ArrayLike", beta: "ArrayLike", *, eps: float,
                          axis: int = 1) -> "tuple[list[Float64Array], Float64Array, Float64Array, int]":
    """Synchronized training forward: (y per shard, global mean, global biased var, global count)."""
    x = global_batch(shards)
    y, mean, var = batch_norm_train(x, gamma, beta, eps=eps, axis=axis)
    return split_like(y, shards), mean, var, count_per_channel(x, axis)


def sync_batch_norm_backward(shards: "Shards", gamma: "ArrayLike", dys: "Shards", *, eps: float,
                             axis: int = 1) -> "tuple[list[Float64Array], Float64Array, Float64Array]":
    """Synchronized backward of Σ_r Σ y_r·dy_r: (dx per shard, dgamma per replica, dbeta per replica).

    dx is the global batch's gradient, cut into shards. Each replica's dgamma and dbeta are the
    sums over its own shard, with x̂ normalized by the global statistics: the global batch's
    dgamma and dbeta are their sum over replicas (what a layer that all-reduces them returns, and
    R times what a wrapper that averages gradients over replicas returns).
    """
    x, dy = global_batch(shards), global_batch(dys)
    dx, _, _ = batch_norm_backward(x, gamma, dy, eps=eps, axis=axis)
    y0, _, _ = batch_norm_train(x, np.ones_like(np.asarray(gamma, dtype=np.float64)),
                                np.zeros_like(np.asarray(gamma, dtype=np.float64)), eps=eps, axis=axis)
    red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    dgammas = [(d * h).sum(axis=red) for d, h in zip(split_like(dy, shards), split_like(y0, shards))]
    dbetas = [np.asarray(d, dtype=np.float64).sum(axis=red) for d in dys]
    return split_like(dx, shards), np.array(dgammas), np.array(dbetas)


def local_batch_norm_train(shards: "Shards", gamma: "ArrayLike", beta: "ArrayLike", *, eps: float,
                           axis: int = 1) -> "list[tuple[Float64Array, Float64Array, Float64Array]]":
    """Unsynchronized training forward: batch norm on each shard, [(y, mean, var)] per replica."""
    return [batch_norm_train(s, gamma, beta, eps=eps, axis=axis) for s in shards]


def local_batch_norm_backward(shards: "Shards", gamma: "ArrayLike", dys: "Shards", *, eps: float,
                              axis: int = 1) -> "list[tuple[Float64Array, Float64Array, Float64Array]]":
    """Unsynchronized backward: [(dx, dgamma, dbeta)] per replica, each of its own shard."""
    return [batch_norm_backward(s, gamma, d, eps=eps, axis=axis) for s, d in zip(shards, dys)]


def shard_moments(shards: "Shards", axis: int = 1) -> "tuple[NDArray[np.int_], Float64Array, Float64Array]":
    """Per shard: (counts, means, biased variances), as arrays of R rows. An empty shard has count 0
    and NaN moments."""
    counts, means, variances = [], [], []
    for s in shards:
        s = np.asarray(s, dtype=np.float64)
        red = tuple(i for i in range(s.ndim) if i != axis % s.ndim)
        n = count_per_channel(s, axis)
        counts.append(n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = s.sum(axis=red) / n if n else np.full(s.shape[axis], np.nan)
            means.append(mu)
            variances.append(((s - np.expand_dims(mu, red)) ** 2).sum(axis=red) / n if n
                             else np.full(s.shape[axis], np.nan))
    return np.array(counts), np.array(means), np.array(variances)


def merge_count_weighted(counts: "ArrayLike", means: "ArrayLike",
                         variances: "ArrayLike") -> "tuple[Float64Array, Float64Array]":
    """Exact global (mean, biased var) from per-shard moments (Chan, Golub and LeVeque's pairwise
    rule, all shards at once). Empty shards weigh nothing."""
    counts = np.asarray(counts, dtype=np.float64)
    keep = counts > 0
    n, mu_r, v_r = counts[keep][:, None], np.asarray(means)[keep], np.asarray(variances)[keep]
    total = n.sum()
    mean = (n * mu_r).sum(axis=0) / total
    var = (n * (v_r + (mu_r - mean) ** 2)).sum(axis=0) / total
    return mean, var


def merge_equal_weighted(means: "ArrayLike", variances: "ArrayLike") -> "tuple[Float64Array, Float64Array]":
    """(mean, biased var) when every replica's E[x] and E[x²] count once, whatever its count: the
    mean over replicas (a pmean) of each. An empty shard's NaN moments make the result NaN."""
    mu_r, v_r = np.asarray(means, dtype=np.float64), np.asarray(variances, dtype=np.float64)
    mean = mu_r.mean(axis=0)
    return mean, (v_r + mu_r ** 2).mean(axis=0) - mean ** 2


def merge_fast(counts: "ArrayLike", sums: "ArrayLike",
               sums_of_squares: "ArrayLike") -> "tuple[Float64Array, Float64Array]":
    """(mean, biased var) from the all-reduced sums Σx and Σx² of every shard: E[x²] − E[x]².
    Equal to the count-weighted merge in exact arithmetic; in floating point it loses about
    log10((mean/std)²) digits of the variance."""
    total = float(np.sum(counts))
    mean = np.sum(sums, axis=0) / total
    return mean, np.sum(sums_of_squares, axis=0) / total - mean ** 2


def shard_weights(shards: "Shards", weighting: str) -> "list[float]":
    """The weight each value of shard r has in the merged statistics: 1/N for every value
    ("count"), or 1/(R·n_r) ("equal": each replica's mean counts once). Σ of all weights is 1."""
    counts = [len(s) and count_per_channel(s) for s in shards]
    if weighting == "count":
        return [1.0 / sum(counts)] * len(shards)
    if weighting == "equal":
        return [1.0 / (len(shards) * n) if n else np.nan for n in counts]
    raise ValueError(f"weighting is 'count' or 'equal', not {weighting!r}")


def merged_batch_norm_train(shards: "Shards", gamma: "ArrayLike", beta: "ArrayLike", *, eps: float, weighting: str,
                            axis: int = 1) -> "tuple[list[Float64Array], Float64Array, Float64Array]":
    """Training forward with statistics merged under ``weighting``, each value x_i of weight w_i:

        mu = Σ w_i·x_i      var = Σ w_i·(x_i − mu)²      y_i = gamma·(x_i − mu)/sqrt(var + eps) + beta

    Returns (y per shard, mean, var). "count" is ``sync_batch_norm_train``."""
    x, w, shape = _weighted(shards, weighting, axis)
    red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    mean = (w * x).sum(axis=red, keepdims=True)
    var = (w * (x - mean) ** 2).sum(axis=red, keepdims=True)
    y = np.reshape(gamma, shape) * (x - mean) / np.sqrt(var + eps) + np.reshape(beta, shape)
    return split_like(y, shards), mean.reshape(-1), var.reshape(-1)


def merged_batch_norm_backward(shards: "Shards", gamma: "ArrayLike", dys: "Shards", *, eps: float, weighting: str,
                               axis: int = 1) -> "tuple[list[Float64Array], Float64Array, Float64Array]":
    """Backward of Σ y·dy through ``merged_batch_norm_train`` (the gradient of the global loss):

        dx_i = gamma/sqrt(var + eps) · (dy_i − w_i·Σ dy − w_i·x̂_i·Σ dy·x̂)

    with w_i = 1/m this is ``batch_norm_backward``. Returns (dx per shard, dgamma per replica,
    dbeta per replica), as ``sync_batch_norm_backward``."""
    x, w, shape = _weighted(shards, weighting, axis)
    dy = global_batch(dys)
    red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    mean = (w * x).sum(axis=red, keepdims=True)
    std = np.sqrt((w * (x - mean) ** 2).sum(axis=red, keepdims=True) + eps)
    x_hat = (x - mean) / std
    dbeta, dgamma = dy.sum(axis=red, keepdims=True), (dy * x_hat).sum(axis=red, keepdims=True)
    dx = np.reshape(gamma, shape) / std * (dy - w * dbeta - w * x_hat * dgamma)
    per = lambda a: np.array([p.sum(axis=red) for p in split_like(a, shards)])  # noqa: E731
    return split_like(dx, shards), per(dy * x_hat), per(dy)


def _weighted(shards: "Shards", weighting: str, axis: int) -> "tuple[Float64Array, Float64Array, tuple[int, ...]]":
    x = global_batch(shards)
    shape = [1] * x.ndim
    shape[axis % x.ndim] = x.shape[axis]
    w = np.concatenate([np.full(len(s), wr) for s, wr in zip(shards, shard_weights(shards, weighting))])
    return x, w.reshape((-1,) + (1,) * (x.ndim - 1)), tuple(shape)
