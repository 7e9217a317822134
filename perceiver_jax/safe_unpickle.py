"""Unpickles official checkpoints without running code or trusting what the file asks numpy for.

The official files were written in 2021 and may name classes that today's libraries moved or
dropped, and unpickling an arbitrary callable runs arbitrary code, so `load` resolves only the
names in `_ALLOWED`, each to a stand-in that builds a plain `dict`, `bytes` or a validated
array. What the streams hold:

* Haiku mappings: `FlatMapping.__reduce__` (and today's `FlatMap.__reduce__`) return
  `(haiku._src.data_structures.FlatMapping, (inner_dict,))`, nested once per level; the older
  `frozendict` returns `(haiku._src.data_structures.frozendict, (inner_dict,))`.
* numpy arrays: `_reconstruct(ndarray, (0,), b'b')`, then BUILD with
  `(1, shape, dtype, is_fortran, raw_bytes)`; dtypes as `dtype('f4', False, True)`, then BUILD
  with `(3, byte_order, None, None, None, -1, -1, flags)`; scalars as `scalar(dtype, bytes)`;
  with pickle protocol 5, `_frombuffer(bytes, dtype, shape, order)`.
* jax arrays: until 2022 (jax-ml/jax#10659) `DeviceArray.__reduce__` forwarded to the host
  ndarray's, so the stream names only numpy. Later jax wrote
  `jax._src.device_array.reconstruct_device_array` and now `jax._src.array._reconstruct_array`,
  both called as `(fun, args, arr_state, aval_state)` where `fun(*args)` plus
  `__setstate__(arr_state)` rebuild the ndarray. No jax array class is ever named.

numpy's own `dtype.__setstate__` takes field layouts and flags from the file (flags 0 hide an
object field, whose raw bytes later become a pointer), so no numpy reconstructor ever sees the
file's values: the stand-ins accept only a bool, int, uint or float dtype of a standard size
named by its code, a byte order consistent with its size, and raw bytes whose length matches
the shape, and build the array from those (shape, dtype, bytes) alone. Every global resolves to
a `_Global`, whose state the stream cannot set, and BUILD reaches only the stand-ins'
validating `__setstate__`. `pickle_bounds.check_pickle` runs first, so no file can demand
unbounded memory, time or recursion.
"""

from __future__ import annotations

import math
import pickle
from typing import Any
from typing import BinaryIO

import numpy as np

from perceiver_jax import pickle_bounds

# Dtype codes as numpy pickles them. No complex, datetime, string, void or object dtype.
_DTYPES = {
  code: np.dtype(code)
  for code in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
}


class UnsafePickleError(ValueError):
  """The stream asks for something no checkpoint holds; the message is one line."""


class _Global:
  """A name the stream may use: calling it calls `fn`; the stream can set no state on it."""

  __slots__ = ("_fn",)

  def __init__(self, fn):
    self._fn = fn

  def __call__(self, *args):
    return self._fn(*args)

  def __setstate__(self, state):
    raise UnsafePickleError("refusing to set the state of a global")


class _Dtype:
  """`numpy.dtype(code, align, copy)` then BUILD: only plain numeric dtypes (`_DTYPES`)."""

  def __init__(self, code, align=False, copy=True):
    del align, copy  # Meaningless for the plain dtypes accepted here.
    if not isinstance(code, str) or code not in _DTYPES:
      raise UnsafePickleError(f"refusing dtype {code!r}: only bool, int, uint and float arrays")
    self.value = _DTYPES[code]  # Native byte order unless the state says otherwise.

  def __setstate__(self, state):
    """Accepts `(3, byte_order, None, None, None, -1, -1, flags)`; the flags are never read."""
    if not (
      isinstance(state, tuple)
      and len(state) == 8
      and state[0] == 3
      and state[2:5] == (None, None, None)
      and state[5:7] == (-1, -1)
    ):
      raise UnsafePickleError(f"refusing a {self.value} dtype with fields, subarrays or a size")
    order = state[1]
    single_byte = self.value.itemsize == 1
    if order not in (("|",) if single_byte else ("<", ">")):
      raise UnsafePickleError(f"refusing byte order {order!r} for dtype {self.value}")
    self.value = self.value.newbyteorder(order)


def _array(shape, dtype, fortran, data) -> np.ndarray:
  """A new, writable ndarray in native byte order from validated (shape, dtype, raw bytes)."""
  if not (
    isinstance(shape, tuple)
    and len(shape) <= 32
    and all(type(n) is int and 0 <= n <= pickle_bounds.MAX_FILE_BYTES for n in shape)
  ):
    raise UnsafePickleError(f"refusing array shape {shape!r}")
  if not isinstance(dtype, _Dtype):
    raise UnsafePickleError(f"refusing array dtype {type(dtype).__name__}: not a numpy dtype")
  if not isinstance(data, (bytes, bytearray)):
    raise UnsafePickleError(f"refusing array data of type {type(data).__name__}, not bytes")
  expected = math.prod(shape) * dtype.value.itemsize
  if len(data) != expected:
    raise UnsafePickleError(
      f"array {shape} {dtype.value} needs {expected} bytes of data, the file has {len(data)}"
    )
  array = np.frombuffer(data, dtype=dtype.value).reshape(shape, order="F" if fortran else "C")
  return array.astype(dtype.value.newbyteorder("="), order="K")  # A copy in native order.


