"""JAX conversions shared by the JAX/Flax adapters (a backend helper, not an adapter).

Importing this module turns on float64 in JAX, process-wide:
``jax.config.update("jax_enable_x64", True)``. Without it JAX silently computes a
float64 request in float32. Canonical data is channel-first; Flax is channel-last, so
4-D arrays go NCHW -> NHWC on the way in and back on the way out.
"""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

DTYPES = {"float64": jnp.float64, "float32": jnp.float32,
          "float16": jnp.float16, "bfloat16": jnp.bfloat16}


def array(a, dtype, nhwc=False):
    """A JAX array of ``dtype`` from canonical NumPy data; 4-D moved to NHWC when ``nhwc``."""
    a = np.asarray(a, dtype=np.float64)
    if nhwc and a.ndim == 4:
        a = a.transpose(0, 2, 3, 1)
    return jnp.asarray(a, DTYPES[dtype])


def numpy(a, nchw=False):
    """Float64 NumPy copy; 4-D moved back to NCHW when ``nchw``."""
    a = np.asarray(jnp.asarray(a, jnp.float64))
    return a.transpose(0, 3, 1, 2) if nchw and a.ndim == 4 else a


def stats_dtype(dtype):
    """Flax keeps batch statistics in at least float32 (``force_float32_reductions``)."""
    return jnp.promote_types(DTYPES[dtype], jnp.float32)


def sample(num_features, ndim, dtype):
    """The dummy input of ``module.init``: zeros, channel-last."""
    return jnp.zeros((2, num_features) if ndim == 2 else (2, 1, 1, num_features), DTYPES[dtype])


_layers = 0


def new_layer():
    """Call once per adapter built. JAX keeps every compiled executable for the life of the
    process, one per layer setting (eps, momentum are compile-time constants) and shape, ~4 MB
    each: a thorough run would need tens of GB (it segfaulted in XLA). Clear every 200 layers."""
    global _layers
    _layers += 1
    if _layers % 200 == 0:
        jax.clear_caches()
