"""Reads a PyTorch state dict (`pytorch_model.bin`) into numpy arrays without torch.

`torch.save` (since torch 1.6) writes a zip archive, every member stored uncompressed:

* `<archive>/data.pkl`: a protocol-2 pickle of the state dict,
* `<archive>/data/<key>`: the raw bytes of one storage,
* `<archive>/byteorder` (`little` or `big`; absent in older files, which are little-endian),
  `<archive>/version` and a few more records that nothing here needs.

In `data.pkl` each tensor is `torch._utils._rebuild_tensor_v2(storage, storage_offset, size,
stride, requires_grad, backward_hooks[, metadata])`, `backward_hooks` an empty
`collections.OrderedDict()`, and each storage a persistent id
`('storage', torch.FloatStorage, key, location, numel)` with one legacy storage class per dtype
(torch 2 still writes these, not `torch.storage.UntypedStorage`, for a tensor). A state dict is
a plain dict (transformers 4.x `save_pretrained(safe_serialization=False)`) or the module's
`OrderedDict` with BUILD setting its `_metadata` (a `torch.save(model.state_dict())`);
`nn.Parameter`s saved directly are `torch._utils._rebuild_parameter(tensor, requires_grad,
hooks)`. `read_state_dict` resolves only these names, to stand-ins that build a numpy array from
validated (storage bytes, dtype, offset, size, stride); any other global, persistent id or state
is refused, so nothing the file names is ever imported or called.

Bounds, checked before anything is built: at most `MAX_MEMBERS` zip members, all stored (torch
never compresses), whose sizes add up to no more than the file; `data.pkl` at most
`MAX_PICKLE_BYTES` and within `pickle_bounds`; every tensor's extent inside its storage, whose
byte length matches its dtype and element count; and the arrays built adding up to at most
`MAX_EXPANSION` times the file (views may share a storage: tied weights, a transpose saved with
its original, but each byte counted at each use could otherwise multiply without limit).
"""

from __future__ import annotations

import math
import os
import pickle
import re
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any
from typing import BinaryIO

import ml_dtypes
import numpy as np

from perceiver_jax import pickle_bounds
from perceiver_jax.official_format import CheckpointFormatError

MAX_MEMBERS = 100_000  # A storage per tensor: 100 times the tensors of a large model.
MAX_PICKLE_BYTES = 64 << 20  # ~100 bytes per tensor in data.pkl: room for 600,000 tensors.
MAX_EXPANSION = 4  # Arrays built, in bytes, per byte of the file.
MAX_DIMS = 32

_ZIP_MAGIC = b"PK\x03\x04"
# A legacy (pre-1.6) torch file starts with a pickled magic number: PROTO 2, LONG1 of 10 bytes.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # Signature, then name and extra field lengths.
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")

# The legacy storage classes `torch.save` names, by the dtype of their elements.
_STORAGES = {
  "FloatStorage": np.dtype(np.float32),
  "HalfStorage": np.dtype(np.float16),
  "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
  "DoubleStorage": np.dtype(np.float64),
  "LongStorage": np.dtype(np.int64),
  "IntStorage": np.dtype(np.int32),
  "ShortStorage": np.dtype(np.int16),
  "CharStorage": np.dtype(np.int8),
  "ByteStorage": np.dtype(np.uint8),
  "BoolStorage": np.dtype(np.bool_),
}


class _Refused(ValueError):
  """The archive holds something no state dict does; the message is one line, no path."""


class _Global:
  """A name the stream may use: calling it calls `fn`; the stream can set no state on it."""

  __slots__ = ("_fn",)

  def __init__(self, fn):
    self._fn = fn

  def __call__(self, *args):
    return self._fn(*args)

  def __setstate__(self, state):
    raise _Refused("refusing to set the state of a global")


class _StorageType:
  """Stands for `torch.<dtype>Storage` (or `torch.storage.UntypedStorage`, bytes) in a
  persistent id; it is never called."""

  __slots__ = ("name", "dtype")

  def __init__(self, name: str, dtype: np.dtype):
    self.name, self.dtype = name, dtype

  def __setstate__(self, state):
    raise _Refused(f"refusing to set the state of torch.{self.name}")


