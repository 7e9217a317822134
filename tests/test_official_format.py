"""Tests for perceiver_jax/official_format.py: loading, saving and checking checkpoints."""

import collections
import os
import pathlib
import pickle
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from haiku._src import data_structures as hk_data_structures

from perceiver_jax import official_format as of
from perceiver_jax.official_format import CheckpointFormatError
from perceiver_jax.official_format import CheckpointMismatchError

LINEAR = "perceiver_encoder/~/cross_attention/attention/linear"
NORM = "perceiver_encoder/~/cross_attention/layer_norm"


def _params():
  return {
    LINEAR: {
      "w": np.arange(6, dtype=np.float32).reshape(2, 3),
      "b": np.array([0.5, -1.0, 2.0], np.float32),
    },
    NORM: {"scale": np.ones(2, np.float32), "offset": np.zeros(2, np.float32)},
  }


def _assert_plain_equal(actual, expected):
  assert type(actual) is dict
  assert actual.keys() == expected.keys()
  for module, leaves in expected.items():
    assert type(actual[module]) is dict
    assert actual[module].keys() == leaves.keys()
    for name, leaf in leaves.items():
      assert type(actual[module][name]) is np.ndarray
      assert actual[module][name].dtype == np.asarray(leaf).dtype
      np.testing.assert_array_equal(actual[module][name], np.asarray(leaf))


def _write(tmp_path, data: bytes, name="ckpt.pkl"):
  path = tmp_path / name
  path.write_bytes(data)
  return str(path)


def _fake_global(monkeypatch, module_name, name, obj):
  """Makes `obj` picklable as `module_name.name`, the path an older library used."""
  module = types.ModuleType(module_name)
  obj.__module__, obj.__qualname__, obj.__name__ = module_name, name, name
  setattr(module, name, obj)
  monkeypatch.setitem(sys.modules, module_name, module)


# --- save / load round trip ----------------------------------------------------------------


def test_round_trip_with_state(tmp_path):
  state = {"batchnorm/~/mean_ema": {"counter": np.array(3, np.int32)}}
  path = str(tmp_path / "nested" / "dir" / "ckpt.pystate")  # Parents do not exist yet.
  of.save_official_pickle(path, _params(), state)
  params, loaded_state = of.load_official_pickle(path)
  _assert_plain_equal(params, _params())
  _assert_plain_equal(loaded_state, state)


def test_save_converts_jax_arrays_and_plain_pickle_reads_it(tmp_path):
  path = str(tmp_path / "ckpt.pystate")
  of.save_official_pickle(path, {LINEAR: {"w": jnp.full((2, 2), 1.5)}})
  with open(path, "rb") as f:  # The official colabs read checkpoints with plain pickle.
    raw = pickle.load(f)
  assert raw["state"] == {}
  assert type(raw["params"][LINEAR]["w"]) is np.ndarray
  np.testing.assert_array_equal(raw["params"][LINEAR]["w"], np.full((2, 2), 1.5, np.float32))


def test_bare_params_pickle_gives_empty_state(tmp_path):
  path = _write(tmp_path, pickle.dumps(_params()))
  params, state = of.load_official_pickle(path)
  _assert_plain_equal(params, _params())
  assert state == {}


def test_module_named_params_is_not_mistaken_for_wrapper(tmp_path):
  bare = {"params": {"w": np.ones(2, np.float32)}}
  params, state = of.load_official_pickle(_write(tmp_path, pickle.dumps(bare)))
  _assert_plain_equal(params, bare)
  assert state == {}


# --- legacy streams -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
def test_haiku_flatmap_pickles_load_as_dicts(tmp_path, protocol):
  # Today's FlatMap.__reduce__ writes `haiku._src.data_structures.FlatMapping(dict)`, the same
  # callable and argument the 2021 FlatMapping wrote; here nested at both levels.
  inner = {m: hk_data_structures.FlatMap(v) for m, v in _params().items()}
  content = {
    "params": hk_data_structures.FlatMap(inner),
    "state": hk_data_structures.FlatMap({}),
  }
  data = pickle.dumps(content, protocol=protocol)
  assert b"FlatMapping" in data
  params, state = of.load_official_pickle(_write(tmp_path, data))
  _assert_plain_equal(params, _params())
  assert state == {}


