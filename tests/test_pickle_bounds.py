"""Tests for perceiver_jax/pickle_bounds.py: a pickle cannot demand unbounded memory, time or
recursion; each refusal is one line naming the file and the bound, before anything is built."""

import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pickle_ops as ops
import pytest

from perceiver_jax import official_format as of
from perceiver_jax import pickle_bounds
from perceiver_jax.official_format import CheckpointFormatError
from perceiver_jax.pickle_bounds import PickleBoundError

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _refused(tmp_path, data: bytes, match: str) -> None:
  path = tmp_path / "ckpt.pkl"
  path.write_bytes(data)
  with pytest.raises(CheckpointFormatError, match=match) as e:
    of.load_official_pickle(str(path))
  assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def _check(tmp_path, data: bytes) -> None:
  """`check_pickle` on a real file, as the loader calls it."""
  path = tmp_path / "stream.pkl"
  path.write_bytes(data)
  with open(path, "rb") as f:
    pickle_bounds.check_pickle(f)


def test_shared_dict_that_expands_is_refused(tmp_path):
  # One 2,100-entry dict shared by 2,100 modules, all entries one array: 4.4 million entries
  # from a 40 KB file (c289d05 copied them all; the 20,000 x 20,000 took 13 GB).
  leaves = {f"w{i}": np.zeros(1, np.float32) for i in range(2100)}
  shared = dict.fromkeys(leaves, np.zeros(1, np.float32))
  data = pickle.dumps({f"module_{i}": shared for i in range(2100)}, protocol=4)
  assert len(data) < 100_000
  _refused(tmp_path, data, "an object expands to more than 4000000 objects")


def test_dict_filled_after_it_is_shared_counts_in_full(tmp_path):
  # The dict is referenced 3,000 times while empty and only then filled with 3,000 entries.
  inner = pickle.EMPTY_DICT + pickle.MEMOIZE + pickle.POP
  uses = b"".join(ops.text(f"m{i}") + pickle.BINGET + b"\0" for i in range(3000))
  outer = pickle.EMPTY_DICT + pickle.MARK + uses + pickle.SETITEMS
  fill = b"".join(ops.text(f"w{i}") + ops.integer(i) for i in range(3000))
  late = pickle.BINGET + b"\0" + pickle.MARK + fill + pickle.SETITEMS + pickle.POP
  data = pickle.PROTO + b"\4" + inner + outer + late + pickle.STOP
  with pytest.raises(PickleBoundError, match="more than 4000000 objects"):
    _check(tmp_path, data)


def test_deeply_nested_key_is_refused_before_loading(tmp_path):
  # A dict key of 10^6 nested tuples: pickle.load overflowed the C stack hashing it (c289d05:
  # exit 139), so the load runs in a child process.
  data = ops.stream(pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 10**6)
  path = tmp_path / "nested.pkl"
  path.write_bytes(data[:-1] + ops.integer(1) + pickle.SETITEM + pickle.STOP)
  code = (
    "import sys\nfrom perceiver_jax import official_format as of\n"
    f"try:\n  of.load_official_pickle({str(path)!r})\n"
    "except of.CheckpointFormatError as e:\n  sys.exit(f'error: {e}')\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 1, result.stderr
  assert (
    result.stderr
    == f"error: {path}: refusing a pickle whose objects nest more than 32 levels deep\n"
  )


def test_shared_array_adding_up_to_more_than_the_file_is_refused(tmp_path):
  # 100 entries share one 64 KiB array: 6.4 MB of arrays from a 70 KB file, which every
  # consumer (the dtype cast, device_put) would then copy 100 times.
  shared = np.zeros(16384, np.float32)
  data = pickle.dumps({"m": {f"w{i}": shared for i in range(100)}}, protocol=4)
  _refused(tmp_path, data, f"refusing arrays of 6553600 bytes in all from a file of {len(data)}")


def test_object_containing_itself_is_refused(tmp_path):
  loop = []
  loop.append(loop)
  _refused(tmp_path, pickle.dumps({"m": {"w": loop}}), "an object contains itself")


def test_length_past_the_end_fails_without_allocating(tmp_path):
  claims_1_tib = pickle.BINBYTES8 + (2**40).to_bytes(8, "little") + b"\0" * 16
  _refused(tmp_path, ops.stream(claims_1_tib), r"not a readable pickle \(empty or truncated file\)")


@pytest.mark.parametrize(
  "data, match",
  [
    (ops.stream(pickle.BINGET + b"\7"), "BINGET of unknown key 7 at byte 2"),
    (ops.stream(pickle.POP), "stack underflow at POP"),
    (ops.stream(pickle.MARK + pickle.SETITEMS), "stack underflow at SETITEMS"),
    (ops.stream(pickle.TUPLE), "TUPLE without a MARK"),
  ],
  ids=["unknown-memo-key", "pop-empty", "setitems-without-dict", "tuple-without-mark"],
)
def test_malformed_streams_are_named(tmp_path, data, match):
  with pytest.raises(PickleBoundError, match=f"malformed pickle: {match}"):
    _check(tmp_path, data)


def test_file_and_opcode_bounds(tmp_path, monkeypatch):
  data = pickle.dumps({"m": {"w": np.zeros(3, np.float32)}}, protocol=4)
  monkeypatch.setattr(pickle_bounds, "MAX_OPCODES", 10)
  with pytest.raises(PickleBoundError, match="more than 10 opcodes"):
    _check(tmp_path, data)
  monkeypatch.setattr(pickle_bounds, "MAX_OPCODES", 1000)
  monkeypatch.setattr(pickle_bounds, "MAX_FILE_BYTES", len(data) - 1)
  with pytest.raises(PickleBoundError, match=f"refusing a file of {len(data)} bytes"):
    _check(tmp_path, data)


def test_checkpoint_passes_and_file_position_is_kept(tmp_path):
  data = pickle.dumps({"params": {"m": {"w": np.ones((2, 3), np.float32)}}, "state": {}})
  path = tmp_path / "ckpt.pkl"
  path.write_bytes(b"junk" + data)
  with open(path, "rb") as f:
    f.seek(4)
    pickle_bounds.check_pickle(f)
    assert f.tell() == 4
    assert pickle.load(f)["params"]["m"]["w"].shape == (2, 3)
