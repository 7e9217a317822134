#!/usr/bin/env bash
# Installs the Fashion-MNIST IDX files from Debian's dataset-fashion-mnist package
# (into /usr/share/datasets/fashion-mnist, perceiver_jax.data.fashion_mnist's
# DEBIAN_DATA_DIR), then lists them. Safe to run again: an installed package is
# left alone. Without apt (or root or sudo) it only explains the alternatives and
# exits 0, so it can run unconditionally in CI and on laptops.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=dataset-fashion-mnist

bash scripts/apt_install.sh "$PACKAGE"
if ! dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q "install ok installed"; then
  echo "Put the four Fashion-MNIST IDX files in a directory and pass data_dir=..., or call" \
    "load_split(..., data_dir=..., download=True)."
  exit 0
fi

echo "Fashion-MNIST files:"
dpkg -L "$PACKAGE" | grep -E 'ubyte(\.gz)?$'