class _Storage:
  """One `<archive>/data/<key>` member, as the elements of its dtype in native byte order."""

  __slots__ = ("key", "dtype", "array")

  def __init__(self, key: str, dtype: np.dtype, array: np.ndarray):
    self.key, self.dtype, self.array = key, dtype, array

  def __setstate__(self, state):
    raise _Refused(f"refusing to set the state of storage {self.key}")


class _Tensor:
  """A tensor the stream built; `array` is a new, C-contiguous ndarray. The stream sees only
  this wrapper, never the ndarray, whose `__setstate__` would take any dtype from the file."""

  __slots__ = ("array",)

  def __init__(self, array: np.ndarray):
    self.array = array

  def __setstate__(self, state):
    raise _Refused("refusing to set the state of a tensor")


class _OrderedDict(dict):
  """`collections.OrderedDict`: a state dict or an (empty) backward-hooks mapping. BUILD may
  give a module state dict's `{'_metadata': {...}}` (module versions), which is dropped."""

  def __setstate__(self, state):
    if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
      raise _Refused("refusing OrderedDict state other than a state dict's _metadata")


def _is_index(value) -> bool:
  return type(value) is int and value >= 0


class _ArchiveUnpickler(pickle.Unpickler):
  """Resolves only the names a state dict uses; storages come from the open archive."""

  def __init__(self, f: BinaryIO, archive: _Archive):
    super().__init__(f)
    self._archive = archive
    self._storages: dict[str, _Storage] = {}
    self._built_bytes = 0
    self._allowed = {
      ("collections", "OrderedDict"): _Global(_OrderedDict),
      ("torch._utils", "_rebuild_tensor_v2"): _Global(self._rebuild_tensor),
      ("torch._utils", "_rebuild_parameter"): _Global(_rebuild_parameter),
      ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype(np.uint8)),
      ("torch", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype(np.uint8)),
      **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGES.items()},
    }

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._allowed[(module, name)]
    except KeyError:
      raise _Refused(
        f"refusing global {module}.{name}: a torch state dict holds only tensors"
      ) from None

  def persistent_load(self, pid) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
      raise _Refused(f"refusing persistent id {_short(pid)}: only ('storage', ...) tuples")
    _, storage_type, key, location, numel = pid
    if not isinstance(storage_type, _StorageType):
      raise _Refused(f"refusing storage type {_short(storage_type)}: not a torch storage class")
    if not (isinstance(key, str) and _STORAGE_KEY.fullmatch(key)):
      raise _Refused(f"refusing storage key {_short(key)}")
    if not isinstance(location, str) or not _is_index(numel):
      raise _Refused(f"refusing storage {key}: location {_short(location)}, size {_short(numel)}")
    storage = self._storages.get(key)
    if storage is None:
      data = self._archive.storage_bytes(key)
      expected = numel * storage_type.dtype.itemsize
      if len(data) != expected:
        raise _Refused(
          f"storage {key} holds {len(data)} bytes, not the {expected} of {numel} "
          f"{storage_type.dtype} elements"
        )
      storage = _Storage(key, storage_type.dtype, self._archive.elements(data, storage_type.dtype))
      self._storages[key] = storage
    elif storage.dtype != storage_type.dtype or storage.array.size != numel:
      raise _Refused(f"storage {key} is named as two different types or sizes")
    return storage

  def _rebuild_tensor(
    self, storage, offset, size, stride, requires_grad, hooks, metadata=None
  ) -> _Tensor:
    """`_rebuild_tensor_v2`: a copy of the strided view, after checking it lies in storage."""
    if not isinstance(storage, _Storage):
      raise _Refused(f"refusing a tensor over {type(storage).__name__}: not a storage")
    if not (
      isinstance(size, tuple)
      and isinstance(stride, tuple)
      and len(size) == len(stride) <= MAX_DIMS
      and all(map(_is_index, size + stride))
      and _is_index(offset)
    ):
      raise _Refused(
        f"refusing tensor over storage {storage.key}: offset {_short(offset)}, size "
        f"{_short(size)}, stride {_short(stride)}"
      )
    if not isinstance(requires_grad, bool) or not (isinstance(hooks, dict) and not hooks):
      raise _Refused(f"refusing tensor over storage {storage.key} with backward hooks")
    if metadata is not None and not (isinstance(metadata, dict) and not metadata):
      # Tensor metadata carries flags (e.g. a negative view) that change what the bytes mean.
      raise _Refused(f"refusing tensor over storage {storage.key} with metadata {_short(metadata)}")
    count = math.prod(size)
    last = offset + sum((n - 1) * step for n, step in zip(size, stride, strict=True))
    if offset > storage.array.size or (count and last >= storage.array.size):
      raise _Refused(
        f"tensor of size {size}, stride {stride} at offset {offset} runs past the end of "
        f"storage {storage.key} ({storage.array.size} elements)"
      )
    self._built_bytes += count * storage.dtype.itemsize
    if self._built_bytes > self._archive.max_built_bytes:
      raise _Refused(
        f"refusing tensors of more than {self._archive.max_built_bytes} bytes in all from a "
        f"file of {self._archive.size} bytes (views repeating the same storage)"
      )
    if not count:
      return _Tensor(np.zeros(size, storage.dtype))
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
      storage.array[offset:],
      shape=size,
      strides=tuple(step * itemsize for step in stride),
      writeable=False,
    )
    return _Tensor(np.array(view, order="C", copy=True))


