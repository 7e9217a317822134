"""Prints a model's parameter table.

  python -m perceiver_jax.summary --config=configs/imagenet.py:variant=io_fourier

The last line is `Total parameters: N`. No weights are allocated.
"""

from __future__ import annotations

import numpy as np


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
