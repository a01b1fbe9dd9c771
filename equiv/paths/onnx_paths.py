"""ONNX paths: torch.builtin exported with ``torch.onnx.export`` and run by onnxruntime on the CPU,
and the ``onnx.node`` adapter along its other opsets and with onnxruntime's graph optimizations.

Exported paths of torch.builtin (the eager adapter keeps the module and its state; each call
exports it, with the current state as the graph's initializers, for the call's input shape):

- ``torch.builtin+onnx``: the TorchScript-based exporter (``dynamo=False``, opset 20).
  Inference: ``module.eval()``, ``training=TrainingMode.EVAL``: one BatchNormalization node,
  ``training_mode=0``. Training: ``training=TrainingMode.TRAINING``: ``training_mode=1`` with
  three node outputs, but the running mean and variance are left dangling, not graph outputs
  (symbolic_opset14.batch_norm returns only the normalized output); this path adds the two to
  the graph's outputs and writes them back into the module, as a training loop over the exported
  graph would. They follow the ONNX spec, not torch: a biased running variance, and a momentum
  attribute ``1 − momentum`` stored as a float32. The exporter traces the module in training
  mode, which moves the module's running statistics one step on the example input, and the
  graph's running-statistics initializers are those moved values, not the module's state before
  the export (tests/test_onnx_findings.py): the path exports a copy and binds the node's inputs
  to the module's state, so that a call measures the graph's arithmetic only (and one export per
  input shape and setting serves every state).
- ``torch.builtin+onnx_dynamo``: the torch.export-based exporter (``dynamo=True``). It ignores
  ``training=`` and translates a training-mode module into an *inference* node: onnxscript's
  torchlib ``aten__native_batch_norm_legit_functional`` sets ``training = False`` (a "temporary
  fix" for onnxruntime), and the running-statistics updates are dropped. A training call of this
  path therefore normalizes with the running statistics and changes no state; the divergences in
  ``equiv.known`` say so. One export takes about 3 s (torch.export, decompositions, onnxscript
  optimizer), too slow for every Hypothesis case: the path exports once per (ndim, dtype, mode)
  and instantiates that graph for the call (input shape, initializers from the module's state,
  the epsilon and momentum attributes as the exporter writes them: float32(eps), float32(1 − m)).
  ``tests/test_paths_onnx.py`` checks that the instantiated graph equals a real export, node for
  node, attribute for attribute, on several shapes, eps and momenta.

Neither computes gradients (onnxruntime's InferenceSession has none). float64 and float32 only
(the exports of a float16 module are not run here).

Paths of ``onnx.node`` (opset 15, training_mode 1/0, graph optimizations off): ``+opset9`` (no
training_mode attribute: training is five outputs), ``+opset14``, ``+optimized``
(``ORT_ENABLE_ALL``, onnxruntime's default level).
"""
import copy
import functools
import io
import warnings
from dataclasses import replace

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from equiv.backends.onnx import NP, momentum_weight, runtime

TORCHSCRIPT_CONVENTIONS = dict(
    running_var="biased",     # ONNX BatchNormalization: population variance
    default_mode="inference",  # torch.onnx.export's default training=TrainingMode.EVAL
    # batch_of_one: "error", as torch: the exporter runs the module's own forward to trace it
    mode_switch="torch.onnx.export(training=TrainingMode.TRAINING / EVAL)")

DYNAMO_CONVENTIONS = dict(
    stats_update="never", default_mode="inference",
    mode_switch="none: dynamo=True exports a training-mode module as an inference node")
# no training-mode graph: these probes measure a training forward and find the inference node
DYNAMO_UNMEASURED = dict.fromkeys(
    ("new_batch_weight", "running_var", "default_eps", "variance", "batch_of_one", "channel_axis", "debias"),
    "no training-mode graph (onnx-dynamo-training-exports-inference): the probe measures a training forward")


def bn_node(model):
    (node,) = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    return node


def export(module, x, mode, dynamo, **options):
    """The ModelProto ``torch.onnx.export`` writes for ``module`` on input ``x``: mode "train"
    (module.train(), training=TRAINING), "infer" (module.eval()) or "default" (the module as
    built, no training argument); ``options`` go to the TorchScript exporter. Exports a copy:
    tracing a training-mode module updates its running statistics."""
    m = copy.deepcopy(module)
    m.train(mode != "infer")
    kw = {"training": torch.onnx.TrainingMode.TRAINING} if mode == "train" else {}
    with warnings.catch_warnings():   # deprecation notes on the TorchScript exporter and on training=
        warnings.simplefilter("ignore")
        if dynamo:
            return torch.onnx.export(m, (x,), dynamo=True, verbose=False, input_names=["input"], **kw).model_proto
        f = io.BytesIO()
        torch.onnx.export(m, (x,), f, dynamo=False, input_names=["input"], **kw, **options)
        return onnx.load_from_string(f.getvalue())


def expose_running_stats(model):
    """Make a training node's dangling running-mean and running-variance outputs graph outputs."""
    node = bn_node(model)
    training = any(a.name == "training_mode" and a.i == 1 for a in node.attribute)
    if training and len(node.output) >= 3:
        elem = model.graph.input[0].type.tensor_type.elem_type
        have = {o.name for o in model.graph.output}
        for name in node.output[1:3]:
            if name not in have:
                model.graph.output.append(helper.make_tensor_value_info(name, elem, None))
        return list(node.output[1:3])
    return []


