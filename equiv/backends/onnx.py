"""onnxruntime's backend: helpers shared by the ONNX adapter and the ONNX execution paths: the CPU
InferenceSession, its graph-optimization level, the element types, and the new-batch weight a FLOAT
momentum attribute applies."""
import numpy as np
import onnx
import onnxruntime as ort

from equiv.core import weight_applied

ELEM = {"float64": onnx.TensorProto.DOUBLE, "float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16}
NP = {"float64": np.float64, "float32": np.float32, "float16": np.float16}


def runtime(model, optimize=False):
    """A CPU InferenceSession for a ModelProto. ``optimize``: every graph optimization onnxruntime has
    (ORT_ENABLE_ALL, its default); otherwise none (ORT_DISABLE_ALL). One thread: the batch-norm
    kernel is sequential anyway, and the results do not depend on the machine's core count."""
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def versions():
    return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}


def momentum_weight(momentum, dtype):
    """The new-batch weight of a FLOAT momentum attribute: 1 − float32(1 − w) in a float32 or
    float16 graph; in a float64 one 1 − (1 − w) where float32 holds 1 − w (onnx-momentum-float32
    where it does not)."""
    return weight_applied(momentum, "float64" if dtype == "float64" else "float32")
