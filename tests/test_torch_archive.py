"""Tests for perceiver_jax/torch_archive.py: `torch.save` state dicts read without torch.

The fixtures under tests/fixtures/torch_archive were written by torch (make_fixtures.py, run
with torch installed); torch is never imported here. The forged archives are written below,
their data.pkl opcode by opcode.
"""

import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pickle_ops as ops
import pytest

from perceiver_jax import torch_archive
from perceiver_jax.official_format import CheckpointFormatError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "torch_archive")
STATE_DICT = os.path.join(FIXTURES, "state_dict.bin")
BIG_ENDIAN = os.path.join(FIXTURES, "big_endian.bin")
MALICIOUS = os.path.join(FIXTURES, "malicious.bin")

DTYPES = {
  "encoder.dense.weight": (np.float32, (3, 4)),
  "encoder.dense.bias": (np.float32, (4,)),
  "encoder.transposed": (np.float32, (3, 4)),
  "encoder.bf16": (ml_dtypes.bfloat16, (2, 3)),
  "bn.num_batches_tracked": (np.int64, ()),
  "shared.a": (np.float32, (3,)),
  "shared.b": (np.float32, (2, 2)),
  "dtypes.float16": (np.float16, (3,)),
  "dtypes.float64": (np.float64, (2,)),
  "dtypes.int32": (np.int32, (1, 2)),
  "dtypes.int16": (np.int16, (2,)),
  "dtypes.int8": (np.int8, (2,)),
  "dtypes.uint8": (np.uint8, (2,)),
  "dtypes.bool": (np.bool_, (3,)),
  "dtypes.int64": (np.int64, (2,)),
  "dtypes.empty": (np.float32, (0, 3)),
  "dtypes.special": (np.float32, (5,)),
}


def _refused(path, match: str) -> str:
  """Reads `path`; returns the one-line error, which names the file."""
  with pytest.raises(CheckpointFormatError, match=match) as e:
    torch_archive.read_state_dict(path)
  message = str(e.value)
  assert message.startswith(f"{path}: ") and "\n" not in message
  return message


@pytest.mark.parametrize("path", [STATE_DICT, BIG_ENDIAN], ids=["little-endian", "big-endian"])
def test_every_tensor_matches_torch_bit_exactly(path):
  state = torch_archive.read_state_dict(path)
  with np.load(os.path.join(FIXTURES, "expected.npz")) as expected:
    assert list(state) == list(expected.files) == list(DTYPES)
    for name, (dtype, shape) in DTYPES.items():
      array = state[name]
      assert array.dtype == np.dtype(dtype) and array.shape == shape, name
      assert array.flags.c_contiguous and array.flags.writeable and array.dtype.isnative, name
      want = expected[name]
      if dtype is ml_dtypes.bfloat16:  # Stored as its uint16 bit patterns.
        want = want.view(ml_dtypes.bfloat16)
      assert want.dtype == array.dtype and want.shape == array.shape, name
      np.testing.assert_array_equal(array, want, err_msg=name)
      assert array.tobytes() == want.tobytes(), name  # Bit-exact: nan payloads, -0.0.


def test_views_of_one_storage_are_separate_arrays():
  state = torch_archive.read_state_dict(STATE_DICT)
  a, b = state["shared.a"], state["shared.b"]
  before = b.copy()
  a[:] = 0
  np.testing.assert_array_equal(b, before)
  # The transposed view, size (3, 4) stride (1, 5) at offset 1 into a (4, 5) storage.
  assert state["encoder.transposed"].strides == (16, 4)
  assert state["bn.num_batches_tracked"] == 7


def test_reading_never_imports_torch():
  code = (
    "import sys; from perceiver_jax import torch_archive as t; "
    f"t.read_state_dict({STATE_DICT!r}); assert 'torch' not in sys.modules, 'torch imported'"
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True)


