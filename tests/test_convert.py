"""`perceiver_jax.convert` and the weight formats every tool reads (`weight_formats`).

Round trips are bit-exact; the tools take a transformers folder and this package's
safetensors as they take the official pickles, and use the model config stored with them.
"""

import os

import numpy as np
import pytest
from PIL import Image
from test_cli import assert_one_line_error
from test_cli import run_cli
from test_reference_parity import init_perturbed

from perceiver_jax import convert
from perceiver_jax import official_format
from perceiver_jax import registry
from perceiver_jax import weight_formats

HF = os.path.join(os.path.dirname(__file__), "fixtures", "hf")


def _assert_same_trees(a, b):
  flat_a, flat_b = official_format.flatten_tree(a), official_format.flatten_tree(b)
  assert flat_a.keys() == flat_b.keys()
  for key, value in flat_a.items():
    assert np.asarray(value).dtype == np.asarray(flat_b[key]).dtype, key
    np.testing.assert_array_equal(value, flat_b[key], err_msg=key)


@pytest.fixture(scope="module")
def conv_model():
  """A perturbed `io_conv`-layout model at 32 x 32 (params and BatchNorm state)."""
  cfg = registry.get_model_config("testing")
  cfg.input.update(prep_type="conv", spatial_downsample=4, num_channels=8)
  cfg.input.fourier.max_resolution = (8, 8)
  params, state = init_perturbed(cfg)
  return cfg, params, state


@pytest.mark.parametrize("layout", ["official", "official_bare"])
def test_official_to_safetensors_to_official_is_bit_exact(conv_model, tmp_path, layout):
  cfg, params, state = conv_model
  if layout == "official_bare":
    state = {}
  first = str(tmp_path / "a.pickle")
  weight_formats.write(first, weight_formats.Weights(params, state), layout)
  middle, last = str(tmp_path / "b.safetensors"), str(tmp_path / "c.pickle")
  convert.convert(first, middle, "safetensors", fmt=layout, model_name=None, dtype="float32")
  convert.convert(middle, last, layout, fmt=None, model_name=None, dtype="float32")
  want_params, want_state = official_format.load_official_pickle(first)
  got_params, got_state = official_format.load_official_pickle(last)
  _assert_same_trees(want_params, got_params)
  _assert_same_trees(want_state, got_state)


def test_bfloat16_safetensors_hold_the_rounded_weights(conv_model, tmp_path):
  _, params, state = conv_model
  path = str(tmp_path / "w.safetensors")
  weight_formats.write(path, weight_formats.Weights(params, state), "safetensors", dtype="bfloat16")
  loaded = weight_formats.read(path)
  w = params["perceiver_encoder/~/trainable_position_encoding"]["pos_embs"]
  got = loaded.params["perceiver_encoder/~/trainable_position_encoding"]["pos_embs"]
  assert got.dtype.name == "bfloat16"
  np.testing.assert_array_equal(got, np.asarray(w).astype(got.dtype))
  counter = "image_preprocessor/~/conv2_d_downsample/~/batchnorm/~/mean_ema"
  assert loaded.state[counter]["counter"].dtype == np.int32  # integers keep their dtype
  assert os.path.getsize(path) < 0.6 * sum(
    np.asarray(leaf).nbytes for leaves in params.values() for leaf in leaves.values()
  )


def test_a_model_named_for_the_wrong_weights_is_refused_before_writing(conv_model, tmp_path):
  _, params, state = conv_model
  src, dst = str(tmp_path / "a.pystate"), str(tmp_path / "b.safetensors")
  official_format.save_official_pickle(src, params, state)
  with pytest.raises(official_format.CheckpointMismatchError, match="do not match the model"):
    convert.convert(src, dst, "safetensors", fmt=None, model_name="io_fourier", dtype="float32")
  assert not os.path.exists(dst)


