"""PyTorch's backend: conversions shared by the torch adapters, paths, DDP workers and BN-LeNets,
and the process's torch setup."""
import numpy as np
import torch


def setup():
    """Correctness tests compare against float64: no TF32 in matrix units on CUDA (process-wide;
    called by ``equiv.registry`` before it loads torch code, and by the torch adapters as they build)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def setup_dynamo():
    """torch.compile falls back to eager, silently, once a function has been recompiled
    ``recompile_limit`` times: every Hypothesis example has its own eps, so the compile paths raise
    the limit and make hitting it an error: a compile path never runs eager code unnoticed (process-wide;
    called as a torch execution path is made, equiv/paths/torch_paths.py)."""
    torch._dynamo.config.recompile_limit = 4096
    torch._dynamo.config.accumulated_recompile_limit = 1 << 20
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    torch._dynamo.config.force_parameter_static_shapes = False


DTYPES = {"float64": torch.float64, "float32": torch.float32,
          "float16": torch.float16, "bfloat16": torch.bfloat16}


def tensor(a, dtype, device, requires_grad=False):
    t = torch.tensor(np.asarray(a, dtype=np.float64), dtype=DTYPES[dtype], device=device)
    return t.requires_grad_(requires_grad)


def numpy(t):
    return t.detach().to("cpu", torch.float64).numpy().copy()   # never a view of a live buffer


def devices():
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