def test_is_torch_archive(tmp_path):
  assert torch_archive.is_torch_archive(STATE_DICT)
  text = tmp_path / "notes.txt"
  text.write_text("hello")
  assert not torch_archive.is_torch_archive(text)
  assert not torch_archive.is_torch_archive(tmp_path / "missing.bin")


def test_malicious_global_is_refused_without_running(monkeypatch):
  calls = []
  monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
  message = _refused(MALICIOUS, "refusing global os.system")
  assert message.endswith("refusing global os.system: a torch state dict holds only tensors")
  assert calls == []
  # The same stream does run under pickle: the fixture is what it claims to be.
  with zipfile.ZipFile(MALICIOUS) as z:
    pickle.loads(z.read("malicious/data.pkl"))
  assert calls == [("echo this checkpoint ran code",)]


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_archive(tmp_path, keep):
  data = open(STATE_DICT, "rb").read()
  path = tmp_path / "pytorch_model.bin"
  path.write_bytes(data[: int(len(data) * keep)])
  _refused(path, "truncated or corrupt zip archive")


def test_corrupt_storage_fails_its_crc(tmp_path):
  data = bytearray(open(STATE_DICT, "rb").read())
  with zipfile.ZipFile(STATE_DICT) as z:
    info = z.getinfo("state_dict/data/0")
  name_len, extra_len = struct.unpack(
    "<HH", data[info.header_offset + 26 : info.header_offset + 30]
  )
  data[info.header_offset + 30 + name_len + extra_len] ^= 0xFF
  path = tmp_path / "pytorch_model.bin"
  path.write_bytes(bytes(data))
  _refused(path, "bad CRC-32 for member state_dict/data/0")


def test_not_a_zip(tmp_path):
  path = tmp_path / "pytorch_model.bin"
  path.write_bytes(b"not a checkpoint at all")
  _refused(path, "not a zip archive: the legacy torch format \\(before 1.6\\) is not supported")
  # torch.save(..., _use_new_zipfile_serialization=False) starts with its pickled magic number.
  path.write_bytes(torch_archive._LEGACY_MAGIC + b"\x2e" * 100)
  _refused(path, "a legacy torch file: .* re-save it with torch.save or convert to safetensors")


def test_missing_file(tmp_path):
  _refused(tmp_path / "pytorch_model.bin", "no such file")


# Forged archives.


def _storage(key: str, numel: int, storage_class: str = "FloatStorage") -> bytes:
  pid = ops.tuple_(
    ops.text("storage"),
    ops.global_("torch", storage_class),
    ops.text(key),
    ops.text("cpu"),
    ops.integer(numel),
  )
  return pid + pickle.BINPERSID


def _hooks() -> bytes:
  return ops.call(ops.global_("collections", "OrderedDict"))


def _tensor(storage: bytes, offset: int, size, stride, *extra: bytes) -> bytes:
  return ops.call(
    ops.global_("torch._utils", "_rebuild_tensor_v2"),
    storage,
    ops.integer(offset),
    ops.tuple_(*map(ops.integer, size)),
    ops.tuple_(*map(ops.integer, stride)),
    ops.FALSE,
    _hooks(),
    *extra,
  )


def _archive(tmp_path, data_pkl: bytes | None, storages=None, **members) -> str:
  """A torch-style zip: `archive/data.pkl`, `archive/data/<key>` for each storage."""
  path = tmp_path / "pytorch_model.bin"
  with zipfile.ZipFile(path, "w") as z:
    if data_pkl is not None:
      z.writestr("archive/data.pkl", data_pkl)
    z.writestr("archive/byteorder", members.pop("byteorder", "little"))
    for key, data in (storages or {}).items():
      z.writestr(f"archive/data/{key}", data)
    for name, data in members.items():
      z.writestr(f"archive/{name}", data)
  return str(path)


FLOATS = np.arange(6, dtype="<f4").tobytes()


