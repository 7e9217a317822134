"""Reads and writes Haiku params and state as safetensors files.

A safetensors file is an 8-byte little-endian unsigned header length `n`, then `n` bytes of
UTF-8 JSON (possibly padded with trailing spaces), then the tensor data. The JSON object maps
each tensor name to `{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`, where the
offsets count bytes from the start of the data section, and may hold a `"__metadata__"` entry
mapping strings to strings. The tensors' byte ranges tile the data section exactly: no gaps,
no overlaps, nothing after the last one. No code is ever run to read a file.

`read_tensors` reads any safetensors file (e.g. a transformers `model.safetensors`) into flat
numpy arrays after checking the header itself, so a malformed file is reported as one
`CheckpointFormatError` line naming the file and the problem rather than whatever the
library raises.

`save` and `load` use this layout for perceiver_jax checkpoints. Haiku params and state are
two-level mappings `{module_path: {leaf_name: array}}`; both are stored in one file under
flat names `f"{module_path}/{leaf_name}"` (module paths contain '/', leaf names never do, so
the last '/' splits a name back). The metadata holds:

  "format": "perceiver_jax"
  "perceiver_jax.version": "1"
  "perceiver_jax.state_keys": JSON list, sorted, of the flat names that belong to the state

plus any string metadata the caller adds.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Mapping
from typing import Any

import ml_dtypes  # Registers numpy's 'bfloat16' dtype, which safetensors needs for BF16.
import numpy as np
import safetensors
import safetensors.numpy

from perceiver_jax import atomic
from perceiver_jax import official_format
from perceiver_jax.official_format import CheckpointFormatError

FORMAT = "perceiver_jax"
VERSION = "1"
FORMAT_KEY = "format"
VERSION_KEY = "perceiver_jax.version"
STATE_KEYS_KEY = "perceiver_jax.state_keys"

# The library's own limit on the header (`MAX_HEADER_SIZE` in the safetensors crate).
MAX_HEADER_BYTES = 100_000_000

# The dtypes read and written, with their numpy types. Unsigned integers wider than a byte,
# complex and 8-bit floats are refused: no Perceiver checkpoint holds them.
DTYPES: dict[str, np.dtype] = {
  "F64": np.dtype(np.float64),
  "F32": np.dtype(np.float32),
  "F16": np.dtype(np.float16),
  "BF16": np.dtype(ml_dtypes.bfloat16),
  "I64": np.dtype(np.int64),
  "I32": np.dtype(np.int32),
  "I16": np.dtype(np.int16),
  "I8": np.dtype(np.int8),
  "U8": np.dtype(np.uint8),
  "BOOL": np.dtype(np.bool_),
}
_CODES = {dtype: code for code, dtype in DTYPES.items()}

# `save(dtype=...)`: the dtype floating leaves are cast to.
SAVE_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}

_PICKLE_PROTO = b"\x80"
_ZIP_MAGIC = b"PK\x03\x04"
_TENSOR_FIELDS = {"dtype", "shape", "data_offsets"}


def _fail(path: Any, problem: str) -> CheckpointFormatError:
  """The one-line error for `path`; newlines in `problem` are escaped."""
  problem = problem.replace("\r", "\\r").replace("\n", "\\n")
  return CheckpointFormatError(f"{os.fspath(path)}: {problem}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  """`json.loads` hook: a JSON object, refusing a repeated key (json would keep the last)."""
  out = {}
  for key, value in pairs:
    if key in out:
      raise ValueError(f"duplicate key {key!r}")
    out[key] = value
  return out


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _check_header(path: Any, header: dict[str, Any], data_bytes: int) -> dict[str, str]:
  """Checks the parsed header against the file; returns its `__metadata__` ({} if none)."""
  metadata = header.get("__metadata__", {})
  if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
    raise _fail(path, "'__metadata__' is not a mapping of strings to strings")
  ranges = []
  for key, entry in header.items():
    if key == "__metadata__":
      continue
    if not isinstance(entry, dict) or set(entry) != _TENSOR_FIELDS:
      raise _fail(path, f"entry {key!r} is not {{dtype, shape, data_offsets}}")
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if code not in DTYPES:
      raise _fail(path, f"tensor {key!r} has dtype {code!r}; accepted: {', '.join(sorted(DTYPES))}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
      raise _fail(path, f"tensor {key!r} has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
      raise _fail(path, f"tensor {key!r} has data_offsets {offsets!r}, not [begin, end]")
    begin, end = offsets
    nbytes = int(np.prod(shape, dtype=object)) * DTYPES[code].itemsize
    if not 0 <= begin <= end or end - begin != nbytes:
      raise _fail(
        path,
        f"tensor {key!r}: data_offsets {offsets} do not hold {nbytes} bytes "
        f"({code} of shape {shape})",
      )
    if end > data_bytes:
      raise _fail(
        path,
        f"tensor {key!r}: data_offsets {offsets} run past the {data_bytes} bytes of data "
        "(truncated file?)",
      )
    ranges.append((begin, end, key))
  position, previous = 0, None
  for begin, end, key in sorted(ranges):
    if begin < position:
      raise _fail(path, f"tensors {previous!r} and {key!r} overlap")
    if begin > position:
      raise _fail(path, f"{begin - position} unused bytes of data before tensor {key!r}")
    position, previous = end, key
  if position != data_bytes:
    raise _fail(path, f"{data_bytes - position} bytes after the last tensor's data")
  return dict(metadata)


def _c_contiguous(array: np.ndarray) -> np.ndarray:
  """`array`, copied if not C-contiguous. (`np.ascontiguousarray` would make a () array (1,).)"""
  return array if array.flags.c_contiguous else array.copy(order="C")


def _read_header(path: Any) -> tuple[dict[str, Any], dict[str, str]]:
  """Reads and checks the header of `path`; returns `(header, metadata)`."""
  try:
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      start = f.read(8)
      if start[:1] == _PICKLE_PROTO or start[:4] == _ZIP_MAGIC:
        raise _fail(path, "is a pickle (or zip/torch archive), not safetensors")
      if len(start) < 8:
        raise _fail(path, f"{size} bytes, too short for a safetensors header length")
      (n,) = struct.unpack("<Q", start)
      if n > MAX_HEADER_BYTES:
        raise _fail(
          path, f"header length {n} is over the {MAX_HEADER_BYTES}-byte limit (not safetensors?)"
        )
      if 8 + n > size:
        raise _fail(
          path, f"header length {n} runs past the end of the file ({size} bytes; truncated?)"
        )
      raw = f.read(n)
  except FileNotFoundError:
    raise _fail(path, "no such file") from None
  except IsADirectoryError:
    raise _fail(path, "is a directory, not a safetensors file") from None
  except OSError as e:
    raise _fail(path, f"cannot read ({e.strerror or e})") from None
  if len(raw) != n:
    raise _fail(path, f"header cut short ({len(raw)} of {n} bytes)")
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise _fail(path, f"header is not UTF-8 ({e.reason} at byte {e.start})") from None
  try:
    header = json.loads(text, object_pairs_hook=_no_duplicate_keys)
  except json.JSONDecodeError as e:
    raise _fail(path, f"header is not JSON ({e.msg} at char {e.pos})") from None
  except ValueError as e:  # From _no_duplicate_keys.
    raise _fail(path, f"header has a {e}") from None
  if not isinstance(header, dict):
    raise _fail(path, f"header is a JSON {type(header).__name__}, not an object")
  metadata = _check_header(path, header, size - 8 - n)
  return header, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
  """The `__metadata__` of a safetensors file ({} if none), its header checked as by
  `read_tensors`, without reading any tensor."""
  return _read_header(path)[1]


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Reads every tensor of a safetensors file, whatever its names.

  The header is checked here before the safetensors library sees the file, so that each
  problem is reported as one line naming the file: missing or unreadable file; a pickle or
  zip (torch) archive; fewer than 8 bytes; a header length past the end of the file or over
  100 MB; a header that is not a UTF-8 JSON object (or repeats a key); an entry that is not
  `{dtype, shape, data_offsets}`; a dtype outside `DTYPES`; offsets that do not hold
  `prod(shape) * itemsize` bytes; data ranges that run past the end of the file (truncated
  data), overlap, leave gaps or leave bytes after the last one; BOOL bytes other than 0 and 1.

  Args:
    path: a `.safetensors` file.

  Returns:
    `(tensors, metadata)`: `{name: array}` of C-contiguous numpy arrays (BF16 as
    `ml_dtypes.bfloat16`), and the `__metadata__` mapping, `{}` if the file has none.

  Raises:
    CheckpointFormatError: the file is missing, unreadable or malformed as above.
  """
  header, metadata = _read_header(path)
  tensors = {}
  try:
    with safetensors.safe_open(path, framework="numpy") as f:
      for key in f.keys():
        tensors[key] = f.get_tensor(key)
  except (safetensors.SafetensorError, OSError, TypeError, ValueError) as e:
    # The checks above should leave nothing for the library to refuse; this keeps the
    # promise of one CheckpointFormatError line if the file changed in between.
    raise _fail(path, f"safetensors cannot read it ({type(e).__name__}: {e})") from None
  expected = {key for key in header if key != "__metadata__"}
  if set(tensors) != expected:
    raise _fail(path, "the tensors read differ from those the header lists (file changed?)")
  out = {}
  for key in sorted(tensors):
    code, want = header[key]["dtype"], DTYPES[header[key]["dtype"]]
    array = np.asarray(tensors[key])
    if array.dtype != want:  # E.g. BF16 handed back as raw 2-byte words.
      if array.dtype.itemsize != want.itemsize:
        raise _fail(path, f"tensor {key!r}: {code} read back as {array.dtype}")
      array = array.view(want)
    array = _c_contiguous(array.reshape(header[key]["shape"]))
    if code == "BOOL" and array.size and array.view(np.uint8).max() > 1:
      raise _fail(path, f"tensor {key!r}: BOOL data holds bytes other than 0 and 1")
    out[key] = array
  return out, metadata


