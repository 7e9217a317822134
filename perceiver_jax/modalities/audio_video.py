"""The 'audio_video' modality: AudioSet's raw audio, log-mel audio and video, alone or fused.

Its section `config.model.audio_video` (`default_config`) holds every setting; the modules
are those of `perceiver_jax.models.audio_video`. Inputs are always a dict keyed by modality,
also with one modality ({"audio": [B, S]} or {"video": [B, T, H, W, 3]}): one modality feeds
its own processor (`audio_preprocessor` / `video_preprocessor`), several are fused by the
`multimodal_preprocessor`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax.models import audio_video
from perceiver_jax.models import position_encoding

SECTION = "audio_video"
MODALITIES = ("audio", "video")


def default_config() -> ml_collections.ConfigDict:
  """The modality's fields of `config.model`: the paper's raw audio + video inputs."""
  section = dict(
    # Which inputs the model reads, a subset of MODALITIES (the keys of its input dict).
    modalities=("audio", "video"),
    audio=dict(
      prep="raw",  # one of models.audio_video.AUDIO_PREPS
      sample_rate=48_000,
      num_samples=61_440,  # 1.28 s
      samples_per_patch=128,  # raw: 480 patches
      hop_length=512,  # mel: 10.67 ms, 120 frames
      fft_length=1024,  # mel: Hann window and FFT size, 21.3 ms
      num_mel_bins=40,  # mel: 120 x 40 = 4,800 inputs
      mel_min_hz=20.0,
      mel_max_hz=24_000.0,  # Nyquist at 48 kHz
      # Bands per dimension; raw: 1-D over the 480 patches (64 in configs/audioset.py),
      # mel: 2-D over (frame, bin) (32 there).
      num_bands=64,
      max_resolution=(),  # () = the grid: (480,) raw, (120, 40) mel
      # SpecAugment (mel, training only): masks of up to `max_*_mask` frames / bins.
      num_time_masks=2,
      max_time_mask=12,  # 10% of the 120 frames
      num_freq_masks=2,
      max_freq_mask=8,  # 20% of the 40 bins
    ),
    video=dict(
      num_frames=32,
      image_size=224,
      patch_shape=(2, 8, 8),  # (t, y, x): a 16 x 28 x 28 grid
      num_bands=32,
      max_resolution=(),  # () = the patch grid (16, 28, 28)
    ),
    min_padding_size=4,  # the widest modality's learned padding (video: 4 in the paper)
    video_dropout=0.3,  # training only, several modalities only
  )
  return ml_collections.ConfigDict({SECTION: section})


def _fail(field: str, value, message: str, section: str = SECTION):
  raise ValueError(f"config.model.{section}.{field}={value!r}: {message}")


def audio_grid(acfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The audio input grid: (patches,) for raw audio, (frames, mel bins) for mel."""
  if acfg.prep == "raw":
    return (acfg.num_samples // acfg.samples_per_patch,)
  return (acfg.num_samples // acfg.hop_length, acfg.num_mel_bins)


def video_grid(vcfg: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """The (t, y, x) patch grid of a video clip."""
  pt, py, px = vcfg.patch_shape
  return (vcfg.num_frames // pt, vcfg.image_size // py, vcfg.image_size // px)


def modality_channels(av: ml_collections.ConfigDict) -> dict[str, int]:
  """Width of each modality's inputs before padding, from `config.model.audio_video`."""
  widths = {}
  for m in sorted(av.modalities):
    if m == "audio":
      content = av.audio.samples_per_patch if av.audio.prep == "raw" else 1
      dims = len(audio_grid(av.audio))
    else:
      content, dims = int(np.prod(av.video.patch_shape)) * 3, 3
    widths[m] = content + position_encoding.num_fourier_channels(dims, av[m].num_bands)
  return widths


def padded_width(av: ml_collections.ConfigDict) -> int:
  """The common width of fused modalities: the widest plus `min_padding_size`."""
  return max(modality_channels(av).values()) + av.min_padding_size


def input_channels(cfg: ml_collections.ConfigDict) -> int:
  """Width C of the encoder's input array [B, M, C] for `config.model`."""
  av = cfg.audio_video
  if len(av.modalities) == 1:
    return modality_channels(av)[av.modalities[0]]
  return padded_width(av)


def num_inputs(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  """M per modality, e.g. {"audio": 480, "video": 12544}."""
  av = cfg.audio_video
  grids = {"audio": audio_grid(av.audio), "video": video_grid(av.video)}
  return {m: int(np.prod(grids[m])) for m in sorted(av.modalities)}


def modality_sizes(cfg: ml_collections.ConfigDict) -> dict[str, int] | None:
  """M per modality of fused inputs, in their order along M (what a decoder that splits its
  outputs back into modalities needs); None for one modality."""
  return num_inputs(cfg) if len(cfg.audio_video.modalities) > 1 else None


def validate_audio(a: ml_collections.ConfigDict, section: str = SECTION) -> None:
  """Checks an `audio` section (of `config.model.<section>`); ValueError naming the field."""

  def fail(field, value, message):
    _fail(f"audio.{field}", value, message, section)

  if a.prep not in audio_video.AUDIO_PREPS:
    fail("prep", a.prep, f"expected one of {audio_video.AUDIO_PREPS}")
  step = a.samples_per_patch if a.prep == "raw" else a.hop_length
  field = "samples_per_patch" if a.prep == "raw" else "hop_length"
  if step < 1 or a.num_samples % step:
    fail(field, step, f"must divide audio.num_samples={a.num_samples}")
  if a.prep == "mel":
    if a.fft_length < a.hop_length or (a.fft_length - a.hop_length) % 2:
      fail("fft_length", a.fft_length, "must be >= hop_length with an even difference")
    if not 0 <= a.mel_min_hz < a.mel_max_hz <= a.sample_rate / 2:
      fail("mel_max_hz", a.mel_max_hz, f"needs mel_min_hz < it <= {a.sample_rate / 2}")
    for name, size in (("max_time_mask", audio_grid(a)[0]), ("max_freq_mask", a.num_mel_bins)):
      if not 0 <= a[name] <= size:
        fail(name, a[name], f"must be in [0, {size}]")
  _check_max_resolution(a, audio_grid(a), f"{section}.audio")


def validate_video(v: ml_collections.ConfigDict, section: str = SECTION, name: str = "video"):
  """Checks a video section `config.model.<section>.<name>`; ValueError naming the field."""
  if len(v.patch_shape) != 3:
    _fail(f"{name}.patch_shape", tuple(v.patch_shape), "expected (t, y, x)", section)
  for size, patch, axis in zip(
    (v.num_frames, v.image_size, v.image_size), v.patch_shape, "tyx", strict=True
  ):
    if patch < 1 or size % patch:
      _fail(
        f"{name}.patch_shape",
        tuple(v.patch_shape),
        f"{axis} patch {patch} must divide {size}",
        section,
      )
  _check_max_resolution(v, video_grid(v), f"{section}.{name}")


def _check_max_resolution(section_cfg: ml_collections.ConfigDict, grid, where: str) -> None:
  res = tuple(section_cfg.max_resolution)
  if res and len(res) != len(grid):
    raise ValueError(
      f"config.model.{where}.max_resolution={res!r}: needs {len(grid)} values, one per grid "
      "dimension"
    )


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""
  av = cfg.audio_video
  modalities = tuple(av.modalities)
  if not modalities or len(set(modalities)) != len(modalities) or set(modalities) - {*MODALITIES}:
    _fail("modalities", modalities, f"expected distinct names from {MODALITIES}")
  validate_audio(av.audio)
  validate_video(av.video)
  if av.min_padding_size < 0:
    _fail("min_padding_size", av.min_padding_size, "must be >= 0")
  if not 0.0 <= av.video_dropout < 1.0:
    _fail("video_dropout", av.video_dropout, "must be in [0, 1)")


def dummy_inputs(cfg: ml_collections.ConfigDict, batch_size: int = 1) -> dict[str, jax.Array]:
  """Zero inputs for initialisation: a dict keyed by modality, also for one modality."""
  av = cfg.audio_video
  shapes = {
    "audio": (batch_size, av.audio.num_samples),
    "video": (batch_size, av.video.num_frames, av.video.image_size, av.video.image_size, 3),
  }
  return {m: jnp.zeros(shapes[m], jnp.float32) for m in av.modalities}


def audio_kwargs(a: ml_collections.ConfigDict) -> dict:
  """The keyword arguments of `models.audio_video.AudioPreprocessor` from an audio section."""
  return {**a, "max_resolution": tuple(a.max_resolution)}


def modality_kwargs(av: ml_collections.ConfigDict, modality: str) -> dict:
  """The keyword arguments of `models.audio_video.PREPROCESSORS[modality]`."""
  return dict(av.video) if modality == "video" else audio_kwargs(av.audio)


def build_preprocessor(cfg: ml_collections.ConfigDict):
  """The input processor of `config.model`; call inside a Haiku transform.

  Returns `(inputs, *, is_training) -> (inputs [B, M, C], inputs_without_pos [B, M, C'])`
  for `inputs` a dict {"audio": ..., "video": ...} holding the configured modalities.
  """
  av = cfg.audio_video
  if len(av.modalities) > 1:
    return audio_video.MultimodalPreprocessor(
      {m: audio_video.PREPROCESSORS[m](**modality_kwargs(av, m)) for m in av.modalities},
      width=padded_width(av),
      drop_probs={"video": av.video_dropout},
    )
  (modality,) = av.modalities
  processor = audio_video.PREPROCESSORS[modality](**modality_kwargs(av, modality))

  def preprocess(inputs: dict, *, is_training: bool):
    if set(inputs) != {modality}:
      raise ValueError(f"inputs have modalities {sorted(inputs)}, expected ({modality!r},)")
    return processor(inputs[modality], is_training=is_training)

  return preprocess
