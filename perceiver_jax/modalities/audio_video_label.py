"""The 'audio_video_label' modality: a clip's video, audio and class label, fused (Kinetics).

The inputs of Perceiver IO's multimodal autoencoder, a dict keyed as in the release, which
calls the video 'image':
  audio  [B, S] mono samples in [-1, 1] -> raw patches of `samples_per_patch` samples with 1-D
         Fourier features (released: 30,720 samples at 48 kHz -> 1,920 patches of 16, 192
         bands up to max_resolution 30,720: 16 + 385 = 401 channels);
  image  [B, T, H, W, 3] frames in [0, 1] -> space-time patches with 3-D Fourier features
         (released: 16 x 224 x 224 in 1x4x4 patches -> 50,176 inputs of 48 + 195 = 243, 32
         bands up to max_resolution (16, 56, 56));
  label  [B, K] one-hot -> one input of K channels (700).
They are padded to a common width (the widest, 700, + `min_padding_size` 4 = 704) with learned
per-modality paddings, and each input is replaced by its modality's learned mask token with
probability `mask_probs[modality]` in training (the label: 0.5 in the paper) and
`eval_mask_probs[modality]` at evaluation (the label always: it is what is predicted). The
modules are those of `perceiver_jax.models.audio_video` (the AudioSet processors); the audio
and video sub-sections have the fields of the 'audio_video' modality's.

`queries` configures the decoder (`decoder.type='multimodal'`, `models.multimodal`, built by
`build_decoder`, which `model.DECODERS['multimodal']` calls): Fourier
queries of every audio patch and every pixel, one learned query for the label, padded to a
common width (the widest + `queries.min_padding_size`: 1,024 + 2 = 1,026), decoded to
`queries.output_channels` (512) features per point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax.modalities import audio_video
from perceiver_jax.models import audio_video as av_models
from perceiver_jax.models import decoders
from perceiver_jax.models import multimodal
from perceiver_jax.models import position_encoding

SECTION = "audio_video_label"
MODALITIES = ("audio", "image", "label")  # sorted: their order along the input axis


def default_config() -> ml_collections.ConfigDict:
  """The modality's fields of `config.model`: the released video autoencoder's inputs."""
  audio = audio_video.default_config().audio_video.audio
  audio.update(num_samples=30_720, samples_per_patch=16, num_bands=192, max_resolution=(30_720,))
  image = dict(
    num_frames=16, image_size=224, patch_shape=(1, 4, 4), num_bands=32, max_resolution=(16, 56, 56)
  )
  section = dict(
    audio=audio.to_dict(),
    image=image,
    min_padding_size=4,
    mask_probs=dict(audio=0.0, image=0.0, label=0.5),  # training
    eval_mask_probs=dict(audio=0.0, image=0.0, label=1.0),
    queries=dict(
      audio_num_bands=192,
      audio_max_resolution=(30_720,),
      image_num_bands=32,
      image_max_resolution=(16, 56, 56),
      label_channels=1024,
      label_init_scale=0.02,
      min_padding_size=2,
      output_channels=512,
    ),
  )
  return ml_collections.ConfigDict({SECTION: section})


def _fail(field: str, value, message: str):
  raise ValueError(f"config.model.{SECTION}.{field}={value!r}: {message}")


def num_points(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  """Output points per modality: audio patches, pixels (T * H * W), 1 label."""
  s = cfg[SECTION]
  v = s.image
  return {
    "audio": s.audio.num_samples // s.audio.samples_per_patch,
    "image": v.num_frames * v.image_size * v.image_size,
    "label": 1,
  }


def modality_channels(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  """Width of each modality's inputs before padding."""
  s = cfg[SECTION]
  return {
    "audio": s.audio.samples_per_patch
    + position_encoding.num_fourier_channels(1, s.audio.num_bands),
    "image": int(np.prod(s.image.patch_shape)) * 3
    + position_encoding.num_fourier_channels(3, s.image.num_bands),
    "label": cfg.num_classes,
  }


def input_channels(cfg: ml_collections.ConfigDict) -> int:
  """Width C of the encoder's input array: the widest modality plus its padding."""
  return max(modality_channels(cfg).values()) + cfg[SECTION].min_padding_size