def bind_state(model, state):
    """Bind the node's inputs 1-4 (scale, B, mean, var) to fresh initializers holding ``state``
    (the exporter may have merged equal initializers, or fed one through an Identity)."""
    node = bn_node(model)
    for k, value in enumerate(state, 1):
        name = f"state_{k}"
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        node.input[k] = name


def _state_arrays(module, dtype):
    t = lambda v: v.detach().to("cpu", torch.float64).numpy().astype(NP[dtype])  # noqa: E731
    return [t(module.weight), t(module.bias), t(module.running_mean), t(module.running_var)]


@functools.lru_cache(maxsize=8)
def dynamo_template(ndim, dtype, mode):
    """One real dynamo export per (ndim, dtype, mode), with distinct state values so that the
    exporter does not merge equal initializers."""
    c = 2
    m = (torch.nn.BatchNorm1d if ndim == 2 else torch.nn.BatchNorm2d)(c, eps=1e-5, momentum=0.1)
    m = m.to({"float64": torch.float64, "float32": torch.float32}[dtype])
    with torch.no_grad():
        for i, v in enumerate((m.weight, m.bias, m.running_mean, m.running_var)):
            v.copy_(torch.tensor([1.5 + i, 2.25 + i]))
    x = torch.ones((3, c) + (2,) * (ndim - 2), dtype=m.weight.dtype)
    return export(m, x, mode, dynamo=True).SerializeToString()


def instantiate(template, shape, state, eps, momentum):
    """The template graph for input ``shape``, initializers ``state`` (scale, B, mean, var, in the
    node's input order) and the attributes the exporter writes for ``eps`` and torch's ``momentum``."""
    model = onnx.load_from_string(template)
    node = bn_node(model)
    inits = {i.name: i for i in model.graph.initializer}
    for name, value in zip(node.input[1:5], state):
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value), name))
    for a in node.attribute:
        if a.name == "epsilon":
            a.f = eps
        elif a.name == "momentum":
            a.f = 1 - momentum
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == len(shape):
            for d, n in zip(dims, shape):
                d.dim_value = n
    return model


_EXPORTS = {}


class _Exported:
    """Mixin over torch.builtin: every call exports the module and runs the graph in onnxruntime."""
    dtypes = ("float64", "float32")
    has_gradients = False
    framework = "onnxruntime"
    dynamo = False

    def build(self, momentum, eps):
        super().build(momentum, eps)
        # the exporter writes momentum_f = 1 − momentum, a FLOAT attribute, as onnx.node's
        self.new_batch_weight = momentum_weight(1.0 - self.module.momentum, self.dtype)

    def _graph(self, x, mode):
        # one export per input shape and setting; the graph does not depend on the state's values
        # but through the initializers, which are bound to the module's state for every call
        key = (x.shape, self.dtype, mode, self.module.eps, self.module.momentum, self.ndim)
        if key not in _EXPORTS:
            if len(_EXPORTS) > 256:
                _EXPORTS.clear()
            _EXPORTS[key] = export(self.module, self._t(x), mode, dynamo=False).SerializeToString()
        model = onnx.load_from_string(_EXPORTS[key])
        bind_state(model, _state_arrays(self.module, self.dtype))
        return model

    def _run(self, x, mode):
        model = self._graph(np.asarray(x), mode)
        stats = expose_running_stats(model)
        rt = runtime(model)
        xin = np.ascontiguousarray(x, dtype=NP[self.dtype])
        out = rt.run(None, {rt.get_inputs()[0].name: xin})
        if stats:
            names = [o.name for o in rt.get_outputs()]
            with torch.no_grad():
                self.module.running_mean.copy_(torch.from_numpy(out[names.index(stats[0])]))
                self.module.running_var.copy_(torch.from_numpy(out[names.index(stats[1])]))
        return np.array(out[0], dtype=np.float64)

    def forward_train(self, x):
        return self._run(x, "train")

    def forward_infer(self, x):
        return self._run(x, "infer")

    def forward_default(self, x):
        return self._run(x, "default")

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        return self.forward_train(x), None, None, None


def onnx_export(base):
    class OnnxExport(_Exported, base):
        conventions = replace(base.conventions, **TORCHSCRIPT_CONVENTIONS)
    return OnnxExport


def onnx_dynamo(base):
    class OnnxDynamo(_Exported, base):
        conventions = replace(base.conventions, **DYNAMO_CONVENTIONS)
        unmeasured = DYNAMO_UNMEASURED
        dynamo = True
        ndims = (2, 4)   # the graph template is one BatchNorm1d (N, C) or BatchNorm2d export (dynamo_template)

        def _graph(self, x, mode):
            return instantiate(dynamo_template(self.ndim, self.dtype, mode), x.shape,
                               _state_arrays(self.module, self.dtype), self.module.eps, self.module.momentum)
    return OnnxDynamo


def _node_path(**attrs):
    def wrapper(base):
        return type("OnnxNodePath", (base,), dict(attrs))
    return wrapper


opset9 = _node_path(opset=9)
opset14 = _node_path(opset=14)
optimized = _node_path(optimize=True)
