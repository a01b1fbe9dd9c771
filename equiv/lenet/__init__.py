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

``lockstep.run`` and ``train.train`` drive such a module and know nothing of the framework. A net is
known by its label (``NETS``: "tf.keras" is ``tf_net``'s variant "builtin"; ``label_of``).

BN conventions of each implementation, for the reference (``reference.lenet`` takes them as
arguments): read from the declared table ``equiv.conventions.DECLARED``. The book's PyTorch
``BatchNorm`` hard-codes eps 1e-5 and momentum 0.1 (new-batch weight 0.1), which are exactly
``torch.nn.BatchNorm*``'s defaults; the two differ only in the running variance (the book's
is biased, torch's unbiased).
"""

import numpy as np

from equiv.conventions import DECLARED

# framework -> (implementation module, framework import name); equiv.registry.load_lenet resolves a label
FRAMEWORKS = {"torch": ("equiv.lenet.torch_net", "torch"),
              "tf": ("equiv.lenet.tf_net", "tensorflow"),
              "jax": ("equiv.lenet.jax_net", "flax"),
              "mxnet": ("equiv.lenet.mxnet_net", "mxnet"),
              "paddle": ("equiv.lenet.paddle_net", "paddle"),
              "equinox": ("equiv.lenet.equinox_net", "equinox")}
# The single-device BN-LeNets: label -> (framework, the module's variant ``impl``). A net is named after the
# adapter of its BN layer (tf.keras: keras.layers.BatchNormalization; the book's layers: framework.scratch).
NETS = {"torch.builtin": ("torch", "builtin"), "torch.scratch": ("torch", "scratch"),
        "tf.keras": ("tf", "builtin"), "tf.scratch": ("tf", "scratch"),
        "flax.linen": ("jax", "builtin"), "jax.scratch": ("jax", "scratch"),
        "mxnet.gluon": ("mxnet", "builtin"), "mxnet.scratch": ("mxnet", "scratch"),
        "paddle.builtin": ("paddle", "builtin"),                      # no book layer for Paddle
        "equinox.batch": ("equinox", "batch"), "equinox.ema": ("equinox", "ema")}   # eqx.nn.BatchNorm's modes
# The labels these nets had before (framework.variant), accepted on input and mapped when reading older files
# (the committed runs under reference/data/runs carry them): old label -> label.
OLD_LABELS = {"tf.builtin": "tf.keras", "jax.builtin": "flax.linen", "mxnet.builtin": "mxnet.gluon"}
_LABEL_OF = {variant: label for label, variant in NETS.items()}


def current_label(name):
    """The label of a BN-LeNet name: an old label mapped to its net's label, any other name unchanged."""
    return OLD_LABELS.get(name, name) if isinstance(name, str) else name


def label_of(module, impl):
    """The label of an implementation module's variant ``impl`` (a data-parallel one: framework.impl)."""
    return _LABEL_OF.get((module.FRAMEWORK, impl), f"{module.FRAMEWORK}.{impl}")


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


# The adapter whose BN layer each net uses (the book's BN-LeNet uses these layers as they are): a
# single-device net's own label.
ADAPTER = {**{label: label for label in NETS},
           # data-parallel nets: the same built-in layers on R replicas
           "torch.ddp": "torch.builtin", "jax.pmap": "flax.linen",
           "tf.mirrored": "tf.keras", "tf.mirrored.sync": "tf.keras",
           "mxnet.sync": "mxnet.gluon", "mxnet.contexts": "mxnet.gluon"}
# label -> keyword arguments of reference.lenet.forward / loss_and_grads
CONVENTIONS = {label: _bn_conventions(adapter) for label, adapter in ADAPTER.items()}
# torch.builtin: eps 1e-5, new-batch weight 0.1, unbiased running var
# torch.scratch: eps 1e-5, new-batch weight 0.1, biased running var (hard-coded in the book)
# tf.keras (keras.layers.BatchNormalization): eps 1e-3, new-batch weight 0.01 (momentum 0.99), biased
# tf.scratch: eps 1e-5, new-batch weight 0.1, biased running var (hard-coded in the book)
# flax.linen (flax.linen.BatchNorm): eps 1e-5, new-batch weight 0.01 (momentum 0.99), biased;
#   the fast variance E[x²] − E[x]² (fine here: BN inputs of this net have |mean| ≲ std)
# jax.scratch: eps 1e-5, new-batch weight 0.1 (momentum 0.9), biased; the book's 4-D branch
#   reduces over (0, 2, 3) of NHWC data: per row H, not per channel (equiv.known)
# mxnet.gluon (gluon.nn.BatchNorm): eps 1e-5, new-batch weight 0.1 (momentum 0.9), biased
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
