"""Reads and writes checkpoints in the official Perceiver IO pickle format.

The official release ships each checkpoint as one pickle. ImageNet files (`*.pystate`) hold
`{'params': params, 'state': state}`; the MLM, flow and video files hold the params mapping
alone. Params and state are Haiku two-level mappings `{module_path: {leaf_name: array}}`, e.g.
`params['perceiver_encoder/~/cross_attention/attention/linear']['w']`.

`load_official_pickle` reads them through `safe_unpickle` (no code runs, only plain numeric
arrays are built, the file's size, opcodes, expansion and nesting are bounded) and then checks
the structure: string keys, two levels, arrays as leaves, and arrays that add up to no more
bytes than the file holds (a shared array counted at each use would otherwise multiply).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from perceiver_jax import atomic
from perceiver_jax import pickle_bounds
from perceiver_jax import safe_unpickle

Tree = Mapping[str, Mapping[str, Any]]


class CheckpointFormatError(ValueError):
  """A checkpoint file is missing, corrupt, unsafe or not a Haiku two-level mapping."""


class CheckpointMismatchError(ValueError):
  """A checkpoint's entries or shapes differ from those the model expects."""


def _plain_tree(tree: Any, where: str) -> dict[str, dict[str, np.ndarray]]:
  """Copies a two-level mapping into dicts of numpy arrays; CheckpointFormatError if not one.

  Args:
    tree: `{module_path: {leaf_name: array}}` with string keys; arrays may be numpy, jax or
      `safe_unpickle.PickledArray`.
    where: prefix for error messages, e.g. `"ckpt.pkl: params"`.
  """
  if not isinstance(tree, Mapping):
    raise CheckpointFormatError(f"{where} is a {type(tree).__name__}, not a mapping")
  out = {}
  for module, leaves in tree.items():
    if not isinstance(module, str):
      raise CheckpointFormatError(f"{where} has a {type(module).__name__} key, not a string")
    if not isinstance(leaves, Mapping):
      raise CheckpointFormatError(
        f"{where}[{module!r}] is a {type(leaves).__name__}, not a mapping of arrays"
      )
    out[module] = {}
    for name, leaf in leaves.items():
      if not isinstance(name, str):
        raise CheckpointFormatError(
          f"{where}[{module!r}] has a {type(name).__name__} key, not a string"
        )
      if isinstance(leaf, safe_unpickle.PickledArray):
        leaf = leaf.value()
      if not isinstance(leaf, (np.ndarray, np.generic, jax.Array)):
        raise CheckpointFormatError(
          f"{where}[{module!r}][{name!r}] is a {type(leaf).__name__}, not an array"
        )
      leaf = np.asarray(leaf)
      if leaf.dtype == object:  # Would hide arbitrary Python objects behind an array.
        raise CheckpointFormatError(f"{where}[{module!r}][{name!r}] has dtype object")
      out[module][name] = leaf
  return out


def _is_wrapped(content: Mapping) -> bool:
  """True for `{'params': ..., 'state': ...}`; False for a bare params mapping.

  A bare mapping's values map leaf names to arrays, while a wrapped file's 'params' maps
  module paths to further mappings, so a module named 'params' cannot be mistaken for one.
  """
  params = content.get("params")
  return (
    set(content) <= {"params", "state"}
    and isinstance(params, Mapping)
    and all(isinstance(v, Mapping) for v in params.values())
  )


def load_official_pickle(path: str) -> tuple[dict, dict]:
  """Loads an official Perceiver IO checkpoint without executing code from the file.

  Args:
    path: a `*.pystate` file (`{'params', 'state'}`) or a bare params pickle.

  Returns:
    `(params, state)`, each `dict[str, dict[str, np.ndarray]]`; `state` is `{}` when the
    file holds params only.

  Refused, as CheckpointFormatError with one line naming the file and the problem: a file over
  4 GiB, over 2,000,000 opcodes, an object expanding to over 4,000,000 objects (a shared one
  counted at each use), nesting over 32 levels (`pickle_bounds`); any name outside the
  allow-list, any dtype but bool/int/uint/float of a standard size with a byte order matching
  it, an array whose data length differs from its shape (`safe_unpickle`); non-string keys,
  other than two levels of mappings with array leaves, and arrays adding up to more bytes
  than the file holds.

  Raises:
    CheckpointFormatError: the file is missing, unreadable, truncated or refused as above.
  """
  try:
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      content = safe_unpickle.load(f)
  except (safe_unpickle.UnsafePickleError, pickle_bounds.PickleBoundError) as e:
    raise CheckpointFormatError(f"{path}: {e}") from None
  except FileNotFoundError:
    raise CheckpointFormatError(f"{path}: no such file") from None
  except OSError as e:
    raise CheckpointFormatError(f"{path}: cannot read ({e.strerror or e})") from None
  except Exception as e:  # Corrupt bytes surface as many exception types.
    reason = "empty or truncated file" if isinstance(e, EOFError) else f"{type(e).__name__}: {e}"
    raise CheckpointFormatError(f"{path}: not a readable pickle ({reason})") from None

  if not isinstance(content, Mapping):
    raise CheckpointFormatError(f"{path}: holds a {type(content).__name__}, not a mapping")
  if _is_wrapped(content):
    params = _plain_tree(content["params"], f"{path}: params")
    state = _plain_tree(content.get("state") or {}, f"{path}: state")
  else:
    params, state = _plain_tree(content, f"{path}: params"), {}
  array_bytes = sum(leaf.nbytes for tree in (params, state) for leaf in flatten_tree(tree).values())
  if array_bytes > size:  # Each array's bytes are in the file once, unless it is shared.
    raise CheckpointFormatError(
      f"{path}: refusing arrays of {array_bytes} bytes in all from a file of {size} bytes "
      "(arrays shared between entries)"
    )
  return params, state


