"""BN-LeNet across frameworks: lockstep comparison with the NumPy reference and training.

An *implementation module* (``equiv.lenet.torch_net``, one per framework) offers, for each
of its variants ``impl`` (``"builtin"``, ``"scratch"``):

    FRAMEWORK, IMPLS, version(), devices()
    build(impl, dtype, device) -> net
    load_params(net, params)          params: dict of reference.lenet (PyTorch layouts)
    get_params(net) -> dict           float64 NumPy, names and shapes of reference.lenet
    get_state(net) -> dict            BN running stats, names of reference.lenet.init_state
    as_arrays(net, x, y) -> (X, Y)    NumPy -> framework arrays on the net's device and dtype
    step(net, x, y, lr, capture=True) -> (loss, activations)
                                      one SGD step in training mode; activations: name ->
                                      NumPy, names and order of reference.lenet.ACTIVATIONS
                                      (capture=False: only "fc3", the logits)
    evaluate(net, x, y, batch) -> (loss, acc) in inference mode

``lockstep.run`` and ``train.train`` drive such a module and know nothing of the framework.

BN conventions of each implementation, for the reference (``reference.lenet`` takes them as
arguments): read from the declared table ``equiv.conventions.DECLARED``. The book's PyTorch
``BatchNorm`` hard-codes eps 1e-5 and momentum 0.1 (new-batch weight 0.1), which are exactly
``torch.nn.BatchNorm*``'s defaults; the two differ only in the running variance (the book's
is biased, torch's unbiased).
"""
from dataclasses import dataclass

import numpy as np

from equiv.conventions import DECLARED

# framework -> (implementation module, framework import name); equiv.registry.load_lenet resolves a label
FRAMEWORKS = {"torch": ("equiv.lenet.torch_net", "torch"),
              "tf": ("equiv.lenet.tf_net", "tensorflow"),
              "jax": ("equiv.lenet.jax_net", "flax"),
              "mxnet": ("equiv.lenet.mxnet_net", "mxnet"),
              "paddle": ("equiv.lenet.paddle_net", "paddle"),
              "equinox": ("equiv.lenet.equinox_net", "equinox")}
# no book layer for Paddle
IMPLS = {fw: ("builtin",) if fw == "paddle" else ("builtin", "scratch") for fw in FRAMEWORKS}
IMPLS["equinox"] = ("batch", "ema")          # eqx.nn.BatchNorm's two modes; no book variant

# Data-parallel BN-LeNets (``equiv lockstep --impls torch.ddp``): label -> (module, framework). Such a
# module has the protocol above plus ``DATA_PARALLEL = (replicas, synchronized)`` (or a dict variant ->
# that pair, for a module with several variants): ``step`` takes the
# global batch and cuts it into the replicas' shards; ``get_state`` is rank 0's. ``lockstep.run``
# compares it with the reference's data-parallel step (``reference.lenet.data_parallel_loss_and_grads``).
PARALLEL = {"torch.ddp": ("equiv.lenet.torch_ddp_net", "torch"),
            "jax.pmap": ("equiv.lenet.jax_pmap_net", "flax"),
            "tf.mirrored": ("equiv.lenet.tf_mirrored_net", "tensorflow"),
            "tf.mirrored.sync": ("equiv.lenet.tf_mirrored_net", "tensorflow"),
            "mxnet.sync": ("equiv.lenet.mxnet_sync_net", "mxnet"),
            "mxnet.contexts": ("equiv.lenet.mxnet_sync_net", "mxnet")}


def _bn_conventions(label):
    c = DECLARED[label]
    return dict(eps=c.default_eps, new_batch_weight=c.default_new_batch_weight,
                unbiased=c.running_var == "unbiased")


# The adapter whose BN layer each variant uses (the book's BN-LeNet uses these layers as they are).
ADAPTER = {"torch.builtin": "torch.builtin", "torch.scratch": "torch.scratch",
           "tf.builtin": "tf.keras", "tf.scratch": "tf.scratch",
           "jax.builtin": "flax.linen", "jax.scratch": "jax.scratch",
           "mxnet.builtin": "mxnet.gluon", "mxnet.scratch": "mxnet.scratch",
           "paddle.builtin": "paddle.builtin",
           "equinox.batch": "equinox.batch", "equinox.ema": "equinox.ema",
           # data-parallel nets: the same built-in layers on R replicas
           "torch.ddp": "torch.builtin", "jax.pmap": "flax.linen",
           "tf.mirrored": "tf.keras", "tf.mirrored.sync": "tf.keras",
           "mxnet.sync": "mxnet.gluon", "mxnet.contexts": "mxnet.gluon"}