def test_haiku_frozendict_loads_as_dict(tmp_path):
  frozen = {m: hk_data_structures.frozendict(v) for m, v in _params().items()}
  data = pickle.dumps(hk_data_structures.frozendict(frozen), protocol=2)
  assert b"frozendict" in data
  params, _ = of.load_official_pickle(_write(tmp_path, data))
  _assert_plain_equal(params, _params())


def test_2021_device_array_stream_names_only_numpy(tmp_path):
  # jax < 0.3.14 DeviceArray.__reduce__ forwarded to the host ndarray's __reduce__, and
  # numpy 1.x wrote its reconstructor as numpy.core.multiarray._reconstruct.
  class DeviceArray:
    def __init__(self, value):
      self._value = value

    def __reduce__(self):
      return self._value.__reduce__()

  content = {m: {k: DeviceArray(v) for k, v in leaves.items()} for m, leaves in _params().items()}
  data = pickle.dumps(content, protocol=2).replace(b"numpy._core.", b"numpy.core.")
  assert b"numpy.core.multiarray\n_reconstruct" in data and b"DeviceArray" not in data
  params, _ = of.load_official_pickle(_write(tmp_path, data))
  _assert_plain_equal(params, _params())


def test_2022_reconstruct_device_array_loads_as_numpy(tmp_path, monkeypatch):
  def reconstruct_device_array(fun, args, arr_state, aval_state):
    raise AssertionError("only named in the stream, never called")

  class DeviceArray:
    def __init__(self, value):
      self._value = value

    def __reduce__(self):
      fun, args, arr_state = self._value.__reduce__()
      aval_state = {"weak_type": False, "named_shape": {}}
      return reconstruct_device_array, (fun, args, arr_state, aval_state)

  _fake_global(
    monkeypatch, "jax._src.device_array", "reconstruct_device_array", reconstruct_device_array
  )
  content = {m: {k: DeviceArray(v) for k, v in leaves.items()} for m, leaves in _params().items()}
  data = pickle.dumps(content, protocol=2)
  assert b"jax._src.device_array\nreconstruct_device_array" in data
  params, _ = of.load_official_pickle(_write(tmp_path, data))
  _assert_plain_equal(params, _params())


def test_current_jax_array_pickle_loads_as_numpy(tmp_path):
  content = {"params": {LINEAR: {"w": jnp.arange(4.0).reshape(2, 2)}}, "state": {}}
  data = pickle.dumps(content)
  assert b"_reconstruct_array" in data
  params, _ = of.load_official_pickle(_write(tmp_path, data))
  _assert_plain_equal(params, {LINEAR: {"w": np.arange(4.0, dtype=np.float32).reshape(2, 2)}})


def test_empty_array_and_ordered_dict_in_protocol_2(tmp_path):
  content = collections.OrderedDict({LINEAR: {"w": np.zeros((0, 3), np.float32)}})
  data = pickle.dumps(content, protocol=2)
  params, _ = of.load_official_pickle(_write(tmp_path, data))
  _assert_plain_equal(params, {LINEAR: {"w": np.zeros((0, 3), np.float32)}})


# --- unsafe and broken files ----------------------------------------------------------------


def test_refuses_os_system(tmp_path):
  data = b"cos\nsystem\n(S'echo pwned'\ntR."  # Protocol 0: os.system('echo pwned').
  path = _write(tmp_path, data)
  with pytest.raises(CheckpointFormatError, match="os.system") as e:
    of.load_official_pickle(path)
  assert path in str(e.value)


def test_jax_reconstructor_only_accepts_numpy_reconstruct(tmp_path):
  # _reconstruct_array(OrderedDict, ...) would otherwise call an allowed-but-wrong callable.
  data = b"cjax._src.array\n_reconstruct_array\n(ccollections\nOrderedDict\n)NNtR."
  with pytest.raises(CheckpointFormatError, match="reconstructor"):
    of.load_official_pickle(_write(tmp_path, data))


def test_missing_file(tmp_path):
  path = str(tmp_path / "absent.pystate")
  with pytest.raises(CheckpointFormatError, match="no such file") as e:
    of.load_official_pickle(path)
  assert path in str(e.value)