def num_inputs(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  """M per modality, e.g. {"audio": 1920, "image": 50176, "label": 1}."""
  s = cfg[SECTION]
  return {
    "audio": s.audio.num_samples // s.audio.samples_per_patch,
    "image": int(np.prod(audio_video.video_grid(s.image))),
    "label": 1,
  }


def modality_sizes(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  """M per modality, in their order along M."""
  return num_inputs(cfg)


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""
  s = cfg[SECTION]
  if s.audio.prep != "raw":  # first: the other audio checks would name mel's fields instead
    _fail("audio.prep", s.audio.prep, "the autoencoder reconstructs raw audio patches ('raw')")
  audio_video.validate_audio(s.audio, SECTION)
  audio_video.validate_video(s.image, SECTION, "image")
  if s.min_padding_size < 0:
    _fail("min_padding_size", s.min_padding_size, "must be >= 0")
  for field in ("mask_probs", "eval_mask_probs"):
    if set(s[field]) != set(MODALITIES):
      _fail(field, dict(s[field]), f"needs one probability for each of {MODALITIES}")
    for modality, p in s[field].items():
      if not 0.0 <= p <= 1.0:
        _fail(f"{field}.{modality}", p, "must be in [0, 1]")
      if field == "eval_mask_probs" and p not in (0.0, 1.0):
        _fail(f"{field}.{modality}", p, "must be 0 or 1 (evaluation draws nothing at random)")
  q = s.queries
  if len(q.audio_max_resolution) != 1:
    _fail("queries.audio_max_resolution", tuple(q.audio_max_resolution), "needs 1 value")
  if len(q.image_max_resolution) != 3:
    _fail("queries.image_max_resolution", tuple(q.image_max_resolution), "needs (t, y, x)")
  for field in ("label_channels", "output_channels", "audio_num_bands", "image_num_bands"):
    if q[field] < 1:
      _fail(f"queries.{field}", q[field], "must be at least 1")
  if q.min_padding_size < 0:
    _fail("queries.min_padding_size", q.min_padding_size, "must be >= 0")
  if cfg.decoder.type != "multimodal":
    raise ValueError(
      f"config.model.decoder.type={cfg.decoder.type!r}: modality {SECTION!r} is decoded by "
      "the 'multimodal' decoder"
    )


def dummy_inputs(cfg: ml_collections.ConfigDict, batch_size: int = 1) -> dict[str, jax.Array]:
  """Zero inputs: {"audio": [B, S], "image": [B, T, H, W, 3], "label": [B, K]}."""
  s = cfg[SECTION]
  v = s.image
  return {
    "audio": jnp.zeros((batch_size, s.audio.num_samples), jnp.float32),
    "image": jnp.zeros((batch_size, v.num_frames, v.image_size, v.image_size, 3), jnp.float32),
    "label": jnp.zeros((batch_size, cfg.num_classes), jnp.float32),
  }


def build_preprocessor(cfg: ml_collections.ConfigDict) -> av_models.MultimodalPreprocessor:
  """The `multimodal_preprocessor` of `config.model`; call inside a Haiku transform."""
  s = cfg[SECTION]
  processors = {
    "audio": av_models.AudioPreprocessor(**audio_video.audio_kwargs(s.audio)),
    "image": av_models.VideoPreprocessor(**dict(s.image)),
    "label": av_models.OneHotPreprocessor(num_classes=cfg.num_classes),
  }
  return av_models.MultimodalPreprocessor(
    processors,
    width=input_channels(cfg),
    mask_probs=dict(s.mask_probs),
    eval_mask_probs=dict(s.eval_mask_probs),
  )


def build_decoder(cfg: ml_collections.ConfigDict) -> multimodal.MultimodalAutoencodingDecoder:
  """The decoder of `config.model` (`decoder.type='multimodal'`): every modality's queries
  decoded together, then each modality's postprocessor; call inside a Haiku transform. The
  label's query decoder and the postprocessors are top-level modules, as in the release."""
  section = cfg.audio_video_label
  q, points = section.queries, num_points(cfg)
  video = section.image
  query_decoders = {
    "audio": decoders.BasicDecoder(
      output_num_channels=q.output_channels,
      output_index_dims=(points["audio"],),
      position_encoding_type="fourier",
      fourier_kwargs=dict(
        num_bands=q.audio_num_bands, max_resolution=tuple(q.audio_max_resolution)
      ),
      name="audio_query",
    ),
    "image": decoders.BasicDecoder(
      output_num_channels=q.output_channels,
      output_index_dims=(video.num_frames, video.image_size, video.image_size),
      position_encoding_type="fourier",
      fourier_kwargs=dict(
        num_bands=q.image_num_bands, max_resolution=tuple(q.image_max_resolution)
      ),
      name="image_query",
    ),
    "label": decoders.ClassificationDecoder(
      num_classes=cfg.num_classes,
      num_z_channels=q.label_channels,
      trainable_kwargs={"init_scale": q.label_init_scale},
      name="classification_decoder",
    ),
  }
  decoder = multimodal.MultimodalDecoder(
    query_decoders,
    output_num_channels=q.output_channels,
    min_padding_size=q.min_padding_size,
    num_heads=cfg.decoder.num_heads,
    qk_channels=cfg.decoder.qk_channels or None,
    use_query_residual=cfg.decoder.use_query_residual,
  )
  postprocessors = {
    "audio": multimodal.AudioPostprocessor(section.audio.samples_per_patch),
    "image": decoders.ProjectionPostprocessor(3),
    "label": decoders.ClassificationPostprocessor(cfg.num_classes),
  }
  return multimodal.MultimodalAutoencodingDecoder(decoder, postprocessors, points)