# label -> keyword arguments of reference.lenet.forward / loss_and_grads
CONVENTIONS = {label: _bn_conventions(adapter) for label, adapter in ADAPTER.items()}
# torch.builtin: eps 1e-5, new-batch weight 0.1, unbiased running var
# torch.scratch: eps 1e-5, new-batch weight 0.1, biased running var (hard-coded in the book)
# tf.builtin (keras.layers.BatchNormalization): eps 1e-3, new-batch weight 0.01 (momentum 0.99), biased
# tf.scratch: eps 1e-5, new-batch weight 0.1, biased running var (hard-coded in the book)
# jax.builtin (flax.linen.BatchNorm): eps 1e-5, new-batch weight 0.01 (momentum 0.99), biased;
#   the fast variance E[x²] − E[x]² (fine here: BN inputs of this net have |mean| ≲ std)
# jax.scratch: eps 1e-5, new-batch weight 0.1 (momentum 0.9), biased; the book's 4-D branch
#   reduces over (0, 2, 3) of NHWC data: per row H, not per channel (equiv.known)
# mxnet.builtin (gluon.nn.BatchNorm): eps 1e-5, new-batch weight 0.1 (momentum 0.9), biased
# mxnet.scratch: eps 1e-12, new-batch weight 0.1, biased running var (hard-coded in the book)
# paddle.builtin (paddle.nn.BatchNorm2D/1D): eps 1e-5, new-batch weight 0.1 (momentum 0.9), biased
# equinox.batch, equinox.ema (eqx.nn.BatchNorm, mode "batch" / "ema"): eps 1e-5, new-batch weight
#   0.01 (momentum 0.99), biased


def epoch_order(n, seed, epoch):
    """The shuffled example order of one epoch: the same for every framework."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def scale_images(images, dtype="float64"):
    """uint8 (N, 28, 28) -> (N, 1, 28, 28) in [0, 1], divided by 255 in ``dtype``
    (correctly rounded there); float images are passed through, reshaped."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        a = a.astype(dtype) / np.asarray(255.0, dtype=dtype)
    return a.reshape(-1, 1, 28, 28)


def synthetic(n, seed):
    """n deterministic synthetic examples (images in [0, 1], labels 0..9) from the seed.

    Each class has its own mean image; examples are it plus noise, clipped to [0, 1], so the
    net has something to learn while no real data is needed.
    """
    rng = np.random.default_rng([seed, 12345])
    means = rng.uniform(0.0, 1.0, size=(10, 1, 28, 28))
    y = rng.integers(0, 10, size=n)
    x = np.clip(means[y] + rng.normal(0.0, 0.3, size=(n, 1, 28, 28)), 0.0, 1.0)
    return x, y


@dataclass(frozen=True)
class NetFinding:
    """A documented difference of a whole BN-LeNet from the reference (``equiv lockstep``).

    ``where`` = (step, kind, layer): the first divergence lockstep names, for each dtype in
    ``dtypes`` on ``data`` ("any": the synthetic test batches too; "fashion-mnist": only the
    real data, batch 128), as measured with the tests' seeds (3 synthetic, 0 Fashion-MNIST).
    ``tests/test_lenet_nets.py`` asserts exactly that place, so a fix upstream makes the test
    fail until the entry goes. The layer can move with the seed while the mechanism stays (the
    float32 sequential sums, seed 1: step 1 again, but first over tolerance in sig1, 8.5e-5).

    ``edge``: quantities of ``where``'s step (lockstep's keys, "param:bn3.beta") measured within a
    few percent of the tolerance, over it on some CPUs and under it on others (the vector ISA picks
    the kernels, and so the rounding): lockstep may name one of them first, and ``shows`` accepts
    that as long as ``where`` is over the tolerance too. Each is listed with its measured ratios.
    """
    id: str
    label: str
    dtypes: tuple
    data: str
    where: tuple
    reason: str
    edge: tuple = ()


def _key(kind, layer):
    return "loss" if kind == "loss" else f"{kind}:{layer}"