def is_safetensors(path: str | os.PathLike) -> bool:
  """Cheap sniff: a regular file whose header length fits in it and whose header opens '{'.

  Reads 9 bytes; does not parse or check the header (`read_tensors` does).
  """
  try:
    with open(path, "rb") as f:
      info = os.fstat(f.fileno())
      if not stat.S_ISREG(info.st_mode):
        return False
      start = f.read(9)
  except OSError:
    return False
  if len(start) < 9:
    return False
  (n,) = struct.unpack("<Q", start[:8])
  return n <= MAX_HEADER_BYTES and 8 + n <= info.st_size and start[8:9] == b"{"


def _is_floating(dtype: np.dtype) -> bool:
  """True for numpy's floats and ml_dtypes' (bfloat16, float8_*), whose kind is 'V'."""
  if dtype.kind == "f":
    return True
  try:
    ml_dtypes.finfo(dtype)
  except (ValueError, TypeError):
    return False
  return True


def _flat_leaves(path: Any, tree: Any, what: str, cast_to: np.dtype) -> dict[str, np.ndarray]:
  """`{module: {leaf: array}}` -> `{"module/leaf": C-contiguous array}`, floats cast."""
  plain = official_format._plain_tree(tree or {}, f"{os.fspath(path)}: {what}")
  out = {}
  for module, leaves in plain.items():
    for name, leaf in leaves.items():
      key = f"{module}/{name}"
      if "/" in name:
        raise ValueError(f"{path}: {what} leaf name {name!r} in {module!r} contains '/'")
      if _is_floating(leaf.dtype):
        leaf = leaf.astype(cast_to, copy=False)
      else:  # Native byte order, so the dtype compares equal to the table's.
        leaf = leaf.astype(leaf.dtype.newbyteorder("="), copy=False)
      if leaf.dtype not in _CODES:
        raise ValueError(
          f"{path}: {what} {key!r} has dtype {leaf.dtype}, which is not saved "
          f"(accepted: {', '.join(sorted(str(d) for d in _CODES))})"
        )
      out[key] = _c_contiguous(leaf)
  return out


