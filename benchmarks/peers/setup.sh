#!/usr/bin/env bash
# Sets up .venv-peers at the repository root: the PyTorch peers of the peer benchmark
# (benchmarks/peers/requirements.txt: torch, transformers, perceiver-pytorch,
# pytorch-optimizer) and this package (editable, with jax), so that benchmarks/peers/run.py
# runs both sides in one environment; never the package's own .venv or CI's. jemalloc as
# scripts/setup.sh (our side of the benchmark runs on it). Installs only when the
# requirements or the package's metadata changed since the last install (a stamp in the
# environment); safe to run again. Prints the environment's Python on its last line.
#
# torch: the pinned version from the configured index. For the CPU build where PyPI's
# default wheel is the CUDA one (3 GB more), set TORCH_INDEX to PyTorch's CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-peers/bin/python ] || python3 -m venv .venv-peers
PYTHON=.venv-peers/bin/python
STAMP=.venv-peers/.peers-installed
WANT=$(cat benchmarks/peers/requirements.txt pyproject.toml setup.py 2>/dev/null | sha256sum)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  "$PYTHON" -m pip install --quiet --upgrade pip
  "$PYTHON" -m pip install --quiet ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
    -r benchmarks/peers/requirements.txt
  "$PYTHON" -m pip install --quiet -e .
  "$PYTHON" -c "import torch, transformers, perceiver_pytorch, pytorch_optimizer, perceiver_jax"
  echo "$WANT" >"$STAMP"
fi
bash scripts/apt_install.sh libjemalloc2 >&2
echo "$PYTHON"