class PickledArray:
  """An array the stream builds in two steps; `value()` is the ndarray once both ran.

  `numpy.ndarray` and numpy's `_reconstruct` make an empty one; BUILD (or the jax
  reconstructors) then gives `(1, shape, dtype, is_fortran, raw_bytes)`, validated by `_array`.
  """

  def __init__(self, array: np.ndarray | None = None):
    self._array = array

  def __setstate__(self, state):
    if self._array is not None:
      raise UnsafePickleError("refusing to set an array's state twice")
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
      raise UnsafePickleError("refusing an array state that is not (1, shape, dtype, order, data)")
    _, shape, dtype, fortran, data = state
    if not isinstance(fortran, bool):
      raise UnsafePickleError(f"refusing array order flag {fortran!r}")
    self._array = _array(shape, dtype, fortran, data)

  def value(self) -> np.ndarray:
    if self._array is None:
      raise UnsafePickleError("an array whose data the file never gives")
    return self._array


def _no_direct_ndarray(*args):
  """`numpy.ndarray` may only appear as `_reconstruct`'s first argument."""
  raise UnsafePickleError("refusing to call numpy.ndarray: arrays come from _reconstruct")


_NDARRAY = _Global(_no_direct_ndarray)


def _reconstruct(subtype, shape=(0,), code=b"b") -> PickledArray:
  """numpy's `_reconstruct(ndarray, (0,), b'b')`: the empty array BUILD fills in."""
  del shape, code  # numpy always writes (0,) and b'b'; nothing is made from them.
  if subtype is not _NDARRAY:
    raise UnsafePickleError("refusing _reconstruct of anything but numpy.ndarray")
  return PickledArray()


def _scalar(dtype, data) -> PickledArray:
  """numpy's `scalar(dtype, raw_bytes)`: a 0-d array."""
  return PickledArray(_array((), dtype, False, data))


def _frombuffer(data, dtype, shape, order) -> PickledArray:
  """numpy's protocol-5 `_frombuffer(buffer, dtype, shape, order)`."""
  if order not in ("C", "F"):
    raise UnsafePickleError(f"refusing array order {order!r}")
  return PickledArray(_array(shape, dtype, order == "F", data))


def _reconstruct_jax_array(fun, args, arr_state, aval_state) -> PickledArray:
  """Stands in for jax's array reconstructors: the host array they start from."""
  del aval_state  # Only weak_type (and once named_shape) live here: meaningless for numpy.
  if fun is not _RECONSTRUCT:
    raise UnsafePickleError(f"jax array reconstructor called with {fun!r}")
  if not isinstance(args, tuple):
    raise UnsafePickleError("jax array reconstructor called without an argument tuple")
  array = fun(*args)
  array.__setstate__(arr_state)
  return array


def _legacy_mapping(data=()) -> dict:
  """Stands in for Haiku's FlatMapping/frozendict: the same mapping as a plain dict."""
  return dict(data)


def _latin1_encode(text: str, encoding: str) -> bytes:
  """Protocol <= 2 writes each `bytes` object as `_codecs.encode(text, 'latin1')`."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise UnsafePickleError(f"unexpected codec {encoding!r} in _codecs.encode")
  return text.encode("latin1")


def _empty_bytes() -> bytes:
  """Protocol <= 2 writes an empty `bytes` object as a call to `bytes()`."""
  return b""


_NUMPY_CORE = ("numpy.core", "numpy._core")  # numpy 2 renamed numpy.core; streams use either.

# (module, name) as written in the stream -> what to call instead.
_RECONSTRUCT = _Global(_reconstruct)
_ALLOWED = {
  **{(f"{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in _NUMPY_CORE},
  **{(f"{core}.multiarray", "scalar"): _Global(_scalar) for core in _NUMPY_CORE},
  **{(f"{core}.numeric", "_frombuffer"): _Global(_frombuffer) for core in _NUMPY_CORE},
  ("numpy", "ndarray"): _NDARRAY,
  ("numpy", "dtype"): _Global(_Dtype),
  ("_codecs", "encode"): _Global(_latin1_encode),
  ("builtins", "bytes"): _Global(_empty_bytes),
  ("__builtin__", "bytes"): _Global(_empty_bytes),  # protocol <= 2 spelling of `builtins`.
  ("collections", "OrderedDict"): _Global(dict),
  ("haiku._src.data_structures", "FlatMapping"): _Global(_legacy_mapping),
  ("haiku._src.data_structures", "frozendict"): _Global(_legacy_mapping),
  ("jax._src.device_array", "reconstruct_device_array"): _Global(_reconstruct_jax_array),
  ("jax._src.array", "_reconstruct_array"): _Global(_reconstruct_jax_array),
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the names in `_ALLOWED`; anything else could execute code."""

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafePickleError(
        f"refusing to unpickle {module}.{name}: not a known checkpoint type"
      ) from None


def load(f: BinaryIO) -> Any:
  """Checks the pickle in `f` against `pickle_bounds`, then unpickles it.

  Returns what the file holds, built only from dicts, lists, tuples, strings, numbers, bytes
  and `PickledArray`s (numpy and jax arrays alike).

  Raises:
    pickle_bounds.PickleBoundError: the file exceeds a bound or its opcodes cannot run.
    UnsafePickleError: the file names something outside the allow-list or gives an array or
      dtype state that is not a plain numeric array.
    Exception: other corrupt bytes surface as pickle's own errors (EOFError when truncated).
  """
  pickle_bounds.check_pickle(f)
  return _RestrictedUnpickler(f).load()
