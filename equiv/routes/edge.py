"""Routes of the edge runtimes: torch.builtin's eval-mode model (Conv2d → BatchNorm2d, Linear →
BatchNorm1d, or a BatchNorm2d alone on the conv layer's output z) exported with torch.export and
lowered by the tool, then run in the tool's own runtime:

- ExecuTorch: ``to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])
  .to_executorch()``, the .pte buffer run by ``executorch.runtime.Runtime``;
- litert-torch (formerly ai-edge-torch): ``litert_torch.convert(model, (x,))``, its flatbuffer run by
  the LiteRT interpreter (``ai_edge_litert``, default XNNPACK delegate, as a deployed model runs);
- Apache TVM: ``relax.frontend.torch.from_exported_program`` then ``tvm.compile(mod, target="llvm")``,
  run by ``relax.VirtualMachine`` on the CPU.

The route functions take the model and return an ``Edge``: it lowers on its first call (every tool
needs the example input's shape) and keeps the ops the lowered program holds in ``ops``, from which
``folded`` tells whether the BatchNorm's arithmetic went into the layer's weights.

Measured (torch 2.13.0; tests/test_routes_edge.py): all three export the eval-mode model, so what runs
is inference with the running statistics; none keeps a trainable BatchNorm (no training mode, momentum
or running-variance estimator survives to compare). ExecuTorch 1.5.1 delegates everything to XNNPACK:
a BatchNorm after a Conv2d or Linear is folded by torch's own fuse_conv_bn_weights / fuse_linear_bn_weights
in the model's dtype (executorch/backends/xnnpack/_passes/fuse_batch_norm.py:25, :224, :227), a BatchNorm
alone becomes a 1×1 depthwise convolution whose weight and bias are computed in float64 and cast
(decompose_batch_norm.py:141-150; eps passes through a float32 tensor there, :146, a relative change
below 3e-8 that no bound sees). litert-torch 0.10.0 (float32 only: equiv.routes.NOT_RUN) folds into
CONV_2D and FULLY_CONNECTED and leaves a BatchNorm alone as MUL and ADD. TVM 0.27.0 keeps
relax.nn.batch_norm (eps kept as a float64 attribute, training=False) and folds nothing. The given eps
survives in all three. Findings: equiv/known/edge.py.
"""
import numpy as np
import torch

from equiv.routes import torch_fold as tf
from equiv.routes.states import bn_input
from equiv.routes.tf_convert import LITE_FOLDED
from equiv.routes.tf_convert import litert_interpreter as _interpreter


def build(state, layer):
    """The eval-mode torch model of ``layer`` ("conv", "linear", or "bn": the BatchNorm alone) on the state."""
    if layer != "bn":
        return tf.build(state)
    model = tf.build(state)[1]
    return torch.nn.Sequential(model).eval()


def model_input(state, layer):
    x = bn_input(state) if layer == "bn" else state.x
    return torch.tensor(np.asarray(x, dtype=np.float64)).to(tf.DTYPES[state.dtype])


def run(model, state, layer):
    """The model's (or the Edge's) output on the state's input, float64."""
    with torch.no_grad():
        y = model(model_input(state, layer))
    return np.asarray(y.to(torch.float64) if isinstance(y, torch.Tensor) else y, dtype=np.float64)


class Edge:
    """A torch model lowered by ``lower(model, x) -> (program, ops)`` on its first input."""

    def __init__(self, model, lower):
        self.model, self.lower = model, lower
        self.program, self.ops = None, ()

    def __call__(self, x):
        if self.program is None:
            self.program, self.ops = self.lower(self.model, x)
        return self.program(x)

    def folded(self, unfolded_ops):
        """No op of ``unfolded_ops`` (a BatchNorm left, or its arithmetic) in the lowered program."""
        return not any(any(u in op for u in unfolded_ops) for op in self.ops)


# --- ExecuTorch: XNNPACK delegate --------------------------------------------------------------

def _executorch(model, x):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime
    edge = to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])
    program = edge.to_executorch()
    ops = tuple(str(n.target) for n in program.exported_program().graph_module.graph.nodes
                if n.op == "call_function")
    # the Program holds the .pte bytes (executorch/runtime/__init__.py:168-170) and a Method does not hold
    # its Program: dropped, the method reads freed memory (measured: garbage output shapes, error 0x10)
    loaded = Runtime.get().load_program(program.buffer)
    method = loaded.load_method("forward")
    return (lambda t, _keep=loaded: method.execute([t])[0]), ops


def executorch_xnnpack(model):
    return Edge(model, _executorch)


# --- litert-torch: LiteRT flatbuffer --------------------------------------------------------------


def _litert(model, x):
    import litert_torch
    flatbuffer = litert_torch.convert(model, (x,)).model_content()
    ops = tuple(op["op_name"] for op in _interpreter(flatbuffer, plain=True)._get_ops_details())
    it = _interpreter(flatbuffer)

    def run_lite(t):
        it.set_tensor(it.get_input_details()[0]["index"], t.numpy())
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])
    return run_lite, ops


def litert(model):
    return Edge(model, _litert)


# --- Apache TVM: relax on the llvm CPU target ----------------------------------------------------

def _tvm(model, x):
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program
    mod = from_exported_program(torch.export.export(model, (x,)), keep_params_as_input=False)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return (lambda t: vm["main"](tvm.runtime.tensor(t.numpy()))[0].numpy()), tuple(sorted(relax_ops(mod)))


def relax_ops(mod):
    """{name: attrs} of the relax operators the module calls ("relax.nn.batch_norm": its epsilon, training)."""
    import tvm
    from tvm import relax
    found = {}

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            found[str(e.op.name)] = e.attrs
    for fn in mod.functions.values():
        if isinstance(fn, relax.Function):
            relax.analysis.post_order_visit(fn, visit)
    return found


def tvm_relax(model):
    return Edge(model, _tvm)


# what a BatchNorm left unfolded shows as in the lowered program: ExecuTorch, an aten batch_norm op outside
# the XNNPACK delegate (XNNPACK has none: it takes a BatchNorm only to fuse or decompose it); LiteRT, the
# flatbuffer's builtin ops; TVM, the relax module's ops
UNFOLDED = {"executorch_xnnpack": ("batch_norm",), "litert": LITE_FOLDED, "tvm_relax": ("batch_norm",)}


def output(route, state, layer, training=False):
    """The route on the state's model (equiv.routes.probes): ({"": y}, folded); ``training``: the model
    given in training mode."""
    made = globals()[route.function](build(state, layer).train(training))
    y = run(made, state, layer)
    return {"": y}, made.folded(UNFOLDED[route.function])