def save_official_pickle(
  path: str, params: Tree, state: Tree | None = None, *, bare: bool = False
) -> None:
  """Writes `{'params': params, 'state': state}` as plain dicts of numpy arrays.

  The official colabs read the result with `pickle.loads`. The write is atomic: a temporary
  file in the same directory is written, fsynced and renamed over `path`, so a crash leaves
  either the old file or the new one, never half of one.

  Args:
    path: destination; parent directories are created.
    params: `{module_path: {leaf_name: array}}` (numpy or jax arrays).
    state: same structure; `None` writes `{}`.
    bare: write the params mapping alone, the layout of the released language, flow and
      video models (which have no state); `state` must then be empty.
  """
  if bare and state:
    raise ValueError(f"{path}: a bare params pickle cannot hold state")
  params = _plain_tree(params, f"{path}: params")
  payload = (
    params if bare else {"params": params, "state": _plain_tree(state or {}, f"{path}: state")}
  )
  with atomic.atomic_write(path, "wb") as f:
    pickle.dump(payload, f, protocol=4)


def flatten_tree(tree: Tree) -> dict[str, Any]:
  """`{module: {leaf: x}}` -> `{f"{module}/{leaf}": x}`, e.g. `'.../linear/w'`.

  Haiku leaf names never contain '/', so the last component is always the leaf.
  """
  return {
    f"{module}/{name}": leaf for module, leaves in tree.items() for name, leaf in leaves.items()
  }


def check_tree(expected: Tree, actual: Tree, *, what: str = "params") -> None:
  """Checks that `actual` has exactly the entries and shapes of `expected`.

  Args:
    expected: two-level mapping whose leaves have `.shape` (arrays or jax.ShapeDtypeStruct),
      typically `jax.eval_shape(model.init, ...)`.
    actual: two-level mapping of arrays, typically a loaded checkpoint.
    what: name used in the report, e.g. "params" or "state".

  Raises:
    CheckpointMismatchError: with a report listing MISSING, UNEXPECTED and WRONG SHAPE entries.
  """
  want, got = flatten_tree(expected), flatten_tree(actual)
  missing = sorted(want.keys() - got.keys())
  unexpected = sorted(got.keys() - want.keys())
  wrong_shape = [
    f"{key}: expected {tuple(want[key].shape)}, got {tuple(np.shape(got[key]))}"
    for key in sorted(want.keys() & got.keys())
    if tuple(want[key].shape) != tuple(np.shape(got[key]))
  ]
  if not (missing or unexpected or wrong_shape):
    return
  summary = (
    f"{what} do not match the model: {len(missing)} missing, {len(unexpected)} unexpected, "
    f"{len(wrong_shape)} wrong shape (model expects {len(want)} entries, checkpoint has "
    f"{len(got)})"
  )
  lines = [summary]
  for title, entries in (
    ("MISSING (in the model, not in the checkpoint)", missing),
    ("UNEXPECTED (in the checkpoint, not in the model)", unexpected),
    ("WRONG SHAPE", wrong_shape),
  ):
    if entries:
      lines.append(f"{title}: {len(entries)}")
      lines.extend(f"  {entry}" for entry in entries)
  raise CheckpointMismatchError("\n".join(lines))


def match_to_template(expected: Tree, actual: Tree, *, what: str = "params") -> dict:
  """`check_tree`, then `actual` as plain dicts with each leaf cast to the expected dtype.

  Args:
    expected: two-level mapping whose leaves have `.shape` and `.dtype`.
    actual: two-level mapping of arrays with the same entries and shapes.
    what: name used in the mismatch report.

  Returns:
    `dict[str, dict[str, np.ndarray]]` ready to pass to `apply`.
  """
  check_tree(expected, actual, what=what)
  return {
    module: {
      name: np.asarray(actual[module][name], dtype=leaf.dtype) for name, leaf in leaves.items()
    }
    for module, leaves in expected.items()
  }
