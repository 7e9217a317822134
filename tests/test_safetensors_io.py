"""Tests for perceiver_jax/safetensors_io.py: safetensors params/state files."""

import json
import pickle
import struct
import zipfile

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from perceiver_jax import official_format
from perceiver_jax import safetensors_io as st
from perceiver_jax.official_format import CheckpointFormatError

LINEAR = "perceiver_encoder/~/cross_attention/attention/linear"
NORM = "perceiver_encoder/~/cross_attention/layer_norm"
BN = "image_preprocessor/~/conv_net/batchnorm/~/mean_ema"


def _params():
  return {
    LINEAR: {
      "w": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
      "b": np.array([0.5, -1.0, 2.0], np.float32),
    },
    NORM: {"scale": np.ones(2, np.float32), "offset": jnp.zeros(2, jnp.float32)},
  }


def _state():
  return {
    BN: {
      "counter": np.array(7, np.int32),
      "hidden": np.full((1, 1, 1, 4), 0.25, np.float32),
      "average": np.float32(1.5),  # A scalar () leaf.
    }
  }


def _assert_trees_equal(actual, expected):
  assert type(actual) is dict
  assert actual.keys() == expected.keys()
  for module, leaves in expected.items():
    assert actual[module].keys() == leaves.keys()
    for name, leaf in leaves.items():
      got, want = actual[module][name], np.asarray(leaf)
      assert isinstance(got, np.ndarray), (module, name)
      assert got.dtype == want.dtype, (module, name)
      assert got.shape == want.shape, (module, name)
      assert np.array_equal(got, want), (module, name)


def _write_header(path, header, data=b""):
  raw = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _refused(path, fn=st.read_tensors):
  with pytest.raises(CheckpointFormatError) as info:
    fn(path)
  message = str(info.value)
  assert "\n" not in message
  assert str(path) in message
  return message


def test_round_trip_float32_is_bit_exact(tmp_path):
  path = tmp_path / "ckpt.safetensors"
  st.save(path, _params(), _state())
  params, state, metadata = st.load(path)
  _assert_trees_equal(params, _params())
  _assert_trees_equal(state, _state())
  assert state[BN]["counter"].dtype == np.int32
  assert state[BN]["average"].shape == ()
  assert metadata["format"] == "perceiver_jax"
  assert metadata["perceiver_jax.version"] == "1"
  assert json.loads(metadata["perceiver_jax.state_keys"]) == sorted(
    f"{BN}/{name}" for name in _state()[BN]
  )
  assert st.is_safetensors(path)
  assert not list(tmp_path.glob(".*.tmp"))  # atomic_write left no temporary behind.


def test_bfloat16_casts_floats_and_keeps_integers(tmp_path):
  path = tmp_path / "bf16.safetensors"
  st.save(path, _params(), _state(), dtype="bfloat16")
  params, state, _ = st.load(path)
  want_params = {
    m: {n: np.asarray(x).astype(ml_dtypes.bfloat16) for n, x in leaves.items()}
    for m, leaves in _params().items()
  }
  _assert_trees_equal(params, want_params)
  assert state[BN]["counter"].dtype == np.int32
  assert state[BN]["counter"] == 7
  assert state[BN]["hidden"].dtype == ml_dtypes.bfloat16
  tensors, _ = st.read_tensors(path)
  assert tensors[f"{LINEAR}/w"].dtype == ml_dtypes.bfloat16
  assert tensors[f"{LINEAR}/w"].flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("bare", [False, True])
def test_official_pickle_to_safetensors_and_back_is_bit_exact(tmp_path, bare):
  state = {} if bare else _state()
  official_format.save_official_pickle(tmp_path / "p1.pkl", _params(), state, bare=bare)
  params1, state1 = official_format.load_official_pickle(tmp_path / "p1.pkl")
  st.save(tmp_path / "c.safetensors", params1, state1)
  params2, state2, _ = st.load(tmp_path / "c.safetensors")
  official_format.save_official_pickle(tmp_path / "p2.pkl", params2, state2, bare=bare)
  params3, state3 = official_format.load_official_pickle(tmp_path / "p2.pkl")
  _assert_trees_equal(params2, params1)
  _assert_trees_equal(state2, state1)
  _assert_trees_equal(params3, params1)
  _assert_trees_equal(state3, state1)
  _assert_trees_equal(params3, _params())


def test_metadata_round_trip_and_resave(tmp_path):
  path = tmp_path / "m.safetensors"
  st.save(path, _params(), metadata={"config": "imagenet_learned_pos", "step": "1200"})
  params, state, metadata = st.load(path)
  assert state == {}
  assert metadata["config"] == "imagenet_learned_pos"
  assert metadata["step"] == "1200"
  # The metadata `load` returns can be given back; the reserved keys are rewritten.
  st.save(path, params, _state(), metadata=metadata)
  _, state, metadata2 = st.load(path)
  _assert_trees_equal(state, _state())
  assert metadata2["step"] == "1200"
  assert len(json.loads(metadata2["perceiver_jax.state_keys"])) == 3


def test_save_refuses_bad_arguments(tmp_path):
  path = tmp_path / "x.safetensors"
  with pytest.raises(ValueError, match="float16"):
    st.save(path, _params(), dtype="float16")
  with pytest.raises(ValueError, match="metadata"):
    st.save(path, _params(), metadata={"step": 3})
  with pytest.raises(ValueError, match="both params and state"):
    st.save(path, _params(), {LINEAR: {"w": np.zeros(1, np.float32)}})
  with pytest.raises(ValueError, match="uint32"):
    st.save(path, {LINEAR: {"w": np.zeros(1, np.uint32)}})
  assert not path.exists()