def test_hf_is_read_only_and_state_does_not_fit_a_bare_pickle(conv_model, tmp_path):
  _, params, state = conv_model
  with pytest.raises(ValueError, match="hf and orbax are read only"):
    weight_formats.write(str(tmp_path / "x"), weight_formats.Weights(params, state), "hf")
  with pytest.raises(ValueError, match="a bare params pickle cannot hold it"):
    weight_formats.write(
      str(tmp_path / "x.pickle"), weight_formats.Weights(params, state), "official_bare"
    )
  assert not os.listdir(tmp_path)


def test_cli_converts_hf_and_predict_takes_both_giving_transformers_logits(tmp_path):
  folder = os.path.join(HF, "image_fourier")
  image = np.load(os.path.join(folder, "input.npy"))[0].transpose(1, 2, 0)  # HWC, 16 x 16
  np.save(tmp_path / "image.npy", image)
  want = np.load(os.path.join(folder, "output.npy"))[0]
  converted = tmp_path / "fourier.safetensors"
  result = run_cli("perceiver_jax.convert", "--to=safetensors", folder, str(converted))
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f"wrote {converted} (safetensors): ")
  for checkpoint in (folder, converted):
    logits = tmp_path / "logits.npy"
    result = run_cli(
      "perceiver_jax.predict",
      "--config=configs/imagenet.py:variant=testing",  # a 32 x 32 model: the file's wins
      f"--checkpoint={checkpoint}",
      f"--input={tmp_path / 'image.npy'}",
      f"--output={logits}",
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(logits), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_fill_mask_takes_a_transformers_folder():
  result = run_cli(
    "perceiver_jax.fill_mask",
    "--config=configs/mlm.py:runlocal",
    f"--checkpoint={os.path.join(HF, 'masked_lm')}",
    "--text=a tiny test",
    "--mask=tiny",
  )
  assert result.returncode == 0, result.stderr
  assert len(result.stdout.splitlines()[0].encode()) == len(b"a tiny test")


def test_flow_takes_a_transformers_folder(tmp_path):
  rng = np.random.default_rng(0)
  for name in ("a", "b"):
    Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(
      tmp_path / f"{name}.png"
    )
  out = tmp_path / "flow.flo"
  result = run_cli(
    "perceiver_jax.flow",
    "--config=configs/flow.py",
    f"--checkpoint={os.path.join(HF, 'optical_flow')}",
    f"--frame1={tmp_path / 'a.png'}",
    f"--frame2={tmp_path / 'b.png'}",
    f"--output={out}",
    "--overlap=2",
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("10 x 14: 4 tiles of 8 x 12 on cpu"), result.stdout


def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
  broken = tmp_path / "broken.safetensors"
  broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
  out = tmp_path / "out.pystate"
  result = run_cli("perceiver_jax.convert", "--to=official", str(broken), str(out))
  assert_one_line_error(result, broken)
  assert not out.exists()
  result = run_cli("perceiver_jax.convert", "--to=hf", str(broken), str(out))
  assert result.returncode != 0 and "--to" in result.stderr


def test_fine_tuning_loads_a_transformers_folder_with_a_new_head():
  """`config.pretrained.path` takes a transformers folder: all but the re-initialised head
  comes from it."""
  import jax
  import optax

  from perceiver_jax import hf_format
  from perceiver_jax import model
  from perceiver_jax import pretrained
  from perceiver_jax import train_step

  folder = os.path.join(HF, "image_learned")
  cfg, hf_params, _ = hf_format.read_hf_folder(folder)
  cfg.num_classes = 3
  forward = model.build_model(cfg)
  template = train_step.init_train_state(
    forward, optax.adam(1e-3), jax.random.PRNGKey(0), model.dummy_inputs(cfg)
  )
  params, _ = pretrained.load_pretrained(folder, template.params, template.state, exclude_head=True)
  head = "classification_decoder/~/basic_decoder/output"
  np.testing.assert_array_equal(params[head]["w"], template.params[head]["w"])
  for module in hf_params:
    if module != head:
      for name, leaf in hf_params[module].items():
        np.testing.assert_array_equal(params[module][name], leaf, err_msg=module)
