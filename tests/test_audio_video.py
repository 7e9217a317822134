"""Tests for perceiver_jax/models/audio_video.py (AudioSet input processors and their fusion),
built through the adapter perceiver_jax/modalities/audio_video.py."""

import re

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import audioset as audioset_config
from perceiver_jax import model
from perceiver_jax.modalities import audio_video
from perceiver_jax.models import audio_video as av_models
from perceiver_jax.models import position_encoding

# Full-size variants: (input count per modality, input width C, parameters).
VARIANTS = {
  "audio_raw": ({"audio": 480}, 257, 107_419_677),
  "audio_mel": ({"audio": 4800}, 131, 106_706_769),
  "video": ({"video": 12544}, 579, 109_818_577),
  "audio_video": ({"audio": 480, "video": 12544}, 583, 109_853_923),
  "audio_mel_video": ({"audio": 4800, "video": 12544}, 583, 109_854_049),
}


def _tiny(modalities=("audio", "video"), prep="raw") -> ml_collections.ConfigDict:
  """A model section with small inputs: 8 audio patches or 16 x 8 mel values, 2x2x2 video."""
  cfg = audio_video.default_config()
  cfg.modality = "audio_video"
  av = cfg.audio_video
  av.modalities = modalities
  av.audio.update(prep=prep, num_samples=1024, samples_per_patch=128, num_bands=4)
  av.audio.update(hop_length=64, fft_length=128, num_mel_bins=8, max_time_mask=4, max_freq_mask=3)
  av.video.update(num_frames=4, image_size=16, num_bands=2)
  return cfg


def _apply(cfg, inputs, *, is_training, seed=0):
  if not isinstance(inputs, dict):  # one modality's array
    (modality,) = cfg.audio_video.modalities
    inputs = {modality: inputs}
  fn = hk.transform(lambda x: audio_video.build_preprocessor(cfg)(x, is_training=is_training))
  params = fn.init(jax.random.PRNGKey(0), inputs)
  return params, fn.apply(params, jax.random.PRNGKey(seed), inputs)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_paper_input_counts_widths_and_parameters(variant):
  counts, width, num_params = VARIANTS[variant]
  cfg = audioset_config.get_config(f"variant={variant}").model
  audio_video.validate(cfg)
  assert audio_video.num_inputs(cfg) == counts
  assert audio_video.input_channels(cfg) == width
  fn = hk.transform(lambda x: audio_video.build_preprocessor(cfg)(x, is_training=True))
  inputs = audio_video.dummy_inputs(cfg, 2)
  params = jax.eval_shape(fn.init, jax.random.PRNGKey(0), inputs)
  out, without_pos = jax.eval_shape(fn.apply, params, jax.random.PRNGKey(0), inputs)
  assert out.shape == (2, sum(counts.values()), width)
  assert without_pos.shape[:2] == out.shape[:2]
  params, _ = model.param_shapes(cfg)
  assert model.count_params(params) == num_params
  # No weight sharing: 2 cross-attends and 2 x 8 self-attends, each with its own weights.
  modules = {name.split("/~/")[1].split("/")[0] for name in params if "encoder" in name}
  assert modules == {
    "trainable_position_encoding",
    "cross_attention",
    "cross_attention_1",
    "self_attention",
    *(f"self_attention_{i}" for i in range(1, 16)),
  }
  assert "projection_decoder/~/logits" in params


def test_fourier_channel_counts():
  # Raw audio: 128 samples + 1-D (1 + 2 x 64); mel: 1 value + 2-D (2 + 4 x 32);
  # video: 2 x 8 x 8 x 3 = 384 values + 3-D (3 + 6 x 32).
  raw = audioset_config.get_config("variant=audio_raw").model.audio_video
  mel = audioset_config.get_config("variant=audio_mel").model.audio_video
  assert audio_video.modality_channels(raw) == {"audio": 128 + 129}
  assert audio_video.modality_channels(mel) == {"audio": 1 + 130}
  both = audioset_config.get_config("variant=audio_video").model.audio_video
  assert audio_video.modality_channels(both) == {"audio": 257, "video": 384 + 195}
  assert audio_video.padded_width(both) == 384 + 195 + 4


