"""Keras 3's documented findings on its jax, torch and numpy backends (the tf.keras+<backend> paths)."""

from equiv.known._regions import _FORWARD, _fast_variance_loses, under
from equiv.known.base import Divergence, OptionDivergence
from equiv.strategies import Case

FINDINGS = [
    # --- keras 3 on jax, torch, numpy (the tf.keras+<backend> paths) --------------------
    Divergence(
        id="keras-float64-computes-float32",
        implementations=("tf.keras+jax", "tf.keras+torch", "tf.keras+numpy"),
        properties=_FORWARD + ("infer_forward", "batch_stats", "running_stats", "state_after_calls"),
        reason=("on every Keras backend but TensorFlow, a dtype=\"float64\" layer keeps float64 variables "
                "and output but computes in float32: BatchNormalization.call takes compute_dtype = "
                "backend.result_type(inputs.dtype, \"float32\") (keras/src/layers/normalization/"
                "batch_normalization.py:345, cast at :348-360), and Keras' type promotion maps float64 to "
                "float32 unless the backend is tensorflow (keras/src/backend/common/dtypes.py:240, "
                "BIT64_TO_BIT32_DTYPE, applied at :276; keras 3.15.1), jax_enable_x64 or not. The output, "
                "gradients and running statistics are float32-accurate (witness: float64, eps 0.1: "
                "training output off by 3.1e-7, 2.2e-7, 7.1e-8 = 4.7e7×, 3.3e7×, 1.1e7× the bound on numpy, "
                "torch, jax; running mean after one step off by 2.2e-8, 6.9e6×, on all three); tf.keras is "
                "float64-accurate"),
        region=lambda c, p: c.dtype == "float64",
        witness=Case(dtype="float64", shape=(2, 1), seed=0, log10_scale=0.0, log10_offset=None,
                     constant_channel=False, eps=0.1, new_batch_weight=0.0),
        witness_property="train_forward",
        advice="on Keras' jax, torch or numpy backend a float64 BatchNormalization is float32-accurate: "
               "use the TensorFlow backend for float64, or compare at float32 tolerances"),
    Divergence(
        id="keras-fast-variance-offset",
        implementations=("tf.keras+torch", "tf.keras+numpy"),
        properties=_FORWARD + ("running_stats", "state_after_calls", "batch_stats"),
        reason=("keras.ops.moments on the torch and NumPy backends computes var = E[x²] − E[x]², not "
                "clipped at 0 (keras/src/backend/torch/nn.py:980-982, keras/src/backend/numpy/nn.py:951; "
                "TensorFlow's tf.nn.moments and JAX's jnp.var take the two-pass variance), which loses "
                "~u·(|mean|/std)² of the variance, as Flax's fast variance; float16 and bfloat16 inputs are "
                "reduced in float32 (batch_normalization.py:345-348). Unclipped, var̂ can be negative: "
                "three float32 values at 1000.005, one an ulp above, give var̂ = −0.125 and a NaN output "
                "(eps 1e-12) on both backends. Witness (Flax's: float32, |mean|/std ≈ 900): training output off by "
                "0.092 (numpy, 102× the bound) and 0.056 (torch, 62×), batch variance off by 1.38 (3.1e4×) and "
                "1.12 (2.5e4×), dx off by 0.071 (torch, 23×); tf.keras+jax passes: jnp.var is two-pass "
                "(keras/src/backend/jax/nn.py:1054)"),
        region=_fast_variance_loses,
        witness=Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=1.0),
        witness_property="train_forward",
        advice="on Keras' torch or numpy backend centre data far from zero mean before BatchNormalization"),
]

# --- layer options (equiv.options) on tf.keras ------------------------------------------------
OPTIONS = [
    OptionDivergence(
        id="keras-synchronized-fast-variance-one-device",
        implementations=("tf.keras",),
        properties=_FORWARD + ("batch_stats", "running_stats", "state_after_calls"),
        reason=("BatchNormalization(synchronized=True) on one device, outside any tf.distribute strategy, "
                "still takes the synchronized moments: tf.distribute.get_replica_context() is the default "
                "replica context, not None (keras/src/backend/tensorflow/nn.py:1516-1518), so the layer "
                "all-reduces (over one replica) Σx, Σx² and the count and takes var = max(E[x²] − E[x]², 0) "
                "(nn.py:1536-1539; keras 3.15.1), not tf.nn.moments' two-pass variance of synchronized=False "
                "(:1547-1548; the variance pinned by tests/test_tf_findings.py::"
                "test_keras_synchronized_uses_the_fast_variance_even_without_a_strategy): the variance loses "
                "~u·(|mean|/std)², as tf-sync-fast-variance-offset under MirroredStrategy. The docstring says "
                "only \"Only applicable with the TensorFlow backend\" "
                "(keras/src/layers/normalization/batch_normalization.py:90). Witness (float32, 16 rows, "
                "|mean|/std ≈ 1e3): training output off by 0.092, 102× the bound (synchronized=False: 0.039 of "
                "the bound)"),
        region=under({"synchronized": True}, _fast_variance_loses),
        witness=Case(dtype="float32", shape=(16, 2), seed=0, log10_scale=0.0, log10_offset=3.0,
                     constant_channel=False, eps=1e-5, new_batch_weight=1.0, options={"synchronized": True}),
        witness_property="train_forward",
        advice="leave synchronized=False on one device, or centre data far from zero mean before the layer"),
]

FINDINGS += OPTIONS
