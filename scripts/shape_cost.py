"""What a new input shape costs an adapter: one example's calls on a shape the process has not
run yet, against the same calls again on that shape.

    python scripts/shape_cost.py --adapters torch.builtin --out shape_cost_torch.json
    python scripts/shape_cost.py --adapters flax.linen,haiku --out shape_cost_jax.json

An example here is what most properties do with one case: build the layer, set its state, a
training forward, ``get_state``, an inference forward and a training step (a call the adapter
does not have is skipped). Per adapter and shape (``SHAPES``, float32, none of them drawn by the
``ci`` profile's first examples) the script times the example on the new shape, then a second
example on the same shape with other values and settings; it reports the medians over the
shapes. An implementation that compiles or traces per shape (JAX's jit, a ``tf.function``,
tinygrad's kernels) pays the difference once per shape; ``scripts/suite_speed.py`` gives what
that comes to over a whole Hypothesis run. The JAX adapters load compiled programs from the
persistent cache (equiv/backends/jax.py) when an earlier process compiled them: run twice for
the warm figure. A measurement, not a test; one framework per process.
"""
import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = [(13, 3), (7, 2), (9, 5), (3, 4, 2, 5), (2, 3, 5, 3), (4, 2, 3, 3), (11, 1), (5, 5, 2, 2)]


def example(A, case):
    from equiv.core import Unsupported
    a = A(case.channels, case.ndim, dtype=case.dtype, device="cpu", new_batch_weight=case.new_batch_weight,
          eps=case.eps)
    a.set_state(**case.state)
    for call in (lambda: a.forward_train(case.x), a.get_state, lambda: a.forward_infer(case.x),
                 lambda: a.train_step(case.x, case.dy)):
        try:
            call()
        except (Unsupported, NotImplementedError):
            pass


def measure(name):
    from equiv import registry
    from equiv.strategies import Case
    A = registry.load(name)

    def case(shape, seed, scale, eps, w):
        return Case(dtype="float32", shape=shape, seed=seed, log10_scale=scale, log10_offset=None,
                    constant_channel=False, eps=eps, new_batch_weight=w)

    example(A, case((6, 2), 0, 0.0, 1e-3, 0.1))   # the framework's first-call warm-up, not timed
    new, same = [], []
    for i, shape in enumerate(SHAPES):
        t0 = time.perf_counter()
        example(A, case(shape, i, 0.0, 1e-3, 0.1))
        t1 = time.perf_counter()
        example(A, case(shape, 100 + i, 0.5, 1e-2, 0.3))
        t2 = time.perf_counter()
        new.append(t1 - t0)
        same.append(t2 - t1)
    r = {"new_shape_ms": round(1e3 * statistics.median(new), 2),
         "same_shape_ms": round(1e3 * statistics.median(same), 2),
         "new_shape_ms_each": [round(1e3 * t, 2) for t in new], "same_shape_ms_each": [round(1e3 * t, 2) for t in same]}
    print(f"{name:22s} new shape {r['new_shape_ms']:8.1f} ms   same shape {r['same_shape_ms']:8.1f} ms",
          file=sys.stderr)
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapters", required=True, help="comma-separated adapter names")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.adapters.split(",") if n.strip()]
    if not names:
        ap.error("--adapters names no adapter")
    from equiv import io
    if os.path.exists(args.out):
        ap.error(f"{args.out} exists; not overwritten")
    try:
        io.check_file(args.out)
    except io.OutputError as e:
        ap.error(str(e))
    results = {n: measure(n) for n in names}
    out = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
           "EQUIV_JAX_CACHE": os.environ.get("EQUIV_JAX_CACHE"), "shapes": [list(s) for s in SHAPES],
           "adapters": results}
    io.write_json(args.out, out)


if __name__ == "__main__":
    main()
