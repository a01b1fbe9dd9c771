"""The fingerprint tests, and the tests that once held one CPU's last bits, rerun in the tox envs with
the vector ISA restricted, so that a result pinned to one machine's SIMD paths or generated code
fails here and not only on another machine.

    python scripts/isa_restricted.py                   # every env tox has built under .tox
    python scripts/isa_restricted.py --envs torch,jax  # some of them
    tox -e isa-restricted                              # the same, after `tox` or `tox --notest`

Restrictions (each honoured by the release the env installs):

- ``ATEN_CPU_CAPABILITY=default`` and ``=avx2``: PyTorch's ATen kernels and the vector ISA inductor
  generates for (torch, keras-torch); the script checks ``torch.backends.cpu.get_cpu_capability()``
  says so. Each run gets an empty ``TORCHINDUCTOR_CACHE_DIR``: torch 2.13.0's inductor cache does not
  key on the capability and hands code generated for AVX-512 to a process running the default one,
  which then fails to compile ("'at::vec' has not been declared").
- ``--xla_cpu_max_isa=AVX2`` and ``=AVX`` appended to ``XLA_FLAGS``: XLA's CPU code generation
  (jax, jax-old, keras-jax; tf's jit_compile paths tf.keras+xla and tf.scratch+xla). jaxlib 0.10.2
  and TensorFlow 2.21.0 take it (``--xla_dump_to`` writes it into the module's debug options); it is
  part of JAX's compilation cache key, so no executable compiled without it is reused. On an AMD
  EPYC with AVX-512, XLA's code with AVX2 rounds as its default does on nearly every golden case;
  with AVX (no FMA) about half of each path's outputs change in the last bits (14 of jax.stax's 31,
  67 of flax.linen.two_pass's 125), as with SSE4_2, which cannot run float16 code (XLA's JIT then
  lacks the conversion routines: "Failed to materialize symbols: wrapped_convert").
- ``ONEDNN_MAX_CPU_ISA=AVX2`` and ``=AVX`` (and ``DNNL_MAX_CPU_ISA`` for oneDNN 1.x): oneDNN's kernels
  (tf: oneDNN 3.7.3, with the XLA setting of the same name; mxnet: 2.4.4, whose BatchNorm is a oneDNN
  primitive); ONEDNN_VERBOSE=1 reports "isa:Intel AVX2" instead of AVX-512.
- ``OV_CPU_MAX_ISA=AVX2`` with ``ONEDNN_MAX_CPU_ISA=AVX2`` (OpenVINO 2026.4.1 asks for both at one value):
  OpenVINO's CPU plugin (onnx env, tests/test_routes_openvino.py). On a CPU with AVX512-BF16 it drops
  BF16 from the plugin's capabilities, so the default inference precision is f32 there, as on a CPU
  without half precision: the routes' bound follows the precision the compiled model reports, and the
  default-precision finding's witnesses skip. ONEDNN_MAX_CPU_ISA alone leaves the default at bf16, and
  compiling a convolution at it then fails ("object is not initialized").

Not restricted: paddle and mindspore (no oneDNN primitive is created for their CPU BatchNorm, so
ONEDNN_VERBOSE stays silent for it; no other setting is known to restrict their kernels), onnxruntime
(MLAS picks its kernels by CPUID, no setting; OpenVINO's f32 FullyConnected is MLAS too: its outputs do
not move under the caps), tinygrad (clang -march=native), MLX, NumPy (the oracle's vectors are stored,
not recomputed).

Each env runs with the settings its tox.ini section gives it (copied below). Prints one line per run:
env, restriction, passed, failed, skipped, seconds; exits 1 when a run failed. Measured on 2 cores of
an AMD EPYC: 8.5 min, torch's two runs 4.7 min of it (inductor compiles cold each time)."""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FP = "tests/test_fingerprints.py"
ATEN = [{"ATEN_CPU_CAPABILITY": "default"}, {"ATEN_CPU_CAPABILITY": "avx2"}]
XLA = [{"XLA_FLAGS": f"--xla_cpu_max_isa={isa}"} for isa in ("AVX2", "AVX")]   # appended to the env's own
ONEDNN = [{"ONEDNN_MAX_CPU_ISA": isa, "DNNL_MAX_CPU_ISA": isa} for isa in ("AVX2", "AVX")]
FOUR_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
# the BN-LeNet lockstep on Fashion-MNIST: where a net diverges is pinned (equiv.known.NET_FINDINGS), and
# tf.mirrored.sync's first divergence moved with oneDNN's ISA (bn3.beta at 0.978/0.993/1.001 of the
# tolerance with AVX2/AVX/AVX-512), which failed CI on another machine
LOCKSTEP = ["tests/test_lenet_nets.py::test_lockstep_fashion_mnist",
            "tests/test_lockstep_parallel.py::test_lockstep_fashion_mnist"]