def _forged(tmp_path, entries: dict[str, bytes], storages=None, **members) -> str:
  data_pkl = ops.stream(ops.mapping(entries))
  return _archive(tmp_path, data_pkl, {"0": FLOATS} if storages is None else storages, **members)


def test_forged_archive_reads(tmp_path):
  # The helpers write what torch does: here a (2, 2) view at offset 1, stride (1, 2).
  path = _forged(
    tmp_path,
    {
      "w": _tensor(_storage("0", 6), 1, (2, 2), (1, 2)),
      "p": ops.call(
        ops.global_("torch._utils", "_rebuild_parameter"),
        _tensor(_storage("0", 6), 0, (), ()),
        ops.TRUE,
        _hooks(),
      ),
      "u": _tensor(_storage("1", 3, "ByteStorage"), 0, (3,), (1,)),
    },
    {"0": FLOATS, "1": b"\x01\x02\xff"},
  )
  state = torch_archive.read_state_dict(path)
  np.testing.assert_array_equal(state["w"], [[1, 3], [2, 4]])
  assert state["p"].shape == () and state["p"] == 0
  np.testing.assert_array_equal(state["u"], np.array([1, 2, 255], np.uint8))


@pytest.mark.parametrize(
  "entry, match",
  [
    (_tensor(_storage("0", 6), 3, (2, 2), (2, 1)), "runs past the end of storage 0"),
    (_tensor(_storage("0", 6), 7, (0,), (1,)), "runs past the end of storage 0"),
    (_tensor(_storage("0", 5), 0, (5,), (1,)), "storage 0 holds 24 bytes, not the 20"),
    (_tensor(_storage("0", 6, "ComplexFloatStorage"), 0, (3,), (1,)), "global torch.Complex"),
    (_tensor(_storage("1", 6), 0, (6,), (1,)), "no member archive/data/1"),
    (_tensor(_storage("../0", 6), 0, (6,), (1,)), "refusing storage key '../0'"),
    (_tensor(_storage("0", 6), 0, (2, 3), (3,)), "refusing tensor over storage 0"),
    (_tensor(_storage("0", 6), 0, (6,), (-1,)), "refusing tensor over storage 0"),
    (
      _tensor(_storage("0", 6), 0, (6,), (1,), ops.mapping({"neg": ops.TRUE})),
      "with metadata \\{'neg': True\\}",
    ),
    (
      ops.build(_tensor(_storage("0", 6), 0, (6,), (1,)), ops.tuple_(ops.integer(1))),
      "refusing to set the state of a tensor",
    ),
    (
      ops.tuple_(ops.text("object"), ops.text("0")) + pickle.BINPERSID,
      "refusing persistent id \\('object', '0'\\)",
    ),
    (
      ops.call(ops.global_("torch._utils", "_rebuild_tensor_v3")),
      "refusing global torch._utils._rebuild_tensor_v3",
    ),
    (ops.call(ops.global_("builtins", "eval"), ops.text("1")), "refusing global builtins.eval"),
    (ops.text("not a tensor"), "entry 'w' holds a str, not a tensor"),
    (
      # 2^40 elements viewing one: refused before anything that size is allocated.
      _tensor(_storage("0", 6), 0, (1 << 20, 1 << 20), (0, 0)),
      "refusing tensors of more than",
    ),
  ],
  ids=[
    "past-end",
    "empty-past-end",
    "storage-size",
    "complex",
    "missing-storage",
    "key-path",
    "stride-rank",
    "negative-stride",
    "metadata",
    "build-tensor",
    "persistent-id",
    "rebuild-v3",
    "eval",
    "not-a-tensor",
    "expansion",
  ],
)
def test_forged_entry_is_refused(tmp_path, entry, match):
  _refused(_forged(tmp_path, {"w": entry}), match)