@pytest.mark.parametrize("cut", [0, 10, -1])
def test_empty_or_truncated_file(tmp_path, cut):
  data = pickle.dumps({"params": _params(), "state": {}})
  path = _write(tmp_path, data[:cut])
  with pytest.raises(CheckpointFormatError, match="not a readable pickle") as e:
    of.load_official_pickle(path)
  assert path in str(e.value)


@pytest.mark.parametrize(
  "content, problem",
  [
    ([1, 2, 3], "holds a list, not a mapping"),
    ({LINEAR: np.ones(3)}, "not a mapping of arrays"),
    ({LINEAR: {"w": "weights"}}, "is a str, not an array"),
    ({LINEAR: {"w": np.array([None], dtype=object)}}, "refusing dtype .O8."),
    ({"params": {LINEAR: {"w": 1.0}}, "state": {}}, "is a float, not an array"),
  ],
)
def test_wrong_content(tmp_path, content, problem):
  path = _write(tmp_path, pickle.dumps(content, protocol=4))
  with pytest.raises(CheckpointFormatError, match=problem) as e:
    of.load_official_pickle(path)
  assert str(e.value).startswith(path)


# --- atomic save ----------------------------------------------------------------------------


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
  path = str(tmp_path / "ckpt.pystate")
  of.save_official_pickle(path, _params())
  before = pathlib.Path(path).read_bytes()

  def crash_midway(obj, f, protocol=None):
    f.write(b"\x80\x04partial")
    raise OSError("disk full")

  monkeypatch.setattr(pickle, "dump", crash_midway)
  with pytest.raises(OSError, match="disk full"):
    of.save_official_pickle(path, {LINEAR: {"w": np.zeros(1)}})
  assert pathlib.Path(path).read_bytes() == before
  assert os.listdir(tmp_path) == ["ckpt.pystate"]


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt  # Not an Exception: cleanup must still run.

  monkeypatch.setattr(pickle, "dump", interrupted)
  with pytest.raises(KeyboardInterrupt):
    of.save_official_pickle(str(tmp_path / "ckpt.pystate"), _params())
  assert os.listdir(tmp_path) == []


# --- comparing with the model ---------------------------------------------------------------


def _template():
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _params())


def test_check_tree_accepts_match():
  of.check_tree(_template(), _params())


def test_check_tree_reports_each_problem():
  actual = _params()
  del actual[NORM]["offset"]  # Missing.
  actual[LINEAR]["w"] = np.zeros((3, 2), np.float32)  # Wrong shape.
  actual["decoder/~/output"] = {"w": np.zeros(1)}  # Unexpected.
  with pytest.raises(CheckpointMismatchError) as e:
    of.check_tree(_template(), actual, what="state")
  message = str(e.value)
  first_line, *rest = message.splitlines()
  assert first_line.startswith("state do not match")
  assert "1 missing, 1 unexpected, 1 wrong shape" in first_line
  assert f"  {NORM}/offset" in rest
  assert "  decoder/~/output/w" in rest
  assert f"  {LINEAR}/w: expected (2, 3), got (3, 2)" in rest
  assert any(line.startswith("MISSING") for line in rest)
  assert any(line.startswith("UNEXPECTED") for line in rest)
  assert any(line.startswith("WRONG SHAPE") for line in rest)


def test_flatten_tree_keys():
  assert sorted(of.flatten_tree(_params())) == sorted(
    [f"{LINEAR}/w", f"{LINEAR}/b", f"{NORM}/scale", f"{NORM}/offset"]
  )


def test_match_to_template_casts_dtype():
  template = {LINEAR: {"w": jax.ShapeDtypeStruct((2,), jnp.bfloat16)}}
  out = of.match_to_template(template, {LINEAR: {"w": np.array([1.0, 2.5], np.float64)}})
  assert type(out[LINEAR]) is dict and type(out[LINEAR]["w"]) is np.ndarray
  assert out[LINEAR]["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(out[LINEAR]["w"].astype(np.float32), [1.0, 2.5])
  with pytest.raises(CheckpointMismatchError, match="expected \\(2,\\), got \\(3,\\)"):
    of.match_to_template(template, {LINEAR: {"w": np.zeros(3)}})
