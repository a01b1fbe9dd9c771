"""Routes of the torch folders: each a few lines that hand the eval-mode model (layer → BatchNorm,
an ``nn.Sequential`` of two modules named "0" and "1"; or a whole ``nn.Sequential`` such as BN-LeNet,
tests/test_lenet_routes.py) to the tool and return what it makes.

The folding code they run (torch 2.13.0): torch/nn/utils/fusion.py, fuse_conv_bn_weights
(``rsqrt(var + eps)`` at :91, W·(gamma·rsqrt) at :98, (b − mean)·rsqrt·gamma + beta at :101) and
fuse_linear_bn_weights (gamma·rsqrt(var + eps) at :189, W·scale at :191, bias at :192).
torch.ao.quantization.fuse_modules reaches them through fuser_method_mappings.fuse_conv_bn (:68) and
fuse_linear_bn (:169); torch.fx.experimental.optimization.fuse through :109 and :111 (measured: the
three give the same outputs, bit for bit). Inductor's freezing folds otherwise: its pre-grad
fuse_conv_bn (torch/_inductor/fx_passes/pre_grad.py:415) runs but matches nothing in dynamo's graph
(measured: neither fusion function is called); the freezing passes' binary folding
(torch/_inductor/fx_passes/freezing_patterns.py:51-65) folds the decomposed BatchNorm's four
constant sub/mul/add into the convolution's frozen weight and bias (counters["inductor"]
["binary_folding"] = 4), in float32 for a float16 or bfloat16 convolution, then cast back
(binary_folding.py:44-60). A Linear → BatchNorm1d is not folded: the generated code keeps a
``_native_batch_norm_legit_no_training`` epilogue after the matmul, its statistics as constants.
"""
import numpy as np
import torch

_BN = torch.nn.modules.batchnorm._BatchNorm
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build(state):
    """The eval-mode torch model (layer → BatchNorm) of a FoldState, in its dtype."""
    w_shape = state.w.shape
    if state.layer == "conv":
        layer = torch.nn.Conv2d(w_shape[1], w_shape[0], tuple(w_shape[2:]), stride=state.stride,
                                padding=state.padding, bias=state.bias)
        bn = torch.nn.BatchNorm2d(w_shape[0], eps=state.eps)
    else:
        layer = torch.nn.Linear(w_shape[1], w_shape[0], bias=state.bias)
        bn = torch.nn.BatchNorm1d(w_shape[0], eps=state.eps)
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        layer.weight.copy_(t(state.w))
        if state.bias:
            layer.bias.copy_(t(state.b))
        for name in ("running_mean", "running_var"):
            getattr(bn, name).copy_(t(getattr(state, name)))
        bn.weight.copy_(t(state.gamma))
        bn.bias.copy_(t(state.beta))
    return torch.nn.Sequential(layer, bn).to(DTYPES[state.dtype]).eval()


def run(model, state):
    """The model's output on the state's input, as float64."""
    with torch.no_grad():
        y = model(torch.tensor(state.x, dtype=torch.float64).to(DTYPES[state.dtype]))
    return y.to(torch.float64).numpy()


def fuse_eval(model):
    from torch.nn.utils import fusion
    layer, bn = model[0], model[1]
    fuse = fusion.fuse_conv_bn_eval if isinstance(layer, torch.nn.Conv2d) else fusion.fuse_linear_bn_eval
    return torch.nn.Sequential(fuse(layer, bn)).eval()


def ao_fuse_modules(model):
    """fuse_modules given every (layer, BatchNorm) pair of adjacent children, as a user lists them: ["0", "1"]
    for the route's two-module model, ["conv1", "bn1"], ... for BN-LeNet."""
    from torch.ao.quantization import fuse_modules
    children = list(model.named_children())
    pairs = [[a, b] for (a, m), (b, n) in zip(children, children[1:])
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and isinstance(n, _BN)]
    return fuse_modules(model, pairs, inplace=False)


def fx_fuse(model):
    from torch.fx.experimental.optimization import fuse
    return fuse(model)


def batch_norms(model):
    """The BatchNorm modules left in a (folded or converted) model."""
    return [m for m in model.modules() if isinstance(m, _BN)]


def has_batch_norm(model):
    """Whether a BatchNorm module is left in the (folded) model."""
    return bool(batch_norms(model))


class Frozen(torch.nn.Module):
    """The model compiled by inductor with freezing on; keeps the code of its last compile in ``code``."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.code = None

    def forward(self, x):
        import torch._inductor.config as config
        from torch._inductor.utils import run_and_get_code
        torch._dynamo.reset()          # every state is a new set of constants: compile afresh
        with config.patch(freezing=True), torch.no_grad():
            y, self.code = run_and_get_code(torch.compile(self.inner), x)
        return y

    def folded(self):
        """True when the generated code has no BatchNorm kernel left (the statistics went into the
        layer's weights and bias; an unfolded BatchNorm leaves a kernel named after
        _native_batch_norm_legit_no_training)."""
        return self.code is not None and not any("batch_norm" in c for c in self.code)


def inductor_freezing(model):
    return Frozen(model)


def output(route, state, layer, training=False):
    """The route on the state's model (equiv.routes.probes): ({"": y}, folded); ``training``: the model
    given in training mode."""
    made = globals()[route.function](build(state).train(training))
    y = run(made, state)
    return {"": y}, made.folded() if isinstance(made, Frozen) else not has_batch_norm(made)