def save(
  path: str | os.PathLike,
  params: Mapping[str, Mapping[str, Any]],
  state: Mapping[str, Mapping[str, Any]] | None = None,
  *,
  dtype: str = "float32",
  metadata: Mapping[str, str] | None = None,
) -> None:
  """Writes params and state as one safetensors file, atomically.

  Names are `f"{module}/{leaf}"` for both trees; `"perceiver_jax.state_keys"` in the metadata
  lists (sorted, as JSON) those that are state. The write goes to a temporary file in the same
  directory that is fsynced and renamed over `path`, so a crash leaves the old file or the
  new one, never a part.

  Args:
    path: destination; parent directories are created.
    params: `{module_path: {leaf_name: array}}`, numpy or jax arrays.
    state: the same structure, e.g. batch-norm statistics or an EMA `counter`; None for none.
    dtype: "float32" or "bfloat16": floating leaves are cast to it, integer and bool leaves
      keep their dtype.
    metadata: extra string metadata. The keys `save` writes itself ("format" and
      "perceiver_jax.*") are replaced by the values for this file, so the metadata returned
      by `load` can be passed back unchanged.

  Raises:
    ValueError: an unknown `dtype`; a non-string metadata key or value; a name in both params
      and state; a leaf name containing '/'; a leaf whose dtype is not in `DTYPES` (e.g.
      uint32, complex64). `CheckpointFormatError` (a ValueError) if a tree is not a two-level
      mapping of arrays.
  """
  if dtype not in SAVE_DTYPES:
    raise ValueError(f"{path}: dtype {dtype!r} is not one of {sorted(SAVE_DTYPES)}")
  cast_to = SAVE_DTYPES[dtype]
  extra = dict(metadata or {})
  for key, value in extra.items():
    if not isinstance(key, str) or not isinstance(value, str):
      raise ValueError(
        f"{path}: metadata {key!r}: {type(value).__name__} value (keys and values must be str)"
      )
  flat_params = _flat_leaves(path, params, "params", cast_to)
  flat_state = _flat_leaves(path, state, "state", cast_to)
  both = sorted(flat_params.keys() & flat_state.keys())
  if both:
    raise ValueError(f"{path}: {len(both)} names in both params and state, e.g. {both[0]!r}")
  header_metadata = {
    **extra,
    FORMAT_KEY: FORMAT,
    VERSION_KEY: VERSION,
    STATE_KEYS_KEY: json.dumps(sorted(flat_state)),
  }
  data = safetensors.numpy.save({**flat_params, **flat_state}, metadata=header_metadata)
  with atomic.atomic_write(os.fspath(path), "wb") as f:
    f.write(data)


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  """`{"module/leaf": x}` -> `{module: {leaf: x}}`, splitting at the last '/'."""
  tree: dict[str, dict[str, np.ndarray]] = {}
  for key in sorted(flat):
    module, _, name = key.rpartition("/")
    tree.setdefault(module, {})[name] = flat[key]
  return tree


