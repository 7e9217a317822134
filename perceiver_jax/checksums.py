"""Checksums of a checkpoint's arrays: written beside a saved step, checked on every restore.

`FILE` (`checksums.json` in a step directory) maps each array leaf's path in the saved tree
(`jax.tree_util.keystr`, e.g. `['params']['net/~/linear']['w']`) to the sha256 of its bytes.
A single flipped bit in any array changes its checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping

import jax
import numpy as np

from perceiver_jax import atomic
from perceiver_jax.official_format import CheckpointFormatError

FILE = "checksums.json"


def of_tree(tree) -> dict[str, str]:
  """The sha256 of every array leaf's bytes, keyed by the leaf's path in `tree`."""
  return {
    jax.tree_util.keystr(path): hashlib.sha256(
      np.ascontiguousarray(leaf).reshape(-1).view(np.uint8)
    ).hexdigest()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def write(step_dir: str, tree) -> None:
  """Writes the checksums of `tree` into `step_dir` atomically (all of them or none)."""
  text = json.dumps(of_tree(tree), indent=0).encode()
  with atomic.atomic_write(os.path.join(step_dir, FILE)) as f:
    f.write(text)


def exists(step_dir: str) -> bool:
  return os.path.exists(os.path.join(step_dir, FILE))


def read(step_dir: str) -> dict[str, str] | None:
  """The checksums saved in `step_dir`; None if it has none; CheckpointFormatError if the file
  is damaged."""
  path = os.path.join(step_dir, FILE)
  try:
    with open(path, "rb") as f:
      sums = json.loads(f.read())
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise CheckpointFormatError(f"{path}: unreadable: {e}") from None
  if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
    raise CheckpointFormatError(f"{path}: not a mapping of array paths to checksums")
  return sums


def verify(step_dir: str, tree, sums: Mapping[str, str], *, partial: bool = False) -> None:
  """Raises CheckpointFormatError naming the first array of `tree` whose bytes do not match
  `sums`, or that `sums` does not cover. With `partial`, `tree` may hold only some of the
  saved arrays (e.g. the params and state of a TrainState)."""
  got = of_tree(tree)
  for key in sorted(set(got) | (set() if partial else set(sums))):
    if key not in sums or key not in got:
      raise CheckpointFormatError(f"{step_dir}: array {key} is not covered by {FILE}")
    if got[key] != sums[key]:
      raise CheckpointFormatError(f"{step_dir}: array {key} does not match its checksum")