def test_build_on_state_dict_takes_only_metadata(tmp_path):
  def stream(state: bytes) -> bytes:
    state_dict = ops.call(ops.global_("collections", "OrderedDict"))
    w = _tensor(_storage("0", 6), 0, (6,), (1,))
    items = pickle.MARK + ops.text("w") + w + pickle.SETITEMS
    return ops.stream(ops.build(state_dict + items, state))

  metadata = ops.mapping({"_metadata": ops.mapping({"": ops.mapping({"version": ops.integer(1)})})})
  path = _archive(tmp_path, stream(metadata), {"0": FLOATS})
  assert list(torch_archive.read_state_dict(path)) == ["w"]
  path = _archive(tmp_path, stream(ops.mapping({"__class__": ops.text("x")})), {"0": FLOATS})
  _refused(path, "refusing OrderedDict state other than a state dict's _metadata")


def test_not_a_state_dict(tmp_path):
  _refused(_archive(tmp_path, ops.stream(ops.text("hello"))), "holds a str, not a state dict")


def test_missing_data_pkl(tmp_path):
  _refused(_archive(tmp_path, None, version="3\n"), "no <archive>/data.pkl member")


def test_corrupt_data_pkl(tmp_path):
  _refused(_archive(tmp_path, b"\x80\x02}q\x00"), "data.pkl: not a readable pickle")


def test_big_byteorder_and_unknown_byteorder(tmp_path):
  entries = {"w": _tensor(_storage("0", 6), 0, (6,), (1,))}
  big = np.arange(6, dtype=">f4").tobytes()
  state = torch_archive.read_state_dict(_forged(tmp_path, entries, {"0": big}, byteorder="big"))
  np.testing.assert_array_equal(state["w"], np.arange(6, dtype=np.float32))
  _refused(_forged(tmp_path, entries, byteorder="middle"), "unknown byteorder b'middle'")


def test_too_many_members(tmp_path, monkeypatch):
  monkeypatch.setattr(torch_archive, "MAX_MEMBERS", 2)
  path = _forged(tmp_path, {"w": _tensor(_storage("0", 6), 0, (6,), (1,))})
  _refused(path, "refusing a zip of more than 2 members \\(3\\)")


def test_data_pkl_too_large(tmp_path, monkeypatch):
  monkeypatch.setattr(torch_archive, "MAX_PICKLE_BYTES", 16)
  path = _forged(tmp_path, {"w": _tensor(_storage("0", 6), 0, (6,), (1,))})
  _refused(path, "refusing a data.pkl of \\d+ bytes")


def test_deep_data_pkl_is_bounded(tmp_path):
  nested = ops.text("x")
  for _ in range(40):
    nested = ops.tuple_(nested)
  _refused(_archive(tmp_path, ops.stream(nested)), "data.pkl: refusing a pickle whose objects nest")


def test_compressed_member_is_refused(tmp_path):
  path = tmp_path / "pytorch_model.bin"
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr("archive/data.pkl", ops.stream(ops.mapping({})))
  _refused(path, "member archive/data.pkl is compressed")


def test_member_claiming_more_than_the_file(tmp_path):
  path = _forged(tmp_path, {"w": _tensor(_storage("0", 6), 0, (6,), (1,))})
  data = bytearray(open(path, "rb").read())
  with zipfile.ZipFile(path) as z:
    assert z.namelist()[0] == "archive/data.pkl"
  # Set the first central directory entry's uncompressed size (byte 24) to 1 GiB.
  entry = data.index(b"PK\x01\x02")
  data[entry + 24 : entry + 28] = struct.pack("<I", 1 << 30)
  forged = tmp_path / "claims.bin"
  forged.write_bytes(bytes(data))
  _refused(forged, "member archive/data.pkl claims 1073741824 bytes")


def test_copy_keeps_reading(tmp_path):
  # A renamed copy (archive name no longer the file's stem) still reads: the prefix is found.
  path = tmp_path / "renamed.bin"
  shutil.copy(STATE_DICT, path)
  assert list(torch_archive.read_state_dict(path)) == list(DTYPES)
