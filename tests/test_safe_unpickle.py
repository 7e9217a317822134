"""Tests for perceiver_jax/safe_unpickle.py: only plain numeric arrays are built, from a shape,
dtype and bytes the loader has checked, and no state it has not checked is ever set.

Each forged file goes through `official_format.load_official_pickle`, the loader behind
`predict --checkpoint` and `--config.pretrained.path`."""

import pickle

import numpy as np
import pickle_ops as ops
import pytest
from haiku._src import data_structures as hk_data_structures

from perceiver_jax import official_format as of
from perceiver_jax.official_format import CheckpointFormatError

LINEAR = "perceiver_encoder/~/cross_attention/attention/linear"


def _write(tmp_path, data: bytes) -> str:
  path = tmp_path / "ckpt.pkl"
  path.write_bytes(data)
  return str(path)


def _refused(tmp_path, data: bytes, match: str) -> str:
  """Loads `data` from a file; returns the one-line error, which names the file."""
  path = _write(tmp_path, data)
  with pytest.raises(CheckpointFormatError, match=match) as e:
    of.load_official_pickle(path)
  message = str(e.value)
  assert message.startswith(f"{path}: ") and "\n" not in message
  return message


def _leaf(leaf_ops: bytes) -> bytes:
  """A checkpoint `{LINEAR: {'w': <leaf_ops>}}`, the rest pickled by pickle itself."""
  return ops.dumps({LINEAR: {"w": ops.Raw(leaf_ops)}})


def test_hidden_object_field_is_refused(tmp_path):
  # The flags 0 hide the object field from numpy: c289d05 built this array, and the cast to
  # float32 in predict and fine-tuning dereferenced 0x4141414141414141 (exit 139).
  forged = ops.array((2,), ops.hidden_object_dtype(), b"\x41" * 16)
  _refused(tmp_path, _leaf(forged), "refusing dtype 'V8': only bool, int, uint and float")


@pytest.mark.parametrize(
  "dtype_ops, match",
  [
    (ops.dtype("O8", "|"), "refusing dtype 'O8'"),
    (ops.dtype("c8"), "refusing dtype 'c8'"),
    (ops.dtype("M8"), "refusing dtype 'M8'"),
    (ops.dtype("U1"), "refusing dtype 'U1'"),
    (ops.dtype("f4", names=ops.tuple_(ops.text("a"))), "dtype with fields, subarrays or a size"),
    (ops.dtype("f4", elsize=8), "dtype with fields, subarrays or a size"),
    (ops.dtype("f4", order="|"), "refusing byte order '\\|' for dtype float32"),
    (ops.dtype("i1", order="<"), "refusing byte order '<' for dtype int8"),
  ],
  ids=["object", "complex", "datetime", "string", "fields", "size", "order-f4", "order-i1"],
)
def test_only_plain_numeric_dtypes_are_built(tmp_path, dtype_ops, match):
  _refused(tmp_path, _leaf(ops.array((1,), dtype_ops, b"\0" * 8)), match)


def test_data_length_must_match_shape(tmp_path):
  forged = ops.array((1000,), ops.dtype("f4"), b"\0" * 4)
  _refused(tmp_path, _leaf(forged), r"array \(1000,\) float32 needs 4000 bytes .* has 4")


def test_array_state_is_set_once(tmp_path):
  twice = ops.build(
    ops.array((1,), ops.dtype("f4"), b"\0" * 4), ops.array_state((2,), ops.dtype("f4"), b"\0" * 8)
  )
  _refused(tmp_path, _leaf(twice), "refusing to set an array's state twice")


def test_numpy_ndarray_is_never_called(tmp_path):
  # numpy.ndarray((2**40,)) would allocate 4 TiB before anything could check it.
  huge = ops.call(
    ops.global_("numpy", "ndarray"), ops.tuple_(ops.integer(2**30), ops.integer(1024))
  )
  _refused(tmp_path, _leaf(huge), "refusing to call numpy.ndarray")


def test_reconstruct_builds_only_ndarray(tmp_path):
  not_ndarray = ops.call(
    ops.global_("numpy.core.multiarray", "_reconstruct"),
    ops.global_("numpy", "dtype"),
    ops.tuple_(ops.integer(0)),
    ops.raw_bytes(b"b"),
  )
  _refused(tmp_path, _leaf(not_ndarray), "refusing _reconstruct of anything but numpy.ndarray")


def test_state_of_a_global_cannot_be_set(tmp_path):
  # BUILD on a global would set attributes of the loader's own stand-in (here Haiku's
  # FlatMapping) with values the file chooses, for every later load in the process.
  flat_mapping = ops.global_("haiku._src.data_structures", "FlatMapping")
  slot_state = ops.tuple_(ops.NONE, ops.mapping({"__defaults__": ops.tuple_(ops.NONE)}))
  _refused(tmp_path, ops.stream(ops.build(flat_mapping, slot_state)), "state of a global")

  # The stand-in still works: a legacy FlatMapping checkpoint loads as before.
  leaf = np.arange(3, dtype=np.float32)
  legacy = hk_data_structures.FlatMap({LINEAR: hk_data_structures.FlatMap({"w": leaf})})
  params, _ = of.load_official_pickle(_write(tmp_path, pickle.dumps(legacy, protocol=2)))
  np.testing.assert_array_equal(params[LINEAR]["w"], leaf)


PLAIN_ARRAYS = {
  "bool": np.array([True, False, True]),
  "int8": np.arange(-3, 3, dtype=np.int8),
  "uint16": np.arange(6, dtype=np.uint16).reshape(2, 3),
  "int64": np.array([2**40, -(2**40)], np.int64),
  "float16": np.linspace(-1, 1, 5).astype(np.float16),
  "float64": np.linspace(-1, 1, 6).reshape(3, 2),
  "big-endian float32": np.arange(4, dtype=">f4"),
  "fortran-ordered": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
  "0-d": np.array(2.5, np.float32),
  "empty": np.zeros((0, 3), np.float32),
  "numpy scalar": np.float32(-1.5),
}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_arrays_load_exactly(tmp_path, protocol):
  content = {"params": {LINEAR: PLAIN_ARRAYS}, "state": {}}
  params, _ = of.load_official_pickle(_write(tmp_path, pickle.dumps(content, protocol=protocol)))
  for name, expected in PLAIN_ARRAYS.items():
    loaded = params[LINEAR][name]
    native = np.asarray(expected).dtype.newbyteorder("=")  # As numpy's own unpickling gives.
    assert type(loaded) is np.ndarray and loaded.dtype == native, name
    assert loaded.flags.writeable and loaded.flags.owndata, name
    assert loaded.flags.f_contiguous == np.asarray(expected).flags.f_contiguous, name
    np.testing.assert_array_equal(loaded, expected)