def test_raw_audio_patches_in_order_with_time_fourier_features():
  cfg = _tiny(("audio",))
  audio = jnp.arange(2 * 1024, dtype=jnp.float32).reshape(2, 1024)
  params, (inputs, without_pos) = _apply(cfg, audio, is_training=False)
  assert params == {}
  assert inputs.shape == (2, 8, 128 + 9)
  np.testing.assert_array_equal(inputs[1, 3, :128], audio[1, 384:512])  # patch 3
  np.testing.assert_array_equal(without_pos, audio.reshape(2, 8, 128))
  expected = position_encoding.fourier_position_encoding((8,), 2, 4)
  np.testing.assert_allclose(inputs[..., 128:], expected)
  np.testing.assert_allclose(inputs[0, [0, 7], 128], [-1.0, 1.0])  # first and last patch


def test_video_patch_ordering_and_positions():
  cfg = _tiny(("video",))
  t, y, x, c = np.meshgrid(*(np.arange(n) for n in (4, 16, 16, 3)), indexing="ij")
  video = jnp.asarray(1000 * t + 30 * y + x + 0.1 * c, jnp.float32)[None]  # [1, 4, 16, 16, 3]
  _, (inputs, _) = _apply(cfg, video, is_training=False)
  assert inputs.shape == (1, 2 * 2 * 2, 384 + 3 + 3 * 2 * 2)
  # Patch (t=1, y=0, x=1) is input 1 * 4 + 0 * 2 + 1 = 5: frames 2-3, rows 0-7, columns 8-15.
  np.testing.assert_array_equal(inputs[0, 5, :384], video[0, 2:4, 0:8, 8:16].reshape(-1))
  np.testing.assert_array_equal(inputs[0, 5, 384:387], [1.0, -1.0, 1.0])  # (t, y, x) in [-1, 1]


def test_log_mel_peaks_at_the_tone_and_counts_inputs():
  cfg = _tiny(("audio",), prep="mel")
  acfg = cfg.audio_video.audio
  tone = 6000.0
  audio = jnp.sin(2 * jnp.pi * tone * jnp.arange(1024) / 48_000)[None]
  spec = av_models.log_mel_spectrogram(
    audio,
    sample_rate=acfg.sample_rate,
    hop_length=acfg.hop_length,
    fft_length=acfg.fft_length,
    num_mel_bins=acfg.num_mel_bins,
    mel_min_hz=acfg.mel_min_hz,
    mel_max_hz=acfg.mel_max_hz,
  )
  assert spec.shape == (1, 16, 8)
  filters = av_models.mel_filterbank(8, 128, 48_000, acfg.mel_min_hz, acfg.mel_max_hz)
  tone_bin = int(np.argmax(filters[round(tone / (48_000 / 128))]))
  assert np.all(np.argmax(spec[0, 1:-1], axis=-1) == tone_bin)
  np.testing.assert_allclose([spec.mean(), spec.std()], [0.0, 1.0], atol=1e-4)
  _, (inputs, _) = _apply(cfg, audio, is_training=False)
  assert inputs.shape == (1, 16 * 8, 1 + 2 + 4 * 4)
  np.testing.assert_allclose(inputs[0, :, 0], spec.reshape(-1), atol=1e-6)


def test_spec_augment_masks_whole_bands_in_training_only():
  cfg = _tiny(("audio",), prep="mel")
  audio = jax.random.normal(jax.random.PRNGKey(1), (16, 1024))
  _, (eval_a, _) = _apply(cfg, audio, is_training=False, seed=0)
  _, (eval_b, _) = _apply(cfg, audio, is_training=False, seed=1)
  np.testing.assert_array_equal(eval_a, eval_b)
  _, (train, _) = _apply(cfg, audio, is_training=True, seed=0)
  values, eval_values = train[..., 0].reshape(16, 16, 8), eval_a[..., 0].reshape(16, 16, 8)
  masked = np.asarray(values != eval_values)
  assert masked.any()
  assert np.all(np.asarray(values)[masked] == 0.0)
  np.testing.assert_array_equal(train[..., 1:], eval_a[..., 1:])  # positions untouched
  # Every masked value lies in a fully masked frame or a fully masked mel bin.
  zero = np.asarray(values == 0.0)
  rows, cols = zero.all(axis=2, keepdims=True), zero.all(axis=1, keepdims=True)
  assert np.all(~masked | rows | cols)
  assert rows.sum(axis=1).max() <= 2 * 4 and cols.sum(axis=2).max() <= 2 * 3