def load(path: str | os.PathLike) -> tuple[dict, dict, dict[str, str]]:
  """Reads a file written by `save`.

  Args:
    path: a perceiver_jax safetensors file.

  Returns:
    `(params, state, metadata)`: params and state as `dict[str, dict[str, np.ndarray]]`
    (state `{}` if the file has none), and the file's whole metadata, including "format",
    "perceiver_jax.version" and "perceiver_jax.state_keys".

  Raises:
    CheckpointFormatError: as for `read_tensors`; and, in one line naming the file, metadata
      without `"format": "perceiver_jax"` (e.g. a transformers file), a version other than
      "1", a name without '/', or state_keys that is not a JSON list of distinct strings
      naming tensors in the file.
  """
  tensors, metadata = read_tensors(path)
  if metadata.get(FORMAT_KEY) != FORMAT:
    raise _fail(
      path,
      "not a perceiver_jax safetensors file (no 'format' metadata); for a transformers "
      "folder use the HF importer",
    )
  version = metadata.get(VERSION_KEY)
  if version != VERSION:
    raise _fail(path, f"{VERSION_KEY} is {version!r}; this code reads {VERSION!r}")
  for key in tensors:
    if "/" not in key:
      raise _fail(path, f"tensor {key!r} has no '/' between module and leaf name")
  try:
    state_keys = json.loads(metadata.get(STATE_KEYS_KEY, "[]"))
  except json.JSONDecodeError:
    state_keys = None
  if not isinstance(state_keys, list) or not all(isinstance(k, str) for k in state_keys):
    raise _fail(path, f"{STATE_KEYS_KEY} is not a JSON list of strings")
  if len(set(state_keys)) != len(state_keys):
    raise _fail(path, f"{STATE_KEYS_KEY} repeats a name")
  missing = [k for k in state_keys if k not in tensors]
  if missing:
    raise _fail(path, f"{STATE_KEYS_KEY} names {len(missing)} missing tensors, e.g. {missing[0]!r}")
  state_set = set(state_keys)
  params = _unflatten({k: v for k, v in tensors.items() if k not in state_set})
  state = _unflatten({k: v for k, v in tensors.items() if k in state_set})
  return params, state, metadata
