#!/usr/bin/env bash
# The GPU benchmark, one prepared run of about 8 minutes on one GPU (an H100 or H200):
#   1. the suite's paper models at their real shapes, batch 1, bfloat16 and float32:
#      steps/s, MFU against the GPU's matmul peak measured in the same run (bfloat16 and
#      float32 products up to 8,192), peak device memory (scripts/benchmark.py
#      --workload=paper-models);
#   2. the ImageNet Perceiver IO (registry io_fourier, batch 16) next to transformers'
#      PerceiverForImageClassificationFourier at the same shapes on the same GPU, in
#      alternating rounds (benchmarks/peers/run.py --workloads=imagenet-io --device=cuda).
# Writes results.md and the JSON files into OUT (default: benchmarks/gpu).
#
# The GPU image this project is lent has jax (CUDA), torch, transformers, optax, chex and
# absl; haiku, ml-collections, jmp, dm-tree and pytorch-optimizer travel as wheels in
# .whl/ (fetch them once on a machine with pip access:
#   bash scripts/gpu_benchmark.sh --download
# ), installed here into /tmp/site without touching the image's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(dm-haiku==0.0.17 ml-collections==1.1.0 jmp==0.0.4 dm-tree==0.1.10 pytorch-optimizer==4.1.0)
if [ "${1:-}" = "--download" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "${WHEELS[@]}"
  exit 0
fi
OUT="${1:-benchmarks/gpu}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

# 1. Paper models (about 4 minutes: 6 models x 2 dtypes, each compiled once).
timeout 330 python3 scripts/benchmark.py --workload=paper-models --dtypes=bfloat16,float32 \
  --results="$OUT/results.md" --json="$OUT/paper_models.json" 2>&1 | tee "$OUT/paper_models.log" ||
  echo "paper-models: stopped (exit $?); what was measured is in $OUT"
# 2. Ours and transformers' port side by side (about 3 minutes).
timeout 240 python3 benchmarks/peers/run.py --workloads=imagenet-io --device=cuda \
  --dtypes=bfloat16,float32 --rounds=4 --steps=10 --results="$OUT/results.md" \
  --json="$OUT/peers.json" 2>&1 | tee "$OUT/peers.log" ||
  echo "peers: stopped (exit $?); what was measured is in $OUT"