# env: (its tox.ini setenv, [restrictions], tests)
ENVS = {
    "torch": ({}, ATEN, [FP, "tests/test_paths.py::test_bfloat16_input_with_float32_buffers_is_more_accurate_than_"
                               "bfloat16_buffers"]),
    "jax": (FOUR_DEVICES, XLA, [FP, "tests/test_parallel_jax.py", "tests/test_jax_findings.py",
                                  "tests/test_jax_family_findings.py", *LOCKSTEP]),
    "jax-old": ({"EQUIV_ADAPTERS": "flax.linen,flax.linen.two_pass,jax.scratch"}, XLA, [FP]),
    "tf": ({}, [dict(x, **o) for x, o in zip(XLA, ONEDNN)],
           [FP, "tests/test_tf_findings.py", "tests/test_parallel_tf.py", *LOCKSTEP]),
    "keras-jax": ({"KERAS_BACKEND": "jax", "EQUIV_ADAPTERS": "tf.keras+jax"}, XLA,
                  [FP, "tests/test_keras_backends.py"]),
    "keras-torch": ({"KERAS_BACKEND": "torch", "EQUIV_ADAPTERS": "tf.keras+torch"}, ATEN,
                    [FP, "tests/test_keras_backends.py"]),
    "mxnet": ({}, ONEDNN, [FP, "tests/test_mxnet_findings.py", "tests/test_parallel_mxnet.py", *LOCKSTEP]),
    "onnx": ({}, [{"OV_CPU_MAX_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}], ["tests/test_routes_openvino.py"]),
}


def environ(own, restriction):
    env = dict(os.environ, CI="true", PYTHONDONTWRITEBYTECODE="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTEST_ADDOPTS", None)
    env.update(own)
    for k, v in restriction.items():
        env[k] = f"{env[k]} {v}" if k == "XLA_FLAGS" and env.get(k) else v
    return env


def _label(restriction):
    return " ".join(f"{k}={v}" for k, v in restriction.items() if k != "DNNL_MAX_CPU_ISA")


def _counts(out):
    """(passed, failed, skipped) from pytest's last summary line; errors count as failed."""
    line = next((ln for ln in reversed(out.splitlines()) if re.search(r"\d+ (passed|failed|error)", ln)), "")
    n = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", line)}
    return n.get("passed", 0) + n.get("xfailed", 0), n.get("failed", 0) + n.get("error", 0) + n.get(
        "errors", 0) + n.get("xpassed", 0), n.get("skipped", 0)


def check_capability(python, env, restriction):
    """ATen's kernels run at the capability asked for (a wrong value would silently run the default)."""
    want = restriction.get("ATEN_CPU_CAPABILITY")
    if not want:
        return None
    got = subprocess.run([python, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True).stdout.strip()
    return None if got.lower() == want.lower() else f"ATEN_CPU_CAPABILITY={want} gives capability {got!r}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tox-dir", default=os.path.join(ROOT, ".tox"), help="where tox built the envs (default .tox)")
    p.add_argument("--envs", default=",".join(ENVS), help=f"comma-separated (default {','.join(ENVS)})")
    p.add_argument("pytest_args", nargs="*", help="passed on to pytest (e.g. -k installed_release)")
    args = p.parse_args(argv)
    names = [n for n in args.envs.split(",") if n]
    unknown = [n for n in names if n not in ENVS]
    if unknown:
        p.error(f"unknown env(s) {', '.join(unknown)}; known: {', '.join(ENVS)}")
    failed, ran, total = [], 0, time.monotonic()
    for name in names:
        own, restrictions, tests = ENVS[name]
        python = os.path.join(args.tox_dir, name, "bin", "python")
        if not os.path.exists(python):
            print(f"{name}: not built (tox --notest -e {name} builds it); skipped", flush=True)
            continue
        for restriction in restrictions:
            env, label = environ(own, restriction), _label(restriction)
            wrong = check_capability(python, env, restriction)
            if wrong:
                failed.append(f"{name} {label}: {wrong}")
                print(f"{name:12} {label}: {wrong}", flush=True)
                continue
            start = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="isa-inductor-") as cache:
                if "ATEN_CPU_CAPABILITY" in restriction:
                    env["TORCHINDUCTOR_CACHE_DIR"] = cache
                r = subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", *tests, *args.pytest_args],
                                   cwd=ROOT, env=env, capture_output=True, text=True)
            seconds = time.monotonic() - start
            passed, bad, skipped = _counts(r.stdout)
            ran += 1
            print(f"{name:12} {label}: {passed} passed, {bad} failed, {skipped} skipped, {seconds:.0f} s", flush=True)
            if r.returncode not in (0, 5) or bad:
                failed.append(f"{name} {label}")
                tail = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))] or \
                    (r.stdout + r.stderr).splitlines()[-20:]
                print("\n".join("    " + ln for ln in tail), flush=True)
    print(f"{ran} runs in {time.monotonic() - total:.0f} s" + (f"; failed: {'; '.join(failed)}" if failed else ""))
    return 1 if failed or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
