"""JAX's backend: conversions shared by the JAX/Flax adapters, paths, data-parallel engines and
BN-LeNets, and the process's JAX setup.

``setup()`` turns on float64 in JAX, process-wide:
``jax.config.update("jax_enable_x64", True)``. Without it JAX silently computes a
float64 request in float32. Canonical data is channel-first; Flax is channel-last, so
4-D arrays go NCHW -> NHWC on the way in and back on the way out.

The adapters pass momentum and eps to their jitted calls as runtime scalars (Python
floats, weakly typed: promoted exactly as the layer's own floats are), so that a new
setting does not compile again; only a new shape, dtype or mode does. The layer's code and
the jit are the ones a user runs; the compiled program differs from one with the floats
as literals only in what XLA folds: with a literal momentum it multiplies the batch sum by
the one constant (1 − m)/n, with a runtime one by (1 − m) and 1/n in turn. The running
statistics can then differ by one rounding (1 ulp: 2 of 80 settings for two_pass, 0 of 80
for linen and nnx, compared bit for bit), far inside every bound.

XLA's compile of a new shape is most of a JAX adapter's cost per Hypothesis example. ``setup()``
therefore also turns on JAX's persistent compilation cache (``persistent_cache``):
an executable compiled once is stored on disk and loaded, not compiled again, by every later
process: the next run of the derandomized ``ci`` profile, or another ``pytest -n`` worker. A
loaded executable is the one XLA compiled, byte for byte (tests/test_jax_cache.py: bit-identical
outputs). ``EQUIV_JAX_CACHE=off`` turns it off, ``EQUIV_JAX_CACHE=<dir>`` moves it; a cache the
user configured for JAX is left as it is. ``equiv.registry`` calls ``setup()`` before it loads
anything of JAX; the adapters call it again as they build a layer (``new_layer``), so a class imported
directly runs with float64 too.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float64": jnp.float64, "float32": jnp.float32,
          "float16": jnp.float16, "bfloat16": jnp.bfloat16}


def persistent_cache(environ=os.environ):
    """Turn on JAX's persistent compilation cache in ``$EQUIV_JAX_CACHE`` (default
    ``$XDG_CACHE_HOME/bn-equiv/jax``, else ``~/.cache/bn-equiv/jax``), every executable stored
    however fast it compiled; the directory can be deleted at any time. Nothing when
    ``EQUIV_JAX_CACHE=off``, when JAX already has a cache directory (``JAX_COMPILATION_CACHE_DIR``),
    or when the directory cannot be written. Returns the directory in use, or None."""
    setting = environ.get("EQUIV_JAX_CACHE", "")
    if setting == "off" or jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir or None
    path = setting or os.path.join(environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bn-equiv", "jax")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # no size limit (JAX's default): with one, every write lists and reads the whole directory to
    # find what to evict (jax/_src/lru_cache.py, _evict_if_needed), so the later programs of a cold
    # ci run took 1.8x as long; an entry is ~10 kB (a whole tox run: 2,852 programs, 28 MB)
    return path


CACHE_DIR = None   # the persistent cache's directory once setup() ran (None: off)
_ready = False


def setup():
    """Float64 on, the persistent compilation cache on, the compile counter of ``new_layer``
    listening; once per process (later calls do nothing). Returns the cache directory or None."""
    global CACHE_DIR, _ready
    if not _ready:
        _ready = True
        jax.config.update("jax_enable_x64", True)
        CACHE_DIR = persistent_cache()
        jax.monitoring.register_event_duration_secs_listener(_count)
    return CACHE_DIR


def array(a, dtype, nhwc=False):
    """A JAX array of ``dtype`` (a name or a dtype) from canonical NumPy data; 4-D moved to NHWC
    when ``nhwc``. Cast and moved on the host: an eager op in JAX (a cast, ``jnp.asarray``)
    compiles once per shape."""
    a = np.asarray(a, dtype=np.float64)
    if nhwc and a.ndim == 4:
        a = a.transpose(0, 2, 3, 1)
    return jax.device_put(a.astype(DTYPES.get(dtype, dtype)))


def numpy(a, nchw=False):
    """Float64 NumPy copy (exact, on the host); 4-D moved back to NCHW when ``nchw``."""
    a = np.asarray(a).astype(np.float64)
    return a.transpose(0, 3, 1, 2) if nchw and a.ndim == 4 else a


def stats_dtype(dtype):
    """Flax keeps batch statistics in at least float32 (``force_float32_reductions``)."""
    return jnp.promote_types(DTYPES[dtype], jnp.float32)


def sample(num_features, ndim, dtype):
    """The dummy input of ``module.init``: zeros, channel-last (NumPy: no eager JAX op)."""
    return np.zeros((2, num_features) if ndim == 2 else (2, 1, 1, num_features), DTYPES[dtype])


_compiled = 0


def _count(event, *args, **kwargs):
    global _compiled
    if event == "/jax/core/compile/backend_compile_duration":
        _compiled += 1


def new_layer():
    """Call once per adapter built. JAX keeps every compiled executable for the life of the
    process, ~4 MB each: a thorough run would need tens of GB (it segfaulted in XLA). Clear
    them once 500 have been compiled. The adapters compile once per shape, dtype and mode
    (momentum and eps are runtime arguments), so a ci run stays well under that."""
    global _compiled
    setup()
    if _compiled >= 500:
        jax.clear_caches()
        _compiled = 0
