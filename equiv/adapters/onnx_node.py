"""onnx.node: one ONNX ``BatchNormalization`` node, built with ``onnx.helper`` and run by
onnxruntime on the CPU.

An implementation of its own, not a wrapper of another adapter: no framework layer is involved,
the numbers are onnxruntime's CPU kernel (``BatchNorm<T>``, onnxruntime/core/providers/cpu/nn/
batch_norm.h) executing the operator as the ONNX spec defines it (onnx/defs/nn/defs.cc, opset 15;
onnx/defs/nn/old.cc, opsets 9 and 14). Hence a registry entry of its own; its opsets and the
graph-optimization level are execution paths of it (``equiv.paths.onnx_paths``).

Conventions, from the spec and the kernel:

- ``momentum`` weighs the old value: running = input·momentum + batch·(1 − momentum), default 0.9;
  ``epsilon`` default 1e-5. Both are FLOAT attributes: a float64 graph gets them rounded to
  float32 (the kernel keeps ``float epsilon_, momentum_``), see ``equiv.known``.
- training: ``training_mode=1`` (opset ≥ 14; outputs Y, running_mean, running_var) or, in opset 9,
  five outputs (Y, mean, var, saved_mean, saved_var). The running variance is the *biased* batch
  variance (spec: "population size (N) ... not the sample size N−1"; kernel: Σ(x − mean)²/(N·HW)).
  The batch mean is a per-(n, c) sum added up over n, the variance two-pass (squared norm of
  x − mean); the output is fused as x·(γ/σ) + (β − mean·γ/σ).
- inference: ``training_mode=0`` (the default) or one output; a node without ``training_mode``
  is an inference node, which is what a plain call is here.
- the state is the node's inputs (scale, B, input_mean, input_var), fed to every run; the running
  statistics a training run outputs become the next run's inputs, as a training loop would.

No gradients: onnxruntime's InferenceSession computes none (``has_gradients = False``).
float64, float32 and float16 (onnxruntime 1.32's CPU provider runs a float16 BatchNormalization
and meets the float16 bounds, 400 cases per property); no bfloat16.
"""
import functools

import numpy as np
from onnx import helper

from equiv.backends.onnx import ELEM, NP, momentum_weight, runtime
from equiv.conventions import DECLARED
from equiv.core import Adapter

STATE = ("scale", "B", "input_mean", "input_var")


def node_model(opset, shape, dtype, mode, eps, momentum):
    """The one-node model: mode "train", "infer" or None (no training_mode attribute: a plain node)."""
    t, c = ELEM[dtype], shape[1]
    attrs = dict(epsilon=eps, momentum=momentum)
    if opset >= 14 and mode is not None:
        attrs["training_mode"] = int(mode == "train")
    outs = ["Y"]
    if mode == "train":
        outs += ["running_mean", "running_var"] + (["saved_mean", "saved_var"] if opset < 14 else [])
    node = helper.make_node("BatchNormalization", ["X", *STATE], outs, **attrs)
    inputs = [helper.make_tensor_value_info("X", t, list(shape))]
    inputs += [helper.make_tensor_value_info(n, t, [c]) for n in STATE]
    outputs = [helper.make_tensor_value_info(o, t, None) for o in outs]
    model = helper.make_model(helper.make_graph([node], "batch_norm", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@functools.lru_cache(maxsize=512)
def node_runtime(opset, shape, dtype, mode, eps, momentum, optimize):
    return runtime(node_model(opset, shape, dtype, mode, eps, momentum), optimize)


class OnnxNode(Adapter):
    name, framework = "onnx.node", "onnxruntime"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16")
    has_gradients = False   # onnxruntime's InferenceSession computes no gradients
    opset, optimize = 15, False

    def build(self, momentum, eps):
        self.momentum, self.eps_attr = float(momentum), float(eps)
        self.new_batch_weight = momentum_weight(self.momentum, self.dtype)
        c, np_t = self.num_features, NP[self.dtype]
        self.state = dict(scale=np.ones(c, np_t), B=np.zeros(c, np_t),
                          input_mean=np.zeros(c, np_t), input_var=np.ones(c, np_t))

    def set_state(self, gamma, beta, running_mean, running_var):
        np_t = NP[self.dtype]
        for k, v in zip(STATE, (gamma, beta, running_mean, running_var)):
            self.state[k] = np.array(v, dtype=np_t)

    def get_state(self):
        s = self.state
        return {k: np.array(s[n], dtype=np.float64) for k, n in
                zip(("gamma", "beta", "running_mean", "running_var"), STATE)}

    def _run(self, x, mode):
        x = np.ascontiguousarray(x, dtype=NP[self.dtype])
        rt = node_runtime(self.opset, x.shape, self.dtype, mode, self.eps_attr, self.momentum, self.optimize)
        out = rt.run(None, {"X": x, **self.state})
        if mode == "train":
            self.state["input_mean"], self.state["input_var"] = out[1].copy(), out[2].copy()
        return np.array(out[0], dtype=np.float64)

    def forward_train(self, x):
        return self._run(x, "train")

    def forward_infer(self, x):
        return self._run(x, "infer")

    def forward_default(self, x):
        return self._run(x, None)

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        return self.forward_train(x), None, None, None
