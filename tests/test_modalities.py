"""Tests for perceiver_jax/modalities/: one interface for every input modality."""

import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import audioset as audioset_config
from perceiver_jax import modalities
from perceiver_jax import model
from perceiver_jax import registry

# (modality, a registry variant or AudioSet variant that uses it)
CASES = [("image", "testing"), ("points", "modelnet40"), ("audio_video", "audio_raw")]


def _model_config(variant):
  if variant in audioset_config.VARIANTS:
    return audioset_config.model_config(variant)
  return registry.get_model_config(variant)


@pytest.mark.parametrize("name, variant", CASES)
def test_every_adapter_has_the_same_interface(name, variant):
  adapter = modalities.get(name)
  assert set(adapter.default_config()) >= {adapter.SECTION}
  cfg = _model_config(variant)
  assert cfg.modality == name and adapter.SECTION in cfg
  adapter.validate(cfg)
  inputs = adapter.dummy_inputs(cfg, 2)
  fn = hk.transform(lambda x: adapter.build_preprocessor(cfg)(x, is_training=False))
  params = jax.eval_shape(fn.init, jax.random.PRNGKey(0), inputs)
  out, without_pos = jax.eval_shape(fn.apply, params, None, inputs)
  assert out.shape[0] == 2 and out.shape[-1] == adapter.input_channels(cfg)
  assert without_pos.shape[:2] == out.shape[:2]
  sizes = adapter.modality_sizes(cfg)
  if sizes is not None:  # fused inputs: the sizes add up to M, in the order of the array
    assert sum(sizes.values()) == out.shape[1] and list(sizes) == sorted(cfg.audio_video.modalities)


def test_unknown_modality_names_the_field():
  with pytest.raises(ValueError, match=r"^config.model.modality='speech': expected one of"):
    modalities.get("speech")


def test_points_preprocessor_is_xyz_then_their_fourier_features():
  cfg = registry.get_model_config("modelnet40")
  cfg.input_shape = (5, 3)
  cfg.points.fourier.num_bands = 2
  cfg.points.fourier.max_resolution = (4, 4, 4)
  points = jax.random.uniform(jax.random.PRNGKey(0), (1, 5, 3), minval=-1, maxval=1)
  fn = hk.transform(lambda x: modalities.points.build_preprocessor(cfg)(x, is_training=False))
  out, without_pos = fn.apply(fn.init(jax.random.PRNGKey(0), points), None, points)
  assert out.shape == (1, 5, modalities.points.input_channels(cfg)) == (1, 5, 3 + 3 + 12)
  np.testing.assert_array_equal(out[..., :3], points)
  np.testing.assert_array_equal(without_pos, points)
  # Bands 1 and 2 (= max_resolution / 2) of x, y, z: sines then cosines after the raw xyz.
  freqs = np.array([1.0, 2.0])
  angles = np.pi * np.asarray(points)[0, :, :, None] * freqs  # [5, 3, 2]
  np.testing.assert_allclose(out[0, :, 6:12], np.sin(angles).reshape(5, 6), atol=1e-5)
  np.testing.assert_allclose(out[0, :, 12:], np.cos(angles).reshape(5, 6), atol=1e-5)


def test_points_validate_names_the_field():
  cfg = registry.get_model_config("modelnet40")
  cfg.points.fourier.max_resolution = (2240, 2240)
  with pytest.raises(ValueError, match=re.escape("config.model.points.fourier.max_resolution=")):
    model.validate_model_config(cfg)


def test_image_validate_and_grid():
  cfg = registry.get_model_config("io_conv")
  assert modalities.image.input_grid(cfg) == (56, 56)
  cfg.input.position_encoding_type = "learned"
  with pytest.raises(ValueError, match=r"^config.model.input.position_encoding_type='learned'"):
    model.validate_model_config(cfg)


def test_one_audio_video_modality_still_takes_a_dict():
  cfg = audioset_config.model_config("audio_raw")
  inputs = model.dummy_inputs(cfg, 1)
  assert set(inputs) == {"audio"} and model.input_shapes(cfg) == {"audio": (61_440,)}
  fn = hk.transform(lambda x: modalities.audio_video.build_preprocessor(cfg)(x, is_training=False))
  audio = {"audio": jnp.arange(61_440, dtype=jnp.float32)[None]}
  out, _ = fn.apply(fn.init(jax.random.PRNGKey(0), audio), None, audio)
  np.testing.assert_array_equal(out[0, 1, :128], np.arange(128, 256))  # the second patch
  with pytest.raises(ValueError, match="expected \\('audio',\\)"):
    fn.apply({}, None, {"video": audio["audio"]})
