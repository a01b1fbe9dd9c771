"""What the TensorFlow XLA paths (equiv.paths.tf_paths) do beyond the numbers the cross-path test
compares (tests/test_paths.py): that they really compile, what they retrace, and where they are more
accurate than eager TensorFlow (TensorFlow 2.21, Keras 3.15, XLA on the CPU)."""
import numpy as np
import pytest

from equiv import registry
from equiv.known import KNOWN
from equiv.properties import PROPERTIES

tf = pytest.importorskip("tensorflow", reason="install it with: pip install tensorflow-cpu")
from equiv.paths import tf_paths  # noqa: E402  (imports tensorflow)


def test_jit_compile_is_must_compile_never_a_fallback():
    """tf.function(jit_compile=True) compiles the whole function with XLA or raises: an op without an
    XLA kernel is an error, not a silent run on TensorFlow's kernels."""
    f = tf.function(lambda x: tf.strings.to_number(tf.strings.as_string(x)), jit_compile=True)
    with pytest.raises(Exception, match="(?i)xla|compil|kernel"):
        f(tf.constant([1.0]))


@pytest.mark.parametrize("name", ["tf.keras+xla", "tf.scratch+xla"])
def test_the_path_runs_the_layer_as_one_xla_computation(name):
    a = registry.load(name)(3, 2, dtype="float32")
    x, dy = tf.constant(np.ones((4, 3)), tf.float32), tf.constant(np.ones((4, 3)), tf.float32)
    call, step = tf_paths._xla_functions(a.layer)
    hlo = step.experimental_get_compiler_ir(x, dy)(stage="hlo")
    assert "reduce(" in hlo and "HloModule" in hlo
    assert "reduce(" in call.experimental_get_compiler_ir(x, training=True)(stage="hlo")


def test_retracing_tf_scratch_reuses_tf_keras_traces_per_setting():
    """tf.scratch+xla: pooled layers keep their compiled functions, so a new adapter of the same dtype,
    rank and width traces nothing; tf.keras+xla: Keras bakes momentum and epsilon into the layer, so a
    new setting is a new layer and a new trace."""
    x = np.random.default_rng(0).standard_normal((6, 2))
    S = registry.load("tf.scratch+xla")
    a = S(2, 2, dtype="float64")
    a.train_step(x, x)
    fns = tf_paths._xla_functions(a.layer)
    traced = fns[1].experimental_get_tracing_count()
    layer = a.layer
    del a
    b = S(2, 2, dtype="float64")
    assert b.layer is layer
    b.train_step(x, x)
    assert tf_paths._xla_functions(b.layer)[1].experimental_get_tracing_count() == traced
    K = registry.load("tf.keras+xla")
    k1, k2 = K(2, 2, dtype="float64", eps=1e-3), K(2, 2, dtype="float64", eps=1e-4)
    assert k1.layer is not k2.layer and k2.layer.epsilon == 1e-4


def test_xla_sums_float16_in_float32_more_accurate_than_eager():
    """A path more accurate than eager: tf2xla reduces float16 and bfloat16 sums in float32
    (XlaHelpers::SumAccumulationType, tensorflow/compiler/tf2xla/xla_helpers.cc: DT_HALF and DT_BFLOAT16
    -> DT_FLOAT), where eager TensorFlow's CPU kernel accumulates float16 in float16: the witness of
    tf-scratch-fp16-sum-overflow (Σ(x − mean)² = 7.1e4 > 65504; eager: moving variance inf, output off
    by 0.896) is within the bounds on tf.scratch+xla."""
    d = next(d for d in KNOWN if d.id == "tf-scratch-fp16-sum-overflow")
    with pytest.raises(AssertionError):
        PROPERTIES[d.witness_property].check(registry.load("tf.scratch"), d.witness, "cpu")
    PROPERTIES[d.witness_property].check(registry.load("tf.scratch+xla"), d.witness, "cpu")


def test_xla_float32_batch_statistics_more_accurate_than_eager_at_bn1_size():
    """A path more accurate than eager: at BN-LeNet's bn1 size (128·24·24 values per channel, float32,
    mean 3, std 2) tf.nn.moments (what Keras' layer calls) under XLA has a batch-mean error 2.6x and a
    batch-variance error 40x smaller than eager's (measured: relative 2.7e-6 against 6.9e-6, and 2.8e-7
    against 1.1e-5): XLA's CPU reduction does not add a channel's values one by one."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((128, 24, 24, 6)) * 2 + 3).astype(np.float32)
    x64 = x.astype(np.float64)
    m64, v64 = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))

    def errors(m, v):
        return np.abs(m.numpy() - m64).max() / np.abs(m64).max(), np.abs(v.numpy() - v64).max() / v64.max()
    eager = errors(*tf.nn.moments(tf.constant(x), [0, 1, 2]))
    xla = errors(*tf.function(lambda t: tf.nn.moments(t, [0, 1, 2]), jit_compile=True)(tf.constant(x)))
    assert xla[0] < eager[0] / 2 and xla[1] < eager[1] / 10, (xla, eager)