def test_read_tensors_reads_foreign_names(tmp_path):
  path = tmp_path / "model.safetensors"
  tensors = {
    "perceiver.encoder.self_attends.0.attention.self.query.weight": np.ones((2, 2), np.float32),
    "perceiver.embeddings.latents": np.zeros(3, np.float16),
  }
  (tmp_path / "model.safetensors").write_bytes(safetensors.numpy.save(tensors))
  got, metadata = st.read_tensors(path)
  assert metadata == {}
  assert got.keys() == tensors.keys()
  for key, value in tensors.items():
    assert got[key].dtype == value.dtype and np.array_equal(got[key], value)
  message = _refused(path, st.load)
  assert "not a perceiver_jax safetensors file" in message
  assert "HF importer" in message


def test_missing_file(tmp_path):
  assert "no such file" in _refused(tmp_path / "absent.safetensors")
  assert not st.is_safetensors(tmp_path / "absent.safetensors")
  assert not st.is_safetensors(tmp_path)


def test_header_cut_to_five_bytes(tmp_path):
  good = tmp_path / "good.safetensors"
  st.save(good, _params())
  path = tmp_path / "short.safetensors"
  path.write_bytes(good.read_bytes()[:5])
  assert "too short" in _refused(path)
  assert not st.is_safetensors(path)


def test_header_length_past_end(tmp_path):
  path = tmp_path / "long.safetensors"
  path.write_bytes(struct.pack("<Q", 1000) + b'{"a": 1}')
  assert "runs past the end" in _refused(path)
  assert not st.is_safetensors(path)
  path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
  assert "limit" in _refused(path)


def test_header_not_json(tmp_path):
  path = tmp_path / "notjson.safetensors"
  path.write_bytes(struct.pack("<Q", 6) + b"{nope}")
  assert "not JSON" in _refused(path)
  path.write_bytes(struct.pack("<Q", 2) + b"\xff\xfe")
  assert "not UTF-8" in _refused(path)
  _write_header(path, [1, 2])
  assert "not an object" in _refused(path)


def test_unknown_dtype(tmp_path):
  path = tmp_path / "c64.safetensors"
  st.save(path, _params())
  data = bytearray(path.read_bytes())
  (n,) = struct.unpack("<Q", data[:8])
  header = json.loads(data[8 : 8 + n])
  header[f"{LINEAR}/b"]["dtype"] = "C64"  # 12 bytes: six complex64s would need 48.
  raw = json.dumps(header, separators=(",", ":")).encode()
  assert len(raw) <= n
  data[8 : 8 + n] = raw.ljust(n, b" ")  # Headers may be padded with trailing spaces.
  path.write_bytes(bytes(data))
  message = _refused(path)
  assert "C64" in message and f"{LINEAR}/b" in message


def test_bad_entries(tmp_path):
  path = tmp_path / "bad.safetensors"
  _write_header(path, {"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8)
  assert "not {dtype, shape, data_offsets}" in _refused(path)
  _write_header(path, {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8)
  assert "do not hold 12 bytes" in _refused(path)
  _write_header(
    path,
    {
      "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
    },
    b"\0" * 8,
  )
  assert "overlap" in _refused(path)
  _write_header(path, {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 5)
  assert "after the last tensor" in _refused(path)
  _write_header(path, {"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\1\2")
  assert "BOOL" in _refused(path)


def test_data_truncated(tmp_path):
  path = tmp_path / "cut.safetensors"
  st.save(path, _params())
  path.write_bytes(path.read_bytes()[:-3])
  assert "run past" in _refused(path)
  assert "run past" in _refused(path, st.load)


def test_pickle_and_zip_refused(tmp_path):
  path = tmp_path / "params.pkl"
  path.write_bytes(pickle.dumps({"a": {"w": np.zeros(2)}}))
  assert "is a pickle (or zip/torch archive), not safetensors" in _refused(path)
  assert not st.is_safetensors(path)
  path = tmp_path / "pytorch_model.bin"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", b"x")
  assert "is a pickle (or zip/torch archive), not safetensors" in _refused(path, st.load)
  assert not st.is_safetensors(path)


def test_load_refuses_bad_perceiver_metadata(tmp_path):
  path = tmp_path / "meta.safetensors"
  w = {f"{LINEAR}/w": np.zeros(2, np.float32)}
  meta = {"format": "perceiver_jax", "perceiver_jax.version": "1"}
  path.write_bytes(safetensors.numpy.save({"noslash": np.zeros(1, np.float32)}, metadata=meta))
  assert "no '/'" in _refused(path, st.load)
  bad_keys = {**meta, "perceiver_jax.state_keys": json.dumps(["missing/x"])}
  path.write_bytes(safetensors.numpy.save(w, metadata=bad_keys))
  assert "missing" in _refused(path, st.load)
  bad_keys = {**meta, "perceiver_jax.state_keys": '{"a": 1}'}
  path.write_bytes(safetensors.numpy.save(w, metadata=bad_keys))
  assert "not a JSON list of strings" in _refused(path, st.load)


def test_save_handles_transposed_big_endian_and_float64_leaves(tmp_path):
  path = tmp_path / "nc.safetensors"
  w = np.arange(6, dtype=np.float64).reshape(2, 3).T  # Not C-contiguous.
  st.save(path, {LINEAR: {"w": w, "ids": np.arange(4, dtype=">i4")}})
  params, _, _ = st.load(path)
  assert params[LINEAR]["w"].dtype == np.float32
  assert np.array_equal(params[LINEAR]["w"], w.astype(np.float32))
  assert params[LINEAR]["ids"].dtype == np.int32
  assert np.array_equal(params[LINEAR]["ids"], np.arange(4))
