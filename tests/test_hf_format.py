"""transformers' Perceiver folders import and reproduce transformers' own outputs.

The fixtures under `tests/fixtures/hf/` were made by `tests/fixtures/hf/make_hf_fixtures.py`
with transformers and torch (in an environment of their own): one tiny model per class, every
weight and statistic moved off its initial value, its inputs and transformers' outputs saved
as `.npy`. Here neither transformers nor torch is imported.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from perceiver_jax import hf_format
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import safetensors_io
from perceiver_jax import weight_formats
from perceiver_jax.official_format import CheckpointFormatError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
NAMES = (
  "image_learned",
  "image_fourier",
  "image_conv",
  "masked_lm",
  "optical_flow",
  "multimodal_autoencoding",
)


def _load(name: str, key: str) -> np.ndarray:
  return np.load(os.path.join(FIXTURES, name, f"{key}.npy"))


def _run(name: str, cfg, params, state) -> list[tuple[np.ndarray, np.ndarray]]:
  """(ours, transformers') output pairs of fixture `name`, ours in transformers' layout."""
  transformed = model.build_model(cfg)
  forward = transformed._replace(apply=jax.jit(transformed.apply, static_argnames="is_training"))
  ld = lambda key: _load(name, key)  # noqa: E731
  if name.startswith("image"):
    out = forward.apply(params, state, None, ld("input").transpose(0, 2, 3, 1), is_training=False)
    return [(out[0], ld("output"))]
  if name == "masked_lm":
    out = forward.apply(params, state, None, ld("input").astype(np.int32), is_training=False)
    return [(out[0], ld("output"))]
  if name == "optical_flow":
    out = forward.apply(params, state, None, ld("input_frames"), is_training=False)
    # transformers returns the released model's raw output; this package, pixels (x 20).
    return [(out[0] / cfg.flow.output_scale, ld("output"))]
  inputs = {
    "image": ld("input_image").transpose(0, 1, 3, 4, 2),  # NTCHW -> NTHWC
    "audio": ld("input_audio")[..., 0],
    "label": ld("input_label"),
  }
  points = {m: ld(f"points_{m}").astype(np.int32) for m in ("image", "audio")}
  out, _ = forward.apply(
    params, state, jax.random.PRNGKey(0), inputs, is_training=False, subsampled_points=points
  )
  return [
    (out["audio"].reshape(1, -1), ld("output_audio")),
    (out["image"], ld("output_image")),
    (out["label"], ld("output_label")),
  ]


def _max_relative_error(pairs) -> float:
  """Largest |ours - theirs| over the largest |theirs|, across the outputs."""
  errors = []
  for ours, theirs in pairs:
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape
    errors.append(np.abs(ours - theirs).max() / np.abs(theirs).max())
  return max(errors)


@pytest.fixture(scope="module", params=NAMES)
def imported(request):
  name = request.param
  cfg, params, state = hf_format.read_hf_folder(os.path.join(FIXTURES, name))
  expected_params, expected_state = model.param_shapes(cfg)
  params = official_format.match_to_template(expected_params, params)
  state = official_format.match_to_template(expected_state, state, what="state")
  return name, cfg, params, state


def test_each_class_reproduces_transformers_outputs(imported):
  name, cfg, params, state = imported
  # float32 in both; summation orders differ, so a few ulps of the outputs' scale.
  assert _max_relative_error(_run(name, cfg, params, state)) < 1e-5


def test_the_release_numerics_would_not(imported):
  """Each class's transformers options matter: with the release's numerics instead (tanh
  GELU, and each class's own difference) the outputs move beyond the tolerance (the GELU
  alone: 6e-5 relative in the Fourier classifier, whose matched error is 3.4e-6)."""
  name, cfg, params, state = imported
  release = cfg.copy_and_resolve_references()
  release.activation = "gelu_tanh"
  if name == "image_learned":
    release.decoder.use_query_residual = False
  if name == "masked_lm":
    release.decoder.mask_padded_queries = True
  assert _max_relative_error(_run(name, release, params, state)) > 3e-5


def test_the_conv_stem_padding_is_transformers():
  name = "image_conv"
  cfg, params, state = hf_format.read_hf_folder(os.path.join(FIXTURES, name))
  assert cfg.input.conv_padding == "transformers"
  assert model.modalities.image.input_grid(cfg) == (7, 7)  # 32 -> 16 -> 7 (SAME: 8)
  same = cfg.copy_and_resolve_references()
  same.input.conv_padding = "same"
  # SAME padding gives an 8 x 8 grid: the same parameters, other outputs.
  assert _max_relative_error(_run(name, same, params, state)) > 1e-4


def test_the_model_config_follows_config_json():
  cfg = weight_formats.read_model_config(os.path.join(FIXTURES, "image_fourier"))
  assert cfg.input_shape == (16, 16, 3)
  assert cfg.input.fourier.max_resolution == (224, 224)  # fixed in transformers' class
  assert (cfg.num_classes, cfg.num_latents, cfg.num_latent_channels) == (7, 8, 32)
  assert (cfg.num_blocks, cfg.num_self_attends_per_block, cfg.activation) == (2, 2, "gelu_exact")
  mlm = weight_formats.read_model_config(os.path.join(FIXTURES, "masked_lm"))
  assert (mlm.decoder.num_heads, mlm.decoder.qk_channels) == (8, 256)
  assert mlm.input_shape == (16,) and mlm.text.embed_dim == 32


def test_imported_weights_round_trip_through_safetensors_bit_exactly(tmp_path):
  folder = os.path.join(FIXTURES, "image_conv")
  weights = weight_formats.read(folder)
  path = str(tmp_path / "conv.safetensors")
  weight_formats.write(path, weights, "safetensors")
  again = weight_formats.read(path)
  assert again.model_config.to_json() == weights.model_config.to_json()
  for tree, loaded in ((weights.params, again.params), (weights.state, again.state)):
    flat, flat_loaded = official_format.flatten_tree(tree), official_format.flatten_tree(loaded)
    assert flat.keys() == flat_loaded.keys()
    for key, value in flat.items():
      assert flat_loaded[key].dtype == np.asarray(value).dtype, key
      np.testing.assert_array_equal(flat_loaded[key], value, err_msg=key)


def _copy(name: str, tmp_path) -> str:
  folder = str(tmp_path / name)
  shutil.copytree(os.path.join(FIXTURES, name), folder)
  return folder


def _edit_config(folder: str, **changes) -> None:
  path = os.path.join(folder, "config.json")
  with open(path) as f:
    hf = json.load(f)
  hf.update(changes)
  with open(path, "w") as f:
    json.dump(hf, f)


def _edit_tensors(folder: str, edit) -> None:
  path = os.path.join(folder, "model.safetensors")
  tensors, metadata = safetensors_io.read_tensors(path)
  edit(tensors)
  from safetensors.numpy import save_file

  save_file(tensors, path, metadata=metadata)


def test_a_model_type_other_than_perceiver_is_refused(tmp_path):
  folder = _copy("image_fourier", tmp_path)
  _edit_config(folder, model_type="bert")
  with pytest.raises(CheckpointFormatError, match=r"model_type='bert', not 'perceiver'"):
    hf_format.read_hf_folder(folder)


def test_an_unknown_class_is_refused(tmp_path):
  folder = _copy("image_fourier", tmp_path)
  _edit_config(folder, architectures=["PerceiverForSequenceClassification"])
  with pytest.raises(CheckpointFormatError, match="expected one of"):
    hf_format.read_hf_folder(folder)


def test_unknown_and_missing_tensors_are_listed(tmp_path):
  folder = _copy("image_fourier", tmp_path)

  def edit(tensors):
    tensors["perceiver.extra.weight"] = np.zeros(3, np.float32)

  _edit_tensors(folder, edit)
  with pytest.raises(CheckpointFormatError, match=r"1 tensors .* \['perceiver.extra.weight'\]"):
    hf_format.read_hf_folder(folder)

  def drop(tensors):
    del tensors["perceiver.embeddings.latents"]

  folder = _copy("image_learned", tmp_path)
  _edit_tensors(folder, drop)
  with pytest.raises(CheckpointFormatError, match="missing tensor 'perceiver.embeddings.latents'"):
    hf_format.read_hf_folder(folder)


def test_a_wrong_shape_is_reported_against_the_model(tmp_path):
  folder = _copy("image_fourier", tmp_path)

  def edit(tensors):
    tensors["perceiver.embeddings.latents"] = np.zeros((9, 32), np.float32)

  _edit_tensors(folder, edit)
  cfg, params, _ = hf_format.read_hf_folder(folder)
  expected, _ = model.param_shapes(cfg)
  with pytest.raises(
    official_format.CheckpointMismatchError, match=r"expected \(8, 32\), got \(9, 32\)"
  ):
    official_format.match_to_template(expected, params)


def test_a_pickle_in_place_of_the_safetensors_is_refused(tmp_path):
  folder = _copy("masked_lm", tmp_path)
  official_format.save_official_pickle(os.path.join(folder, "model.safetensors"), {"m": {}})
  with pytest.raises(CheckpointFormatError, match="not safetensors") as info:
    hf_format.read_hf_folder(folder)
  assert "\n" not in str(info.value)


def test_a_pytorch_model_bin_folder_imports_the_same_weights():
  """The same model saved by torch.save (read by `torch_archive`, no torch here)."""
  from_safetensors = hf_format.read_hf_folder(os.path.join(FIXTURES, "image_fourier"))
  bin_folder = os.path.join(FIXTURES, "..", "hf_bin", "image_fourier")
  assert os.listdir(bin_folder) and "model.safetensors" not in os.listdir(bin_folder)
  from_bin = hf_format.read_hf_folder(bin_folder)
  assert from_bin[0].to_json() == from_safetensors[0].to_json()
  for tree, other in ((from_bin[1], from_safetensors[1]), (from_bin[2], from_safetensors[2])):
    flat, flat_other = official_format.flatten_tree(tree), official_format.flatten_tree(other)
    assert flat.keys() == flat_other.keys()
    for key, value in flat.items():
      np.testing.assert_array_equal(value, flat_other[key], err_msg=key)
