#!/usr/bin/env bash
# Issue 4's GPU tier, to run on a lent NVIDIA GPU (the workplace's `device` tool) from the
# repository root; it needs PyTorch and JAX/Flax with CUDA (preinstalled there), no network.
#
# Prepare on this machine (the data folder is git-ignored, so it must be carried):
#   mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
# then run there:  bash scripts/gpu_runs.sh        (device tool: carry [".data"])
# and copy $OUT/runs/*.json and $OUT/bench_cuda.json into reference/data/runs/, then `equiv runs --update`.
set -euo pipefail
export PYTHONPATH=. EQUIV_DATA_DIR=.data/fashion-mnist
OUT=${OUT:-/tmp/bn-equiv-gpu}
mkdir -p "$OUT/runs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# correctness first: lockstep, the CUDA-graph and lax.scan epochs against the step loop
python3 -m pytest -q -p no:cacheprovider --bn-device cuda tests/test_lenet_nets.py -k "torch or jax or flax" 2>&1 | tail -15 \
  | tee "$OUT/tests.txt"
# the full runs (10 epochs, the book's setting, seed 0) and the benchmark
for fw in torch jax; do
  for impl in builtin scratch; do
    python3 -m equiv train --framework "$fw" --impl "$impl" --device cuda --epochs 10 --seed 0 --quiet \
      --out "$OUT/runs" 2>&1 | tail -3
  done
done
python3 -m equiv bench --device cuda --epochs 10 --out "$OUT/bench_cuda.json"
