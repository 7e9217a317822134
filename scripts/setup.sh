#!/usr/bin/env bash
# Sets everything up on a fresh machine: a virtual environment in .venv (unless one is
# already active), the package with its test extras, the Fashion-MNIST data, and jemalloc
# (Debian's libjemalloc2: the training and benchmark command lines run on it, see
# perceiver_jax/host_memory.py; without it they run on glibc's malloc, slower).
# Prints the Python to use on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PYTHON=.venv/bin/python
else
  PYTHON=python
fi
"$PYTHON" -m pip install --quiet --upgrade pip
"$PYTHON" -m pip install --quiet -e ".[test]"
bash scripts/setup_data.sh >&2
bash scripts/apt_install.sh libjemalloc2 >&2
echo "$PYTHON"