def _rebuild_parameter(data, requires_grad, hooks) -> _Tensor:
  """`_rebuild_parameter`: an `nn.Parameter` is its tensor."""
  if not isinstance(data, _Tensor):
    raise _Refused(f"refusing a parameter over {type(data).__name__}: not a tensor")
  if not isinstance(requires_grad, bool) or not (isinstance(hooks, dict) and not hooks):
    raise _Refused("refusing a parameter with backward hooks")
  return data


def _short(value) -> str:
  text = " ".join(repr(value).split())
  return text if len(text) <= 80 else text[:77] + "..."


class _Archive:
  """The zip's members, bounded; reads a stored member's bytes from its local header."""

  def __init__(self, f: BinaryIO, size: int):
    self._f, self.size = f, size
    self.max_built_bytes = MAX_EXPANSION * size
    try:
      zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
      raise _Refused(f"truncated or corrupt zip archive ({_reason(e)})") from None
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
      raise _Refused(f"refusing a zip of more than {MAX_MEMBERS} members ({len(infos)})")
    total = 0
    for info in infos:
      if info.compress_type != zipfile.ZIP_STORED:
        raise _Refused(f"member {info.filename} is compressed: torch.save stores every member")
      if info.file_size > size:
        raise _Refused(f"member {info.filename} claims {info.file_size} bytes, the file has {size}")
      total += info.file_size
    if total > size:
      raise _Refused(f"members claim {total} bytes in all, more than the file's {size}")
    self._members = {info.filename: info for info in infos}
    pickles = [name for name in self._members if re.fullmatch(r"[^/]+/data\.pkl", name)]
    if len(pickles) != 1:
      raise _Refused(
        "no <archive>/data.pkl member: not a torch.save archive"
        if not pickles
        else f"{len(pickles)} data.pkl members: not a single torch.save archive"
      )
    self._prefix = pickles[0][: -len("data.pkl")]
    byteorder = self._member("byteorder", required=False)
    order = b"little" if byteorder is None else byteorder.strip()
    if order not in (b"little", b"big"):
      raise _Refused(f"unknown byteorder {_short(order)}: neither little nor big")
    self._order = "<" if order == b"little" else ">"

  def pickle_bytes(self) -> bytes:
    info = self._members[self._prefix + "data.pkl"]
    if info.file_size > MAX_PICKLE_BYTES:
      raise _Refused(
        f"refusing a data.pkl of {info.file_size} bytes: at most {MAX_PICKLE_BYTES >> 20} MiB"
      )
    return self._member("data.pkl")

  def storage_bytes(self, key: str) -> bytes:
    return self._member(f"data/{key}")

  def elements(self, data: bytes, dtype: np.dtype) -> np.ndarray:
    """The bytes as `dtype` elements in native order (a copy only when swapping)."""
    bits = np.frombuffer(data, dtype=np.dtype(f"{self._order}u{dtype.itemsize}"))
    bits = bits.astype(bits.dtype.newbyteorder("="), copy=False)
    if dtype == np.bool_:
      return bits != 0  # Only 0 and 1 are valid numpy bools.
    return bits.view(dtype)

  def _member(self, name: str, required: bool = True) -> bytes | None:
    info = self._members.get(self._prefix + name)
    if info is None:
      if required:
        raise _Refused(f"no member {self._prefix}{name}")
      return None
    self._f.seek(info.header_offset)
    header = self._f.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size:
      raise _Refused(f"truncated zip archive: member {info.filename} is past the end")
    magic, name_len, extra_len = _LOCAL_HEADER.unpack(header)
    local_name = self._f.read(name_len)
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    if magic != _ZIP_MAGIC or local_name != info.orig_filename.encode(encoding):
      raise _Refused(f"corrupt zip archive: no local header for member {info.filename}")
    self._f.seek(extra_len, os.SEEK_CUR)
    data = self._f.read(info.file_size)
    if len(data) != info.file_size:
      raise _Refused(f"truncated zip archive: member {info.filename} ends past the end")
    # torch writes a CRC of 0 when saving with compute_crc32 off; any other must match.
    if info.CRC and zlib.crc32(data) != info.CRC:
      raise _Refused(f"corrupt zip archive: bad CRC-32 for member {info.filename}")
    return data


