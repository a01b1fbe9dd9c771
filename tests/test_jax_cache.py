"""JAX's persistent compilation cache (equiv/backends/jax.py ``persistent_cache``): a later process
loads the executables an earlier one compiled instead of compiling them again, and what it loads
computes the same bits as a fresh compile. Each process runs one training step and one inference
call of flax.linen and jax.scratch on a fixed case and prints the outputs' bytes and the cache events."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("flax")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import collections, hashlib, json
import jax.monitoring
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name.rsplit("/", 1)[-1]]))
import numpy as np
from equiv import registry
from equiv.backends import jax as _jax
digest = hashlib.sha256()
for name in ("flax.linen", "jax.scratch"):
    for dtype in ("float64", "float32"):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(5, 3, 2, 4)).astype(dtype).astype(np.float64)
        a = registry.load(name)(3, 4, dtype=dtype, new_batch_weight=0.3, eps=1e-3)
        a.set_state(gamma=np.ones(3), beta=np.zeros(3), running_mean=np.zeros(3), running_var=np.ones(3))
        for out in (*a.train_step(x, x[::-1]), a.forward_infer(x)):
            digest.update(np.ascontiguousarray(out).tobytes())
print(json.dumps(dict(dir=_jax.CACHE_DIR, hits=events["cache_hits"], misses=events["cache_misses"],
                      digest=digest.hexdigest())))
"""


def _run(setting):
    env = dict(os.environ, EQUIV_JAX_CACHE=setting,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_later_process_loads_what_an_earlier_one_compiled_with_the_same_bits(tmp_path):
    cache = str(tmp_path / "cache")
    first, second, off = _run(cache), _run(cache), _run("off")
    assert first["dir"] == second["dir"] == cache and off["dir"] is None
    assert first["misses"] >= 8 and first["hits"] == 0, first          # 2 adapters x 2 dtypes x (step, infer)
    assert second["hits"] == first["misses"] and second["misses"] == 0, second
    assert os.listdir(cache)
    assert first["digest"] == second["digest"] == off["digest"]        # loaded == compiled afresh, bit for bit