def shows(finding, r):
    """Whether the lockstep result ``r`` diverges where ``finding`` says: its first divergence is
    ``finding.where``, or one of ``finding.edge`` at that step with ``where`` over the tolerance as well."""
    f = r["first_divergence"]
    if f is None or f["step"] != finding.where[0]:
        return False
    named, documented = _key(f["kind"], f["layer"]), _key(*finding.where[1:])
    return named == documented or (named in finding.edge
                                   and r["per_step"][f["step"] - 1]["rel_error"][documented] > f["tolerance"])


NET_FINDINGS = (
    NetFinding("gluon-momentum-float32", "mxnet.builtin", ("float64",), "any", (1, "state", "bn1.running_mean"),
               "gluon keeps momentum 0.9 as a C++ float: the new-batch weight is 1 − fl32(0.9) = "
               "0.10000002384, so float64 running statistics are float32-accurate (bn1.running_mean "
               "off by 2.4e-7 relative at step 1); everything else agrees to float64 rounding."),
    NetFinding("gluon-float32-sequential-sum", "mxnet.builtin", ("float32",), "fashion-mnist",
               (1, "param", "bn3.beta"),
               "gluon's CPU kernel sums a channel's gradient values one by one in a float32 "
               "accumulator (BatchNormBackwardImpl), an error growing like m·u32 instead of "
               "sqrt(m)·u32: on Fashion-MNIST (batch 128) bn3.beta is off by 9.7e-5 against the "
               "tolerance 6.9e-5 at step 1."),
    *(NetFinding("tf-float32-sequential-sum", label, ("float32",), "fashion-mnist", (1, "param", "bn3.beta"),
                 "on the CPU, TensorFlow reduces over the leading axes keeping the channels (tf.nn.moments, "
                 "reduce_mean, the gradient sums) by adding rows one after another in float32 (Eigen's "
                 "InnerMostDimPreserver: one accumulator per channel below 8 channels, four above): on "
                 "Fashion-MNIST bn1's batch mean over 73,728 values per channel is off by 7.5e-5 at step 1 "
                 "(a sequential float32 sum in NumPy: 7.506e-5; pairwise: 1.2e-8), carried into bn3.beta "
                 "(9.3e-5 builtin, 9.7e-5 scratch, against the tolerance 6.9e-5). With Keras' moments "
                 "computed in float64 the 30-step float32 lockstep passes. Both Keras' layer and the book's "
                 "use these reductions.") for label in ("tf.builtin", "tf.scratch")),
    NetFinding("tf-float32-sequential-sum", "tf.mirrored", ("float32",), "fashion-mnist", (1, "param", "bn1.beta"),
               "under MirroredStrategy each replica's Keras BN sums its own 32 images with the float32 reductions "
               "of tf-float32-sequential-sum: on Fashion-MNIST bn1.beta is off by 7.6e-5 to 7.9e-5 at step 1 against "
               "the tolerance 6.9e-5 (1.11 to 1.15 times with oneDNN's AVX, AVX2 and AVX-512 kernels; its gradient "
               "sums 18,432 values a channel a replica, then the optimizer sums "
               "the replicas'); the float64 net agrees to 5% of its tolerance over 30 steps, the float32 net on "
               "synthetic batches stays within it."),
    NetFinding("tf-mirrored-sync-fast-variance", "tf.mirrored.sync", ("float32",), "fashion-mnist",
               (1, "param", "bn1.beta"),
               "Keras' synchronized BN under MirroredStrategy (tf-sync-fast-variance-offset in a whole net): at step 1 "
               "bn1.beta is off by 9.4e-5 to 1.05e-4 against 6.9e-5 (1.36 to 1.53 times, with oneDNN's AVX2, "
               "AVX-512 and AVX kernels), the float32 sums as tf.mirrored's (7.6e-5 to 7.9e-5); bn3.beta sits at "
               "the tolerance (0.978, 0.993, 1.001 times with AVX2, AVX, AVX-512), so on an AVX-512 CPU lockstep "
               "names it first; then the variance E[x²] − E[x]² of "
               "_compute_moments_sync (keras/src/backend/tensorflow/nn.py:1539) multiplies the float32 sums' "
               "errors of Σx² by E[x²]/var = 1 + (mean/std)², up to 5.4 for bn1's inputs (|mean|/std up to 2.1): "
               "bn1's output is off by 4.8e-5 at step 1 (per shard: 2.2e-5) and by 1.2e-3 at step 13, 5.4 times "
               "the step's tolerance, while tf.mirrored's bn1 stays within 5.9e-5 over 30 steps. With the moments "
               "computed as Σ(x − mean)² over the all-reduced mean (the same float32 sums), bn1 stays within "
               "8.2e-5 over 16 steps (0.37 of the tolerance at step 13) and only step 1's bn1.beta (8.0e-5) is "
               "left. The float64 net agrees to 26% of its tolerance over 30 steps.",
               edge=("param:bn3.beta",)),
    NetFinding("gluon-float32-sequential-sum", "mxnet.contexts", ("float32",), "fashion-mnist",
               (1, "param", "bn1.beta"),
               "gluon's CPU BatchNorm on each of 4 contexts sums its own 32 images in float32 one value after "
               "another (gluon-float32-sequential-sum): on Fashion-MNIST bn1.beta is off by 8.1e-5 at step 1 "
               "against the tolerance 6.9e-5 (its gradient sums 18,432 values a channel a context, then the "
               "Trainer sums the contexts'), and context 0's bn1.running_mean by 4.3e-5 (a sequential float32 "
               "mean of its bn1 input in NumPy: 4.33e-5); over 30 steps bn1's output reaches 2.1 times the step's "
               "tolerance (step 28). mxnet.sync (SyncBatchNorm's own kernel, the same Trainer) agrees "
               "within 0.16 of the tolerance over 30 steps."),
    NetFinding("paddle-float32-eps-momentum", "paddle.builtin", ("float64",), "any", (1, "act", "bn1"),
               "Paddle's kernels take eps and momentum as C++ floats (paddle-eps-float32, "
               "paddle-momentum-float32): a float64 net normalizes with float32(1e-5) (bn1's output off by "
               "5.2e-12 relative at step 1 against the tolerance 8.2e-13, seed 3) and weighs the new batch by "
               "0.10000002384 (bn1.running_mean off by 2.4e-7); against a reference given float32(eps) and "
               "1 − float32(0.9) the 5-step float64 lockstep agrees to 6.3e-14 (tests/test_lockstep_paddle.py)."),
    NetFinding("jax-scratch-4d-reduces-n-w-c", "jax.scratch", ("float64", "float32"), "any", (1, "act", "bn1"),
               "the book's JAX layer normalizes NHWC conv outputs per row H over (N, W, C) instead of "
               "per channel (equiv.known); bn1's output differs at step 1 and its moving statistics "
               "become (1, 24, 1, 6) arrays, which cannot be compared with 6 per-channel values."),
    NetFinding("equinox-ema-normalizes-with-moving-averages", "equinox.ema", ("float64", "float32"), "any",
               (1, "act", "bn1"),
               "eqx.nn.BatchNorm(mode=\"ema\"), what a layer built without mode is, normalizes a training "
               "batch with 0.01·batch + 0.99·running statistics, not the batch's (equinox/nn/_batch_norm.py:"
               "235-240, 264; equiv.known): from the shared initialization (running statistics (0, 1)) bn1's "
               "output is off by 0.876 relative at step 1 (seed 3, batch 16, both dtypes; conv1 within "
               "tolerance), and the loss by 0.38, the parameters by 2.4 over 5 steps. mode=\"batch\" "
               "(equinox.batch) agrees with the reference to 1.5e-14 (float64) / 4.6e-6 (float32)."),
)


def net_findings(label, dtype, data):
    """The NetFinding entries that apply to a lockstep of ``label`` in ``dtype`` on ``data``
    ("synthetic" or "fashion-mnist")."""
    return [f for f in NET_FINDINGS
            if f.label == label and dtype in f.dtypes and (f.data == "any" or f.data == data)]


# What the book's own BN-LeNet code does differently, beyond its BN layers (measured by tests).
BOOK_NOTES = (
    ("book-jax-conv-pads-same",
     "the book's JAX tab writes nn.Conv(6, kernel_size=(5, 5)) without padding, and flax.linen.Conv pads "
     "'SAME' by default: its BN-LeNet has a 28×28 conv1 output and fc1 fan-in 16·7·7 = 784, not 256 as "
     "in the other tabs (tests/test_lockstep_jax.py builds the chapter's nn.Sequential and measures the "
     "(784, 120) kernel). equiv's JAX net uses padding='VALID', the network of the other tabs."),
    ("book-tf-lr-0.5",
     "the book trains its TensorFlow tab with lr 0.5, the others with 0.1; `equiv train --lr` takes "
     "either, the band compares lr 0.1 runs and lists the lr 0.5 runs apart."),
)