def _reason(e: BaseException) -> str:
  return " ".join(f"{type(e).__name__}: {e}".split())


def is_torch_archive(path: str | os.PathLike) -> bool:
  """Whether `path` starts like a zip archive, as `torch.save` (torch >= 1.6) writes one."""
  try:
    with open(path, "rb") as f:
      return f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
  except OSError:
    return False


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a `torch.save` state dict without torch and without running code from the file.

  Args:
    path: a `pytorch_model.bin` (or any `torch.save` of a flat dict of tensors).

  Returns:
    `{name: array}` in the file's order; each array a new, writable, C-contiguous ndarray in
    native byte order: float32, float16, bfloat16 (`ml_dtypes.bfloat16`), float64, int64, int32,
    int16, int8, uint8 or bool, with the tensor's shape (a 0-d array for a scalar tensor).

  Raises:
    CheckpointFormatError: one line naming the file: missing or unreadable, not a zip (the
      legacy pre-1.6 format included), a truncated or corrupt zip, no data.pkl, a bound
      exceeded, any global but a storage class, `_rebuild_tensor_v2`, `_rebuild_parameter`
      and `collections.OrderedDict`, a tensor outside its storage, or anything but tensors.
  """
  try:
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      head = f.read(len(_LEGACY_MAGIC))
      if head[: len(_ZIP_MAGIC)] != _ZIP_MAGIC:
        what = "a legacy torch file" if head == _LEGACY_MAGIC else "not a zip archive"
        raise _Refused(
          f"{what}: the legacy torch format (before 1.6) is not supported: re-save it with "
          "torch.save or convert to safetensors"
        )
      f.seek(0)
      archive = _Archive(f, size)
      content = _unpickle(archive)
  except _Refused as e:
    raise CheckpointFormatError(f"{path}: {e}") from None
  except FileNotFoundError:
    raise CheckpointFormatError(f"{path}: no such file") from None
  except OSError as e:
    raise CheckpointFormatError(f"{path}: cannot read ({e.strerror or e})") from None
  except Exception as e:  # A corrupt zip directory surfaces as many exception types.
    raise CheckpointFormatError(f"{path}: not a readable torch archive ({_reason(e)})") from None
  return _state_dict(content, path)


def _unpickle(archive: _Archive) -> Any:
  """Checks data.pkl against `pickle_bounds`, then unpickles it with the archive's storages."""
  with tempfile.TemporaryFile() as tmp:  # check_pickle needs a real file.
    tmp.write(archive.pickle_bytes())
    tmp.seek(0)
    try:
      pickle_bounds.check_pickle(tmp)
      return _ArchiveUnpickler(tmp, archive).load()
    except _Refused:
      raise
    except pickle_bounds.PickleBoundError as e:
      raise _Refused(f"data.pkl: {e}") from None
    except Exception as e:  # Corrupt bytes surface as many exception types.
      raise _Refused(f"data.pkl: not a readable pickle ({_reason(e)})") from None


def _state_dict(content: Any, path) -> dict[str, np.ndarray]:
  if not isinstance(content, Mapping):
    raise CheckpointFormatError(
      f"{path}: holds a {type(content).__name__}, not a state dict of tensors"
    )
  result = {}
  for name, value in content.items():
    if not isinstance(name, str):
      raise CheckpointFormatError(f"{path}: has a {type(name).__name__} key, not a string")
    if not isinstance(value, _Tensor):
      raise CheckpointFormatError(
        f"{path}: entry {name!r} holds a {type(value).__name__}, not a tensor"
      )
    result[name] = value.array
  return result
