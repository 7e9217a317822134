"""Prints a model's parameter table.

  python -m perceiver_jax.summary --config=configs/imagenet.py:variant=io_fourier

The last line is `Total parameters: N`. No weights are allocated.
"""

from __future__ import annotations

import sys

import numpy as np
from ml_collections import config_flags

from perceiver_jax import model

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/imagenet.py:variant=io_fourier."
)


def format_table(params, state) -> str:
  """One row per parameter leaf: module path, leaf, shape, count."""
  rows = []
  for kind, tree in (("param", params), ("state", state)):
    for module in sorted(tree):
      for leaf, value in sorted(tree[module].items()):
        rows.append((kind, f"{module}/{leaf}", str(tuple(value.shape)), int(np.prod(value.shape))))
  width = max([len(r[1]) for r in rows] + [4])
  lines = [f"{'kind':<6} {'name':<{width}} {'shape':<16} {'count':>12}"]
  lines += [f"{k:<6} {n:<{width}} {s:<16} {c:>12,}" for k, n, s, c in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    sys.exit("error: --config is required, e.g. --config=configs/imagenet.py:variant=io_fourier")
  try:
    params, state = model.param_shapes(config.model)
  except ValueError as e:
    sys.exit(f"error: {e}")
  total = model.count_params(params)
  print(format_table(params, state))
  print(f"State entries: {model.count_params(state):,}")
  print(f"Parameters: {total / 1e6:.2f}M")
  print(f"Total parameters: {total}")