def test_multimodal_padding_widths_names_and_order():
  cfg = _tiny()
  inputs = audio_video.dummy_inputs(cfg, 2)
  inputs = {k: v + 1.0 for k, v in inputs.items()}
  params, (out, without_pos) = _apply(cfg, inputs, is_training=False)
  audio_width, video_width = 128 + 9, 384 + 15
  width = video_width + 4
  assert audio_video.input_channels(cfg) == width
  assert jax.tree.map(jnp.shape, params) == {
    "multimodal_preprocessor/audio_padding": {"pos_embs": (1, width - audio_width)},
    "multimodal_preprocessor/video_padding": {"pos_embs": (1, 4)},
  }
  assert out.shape == (2, 8 + 8, width) and without_pos.shape == (2, 16, width)
  audio_pad = params["multimodal_preprocessor/audio_padding"]["pos_embs"][0]
  video_pad = params["multimodal_preprocessor/video_padding"]["pos_embs"][0]
  np.testing.assert_array_equal(out[:, :8, audio_width:], jnp.broadcast_to(audio_pad, (2, 8, 266)))
  np.testing.assert_array_equal(out[:, 8:, video_width:], jnp.broadcast_to(video_pad, (2, 8, 4)))
  np.testing.assert_array_equal(out[:, :8, :128], 1.0)  # audio first, then video
  np.testing.assert_array_equal(without_pos[:, :8, 128:], 0.0)


def test_video_dropout_rate_in_training_and_none_in_eval():
  cfg = _tiny()
  cfg.audio_video.video.update(num_frames=2, image_size=8)  # one video input
  batch = 4000
  inputs = {"audio": jnp.ones((batch, 1024)), "video": jnp.ones((batch, 2, 8, 8, 3))}
  _, (train, _) = _apply(cfg, inputs, is_training=True)
  dropped = np.asarray(jnp.all(train[:, 8, :384] == 0.0, axis=-1))
  assert abs(dropped.mean() - 0.3) < 0.03  # 4.1 binomial standard deviations
  assert np.all(np.asarray(train[:, :8, :128]) == 1.0)  # audio is never dropped
  _, (evaluated, _) = _apply(cfg, inputs, is_training=False)
  assert np.all(np.asarray(evaluated[:, 8, :384]) == 1.0)


def test_forward_pass_through_the_model():
  cfg = audioset_config.get_config("variant=audio_mel_video,runlocal").model
  cfg.audio_video = _tiny(prep="mel").audio_video
  forward = model.build_model(cfg)
  inputs = model.dummy_inputs(cfg, 2)
  params, state = forward.init(jax.random.PRNGKey(0), inputs, is_training=True)
  logits, _ = forward.apply(params, state, jax.random.PRNGKey(1), inputs, is_training=True)
  assert logits.shape == (2, 527) and np.all(np.isfinite(logits))


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("modalities", ("audio", "image"), "modalities=('audio', 'image'): expected distinct"),
    ("audio.samples_per_patch", 100, "audio.samples_per_patch=100: must divide audio.num_samples"),
    ("audio.prep", "cqt", "audio.prep='cqt': expected one of ('raw', 'mel')"),
    ("video.patch_shape", (2, 7, 8), "video.patch_shape=(2, 7, 8): y patch 7 must divide 16"),
    ("video_dropout", 1.0, "video_dropout=1.0: must be in [0, 1)"),
  ],
)
def test_validate_names_field_and_value(field, value, message):
  cfg = _tiny()
  section, _, name = field.rpartition(".")
  (cfg.audio_video[section] if section else cfg.audio_video)[name] = value
  with pytest.raises(ValueError, match="^" + re.escape(f"config.model.audio_video.{message}")):
    audio_video.validate(cfg)
