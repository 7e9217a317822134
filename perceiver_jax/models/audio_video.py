"""AudioSet input processing: raw audio, log-mel spectrograms, video and their fusion.

Every processor maps its modality to the Perceiver's input array and returns
`(inputs [B, M, C], inputs_without_pos [B, M, C'])`, like `preprocessors.ImagePreprocessor`.
The Perceiver paper's AudioSet inputs (a 1.28 s training window):
  raw audio  [B, 61440] mono samples at 48 kHz -> 480 patches of 128 samples, plus 1-D Fourier
             features of the patch index: [B, 480, 128 + 2K + 1].
  log-mel    [B, 61440] samples -> a log-mel spectrogram computed here, in JAX on the
             accelerator: 120 frames (hop 512 samples = 10.67 ms, 1,024-sample Hann window,
             so 61,440 / 512 = 120 frames) x 40 mel bins = 4,800 inputs, each one value plus
             2-D Fourier features of its (frame, bin): [B, 4800, 1 + 4K + 2]. Each spectrogram
             is standardised (zero mean, unit variance); in training SpecAugment then sets
             random time and frequency bands to 0 (the mean).
  video      [B, 32, 224, 224, 3] -> 2x8x8 space-time patches, a 16 x 28 x 28 grid = 12,544
             inputs of 384 values, plus 3-D Fourier features of (t, y, x): [B, 12544, 384+6K+3].
  audio+video  {"audio": ..., "video": ...}: each modality is padded to a common width with a
             learned per-modality vector (`<modality>_padding`, the same at every position, so
             it doubles as a modality embedding). The widest modality (video) gets
             `min_padding_size` = 4 channels, as in the paper. Modalities are concatenated
             along M in sorted order (audio, then video). In training the whole video of an
             example is zeroed with probability `video_dropout` (0.3 in the paper), before
             position features and paddings are attached.
Fourier features are those of `position_encoding` with max_resolution = the patch grid unless
set: band frequencies then run from 1 up to the grid's Nyquist frequency, so none alias.

The config section `config.model.audio_video` (see `default_config`) holds every setting;
`config.model.modality = "audio_video"` routes `perceiver_jax.model` here through
`build_preprocessor`, `input_channels`, `validate` and `dummy_inputs`.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax.models import position_encoding

MODALITIES = ("audio", "video")
AUDIO_PREPS = ("raw", "mel")


def default_config() -> ml_collections.ConfigDict:
  """The `config.model.audio_video` section: the paper's raw audio + video inputs."""
  return ml_collections.ConfigDict(
    dict(
      # Which inputs the model reads, a subset of MODALITIES. One modality: the batch
      # "inputs" is that modality's array; several: a dict keyed by modality.
      modalities=("audio", "video"),
      audio=dict(
        prep="raw",  # one of AUDIO_PREPS
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
  )


def _fail(field: str, value, message: str):
  raise ValueError(f"config.model.audio_video.{field}={value!r}: {message}")


def audio_grid(acfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The audio input grid: (patches,) for raw audio, (frames, mel bins) for mel."""
  if acfg.prep == "raw":
    return (acfg.num_samples // acfg.samples_per_patch,)
  return (acfg.num_samples // acfg.hop_length, acfg.num_mel_bins)


def video_grid(vcfg: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """The (t, y, x) patch grid of a video clip."""
  pt, py, px = vcfg.patch_shape
  return (vcfg.num_frames // pt, vcfg.image_size // py, vcfg.image_size // px)


def _feature_channels(cfg: ml_collections.ConfigDict, modality: str) -> tuple[int, int]:
  """(content channels, Fourier channels) of one modality."""
  if modality == "audio":
    acfg = cfg.audio
    content = acfg.samples_per_patch if acfg.prep == "raw" else 1
    return content, position_encoding.num_fourier_channels(len(audio_grid(acfg)), acfg.num_bands)
  vcfg = cfg.video
  content = int(np.prod(vcfg.patch_shape)) * 3
  return content, position_encoding.num_fourier_channels(3, vcfg.num_bands)


def modality_channels(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  """Width of each modality's inputs before padding, from `config.model.audio_video`."""
  return {m: sum(_feature_channels(cfg, m)) for m in sorted(cfg.modalities)}


def padded_width(cfg: ml_collections.ConfigDict) -> int:
  """The common width of fused modalities: the widest plus `min_padding_size`."""
  return max(modality_channels(cfg).values()) + cfg.min_padding_size


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


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""
  av = cfg.audio_video
  modalities = tuple(av.modalities)
  if not modalities or len(set(modalities)) != len(modalities) or set(modalities) - {*MODALITIES}:
    _fail("modalities", modalities, f"expected distinct names from {MODALITIES}")
  a, v = av.audio, av.video
  if a.prep not in AUDIO_PREPS:
    _fail("audio.prep", a.prep, f"expected one of {AUDIO_PREPS}")
  step = a.samples_per_patch if a.prep == "raw" else a.hop_length
  field = "audio.samples_per_patch" if a.prep == "raw" else "audio.hop_length"
  if step < 1 or a.num_samples % step:
    _fail(field, step, f"must divide audio.num_samples={a.num_samples}")
  if a.prep == "mel":
    if a.fft_length < a.hop_length or (a.fft_length - a.hop_length) % 2:
      _fail("audio.fft_length", a.fft_length, "must be >= hop_length with an even difference")
    if not 0 <= a.mel_min_hz < a.mel_max_hz <= a.sample_rate / 2:
      _fail("audio.mel_max_hz", a.mel_max_hz, f"needs mel_min_hz < it <= {a.sample_rate / 2}")
    for name, size in (("max_time_mask", audio_grid(a)[0]), ("max_freq_mask", a.num_mel_bins)):
      if not 0 <= a[name] <= size:
        _fail(f"audio.{name}", a[name], f"must be in [0, {size}]")
  if len(v.patch_shape) != 3:
    _fail("video.patch_shape", tuple(v.patch_shape), "expected (t, y, x)")
  for size, patch, name in zip(
    (v.num_frames, v.image_size, v.image_size), v.patch_shape, "tyx", strict=True
  ):
    if patch < 1 or size % patch:
      _fail("video.patch_shape", tuple(v.patch_shape), f"{name} patch {patch} must divide {size}")
  for name, grid in (("audio", audio_grid(a)), ("video", video_grid(v))):
    res = tuple(av[name].max_resolution)
    if res and len(res) != len(grid):
      _fail(f"{name}.max_resolution", res, f"needs {len(grid)} values, one per grid dimension")
  if av.min_padding_size < 0:
    _fail("min_padding_size", av.min_padding_size, "must be >= 0")
  if not 0.0 <= av.video_dropout < 1.0:
    _fail("video_dropout", av.video_dropout, "must be in [0, 1)")


def dummy_inputs(cfg: ml_collections.ConfigDict, batch_size: int = 1):
  """Zero inputs for initialisation: an array for one modality, else a dict of arrays."""
  av = cfg.audio_video
  shapes = {
    "audio": (batch_size, av.audio.num_samples),
    "video": (batch_size, av.video.num_frames, av.video.image_size, av.video.image_size, 3),
  }
  arrays = {m: jnp.zeros(shapes[m], jnp.float32) for m in av.modalities}
  return arrays[av.modalities[0]] if len(arrays) == 1 else arrays


def _with_fourier(content: jax.Array, grid, num_bands: int, max_resolution) -> jax.Array:
  """content [B, prod(grid), C] -> [B, prod(grid), C + Fourier channels of the grid]."""
  pos = position_encoding.fourier_position_encoding(
    grid, content.shape[0], num_bands, tuple(max_resolution) or None
  )
  return jnp.concatenate([content, pos.astype(content.dtype)], axis=-1)


def mel_filterbank(
  num_bins: int, fft_length: int, sample_rate: int, min_hz: float, max_hz: float
) -> np.ndarray:
  """Triangular HTK-mel filters [fft_length // 2 + 1, num_bins] over the rFFT bins."""

  def to_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz) / 700.0)

  edges = to_mel(min_hz) + (to_mel(max_hz) - to_mel(min_hz)) * np.linspace(0, 1, num_bins + 2)
  bin_mels = to_mel(np.linspace(0, sample_rate / 2, fft_length // 2 + 1))[:, None]
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (bin_mels - lower) / (centre - lower)
  falling = (upper - bin_mels) / (upper - centre)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel_spectrogram(audio: jax.Array, acfg: ml_collections.ConfigDict) -> jax.Array:
  """[B, num_samples] -> standardised log-mel [B, num_samples // hop, num_mel_bins].

  Frames start every `hop_length` samples; the signal is zero-padded by
  (fft_length - hop_length) / 2 on each side so frame i is centred on hop i's centre.
  """
  hop, fft = acfg.hop_length, acfg.fft_length
  pad = (fft - hop) // 2
  padded = jnp.pad(audio, ((0, 0), (pad, pad)))
  num_frames = audio.shape[1] // hop
  index = hop * np.arange(num_frames)[:, None] + np.arange(fft)[None, :]  # [F, fft]
  frames = padded[:, index] * jnp.hanning(fft).astype(audio.dtype)  # [B, F, fft]
  power = jnp.abs(jnp.fft.rfft(frames.astype(jnp.float32), axis=-1)) ** 2
  filters = mel_filterbank(
    acfg.num_mel_bins, fft, acfg.sample_rate, acfg.mel_min_hz, acfg.mel_max_hz
  )
  log_mel = jnp.log(power @ filters + 1e-6)  # [B, F, mel]
  mean = jnp.mean(log_mel, axis=(1, 2), keepdims=True)
  std = jnp.std(log_mel, axis=(1, 2), keepdims=True)
  return (log_mel - mean) / (std + 1e-5)


def _band_masks(key: jax.Array, batch: int, size: int, num: int, max_width: int) -> jax.Array:
  """[B, size] bool, True inside `num` bands of width uniform in [0, max_width] per example."""
  width_key, start_key = jax.random.split(key)
  widths = jax.random.randint(width_key, (batch, num, 1), 0, max_width + 1)
  starts = jax.random.randint(start_key, (batch, num, 1), 0, size - widths + 1)
  index = jnp.arange(size)
  return jnp.any((index >= starts) & (index < starts + widths), axis=1)


def spec_augment(spec: jax.Array, key: jax.Array, acfg: ml_collections.ConfigDict) -> jax.Array:
  """SpecAugment's time and frequency masking of spec [B, frames, bins] (set to 0, the mean)."""
  batch, frames, bins = spec.shape
  time_key, freq_key = jax.random.split(key)
  time = _band_masks(time_key, batch, frames, acfg.num_time_masks, acfg.max_time_mask)
  freq = _band_masks(freq_key, batch, bins, acfg.num_freq_masks, acfg.max_freq_mask)
  return jnp.where(time[:, :, None] | freq[:, None, :], 0.0, spec)


class AudioPreprocessor(hk.Module):
  """Mono audio [B, num_samples] -> raw patches or log-mel values with Fourier features."""

  def __init__(self, acfg: ml_collections.ConfigDict, name: str = "audio_preprocessor"):
    super().__init__(name=name)
    self._cfg = acfg

  def __call__(self, audio: jax.Array, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    acfg = self._cfg
    if audio.ndim != 2 or audio.shape[1] != acfg.num_samples:
      raise ValueError(f"audio must be [B, {acfg.num_samples}] samples, got shape {audio.shape}")
    grid = audio_grid(acfg)
    if acfg.prep == "raw":
      content = audio.reshape(audio.shape[0], grid[0], acfg.samples_per_patch)  # [B, 480, 128]
    else:
      spec = log_mel_spectrogram(audio, acfg)  # [B, 120, 40]
      if is_training and (acfg.num_time_masks or acfg.num_freq_masks):
        spec = spec_augment(spec, hk.next_rng_key(), acfg)
      content = spec.reshape(audio.shape[0], -1, 1).astype(audio.dtype)  # [B, 4800, 1]
    return _with_fourier(content, grid, acfg.num_bands, acfg.max_resolution), content


def video_patches(video: jax.Array, patch_shape) -> jax.Array:
  """[B, T, H, W, C] -> [B, (T/pt)(H/py)(W/px), pt*py*px*C]: patches row-major over (t, y, x),
  values inside a patch ordered (dt, dy, dx, channel)."""
  batch, frames, height, width, channels = video.shape
  pt, py, px = patch_shape
  x = video.reshape(batch, frames // pt, pt, height // py, py, width // px, px, channels)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(batch, -1, pt * py * px * channels)


class VideoPreprocessor(hk.Module):
  """Video [B, T, H, W, 3] -> space-time patches with 3-D Fourier features."""

  def __init__(self, vcfg: ml_collections.ConfigDict, name: str = "video_preprocessor"):
    super().__init__(name=name)
    self._cfg = vcfg

  def __call__(self, video: jax.Array, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    del is_training
    vcfg = self._cfg
    expected = (vcfg.num_frames, vcfg.image_size, vcfg.image_size, 3)
    if video.shape[1:] != expected:
      raise ValueError(f"video must be [B, {', '.join(map(str, expected))}], got {video.shape}")
    content = video_patches(video, vcfg.patch_shape)  # [B, 12544, 384]
    return _with_fourier(content, video_grid(vcfg), vcfg.num_bands, vcfg.max_resolution), content


class MultimodalPreprocessor(hk.Module):
  """{"audio": ..., "video": ...} -> one input array [B, M_audio + M_video, C_common]."""

  def __init__(self, av: ml_collections.ConfigDict, name: str = "multimodal_preprocessor"):
    super().__init__(name=name)
    self._cfg = av
    self._modalities = tuple(sorted(av.modalities))
    self._processors = {m: _single_modality(av, m) for m in self._modalities}

  def __call__(self, inputs: dict, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    if set(inputs) != set(self._modalities):
      raise ValueError(f"inputs have modalities {sorted(inputs)}, expected {self._modalities}")
    av = self._cfg
    width = padded_width(av)
    padded, without_pos = [], []
    for modality in self._modalities:
      x = inputs[modality]
      if modality == "video" and is_training and av.video_dropout > 0:
        keep = jax.random.bernoulli(hk.next_rng_key(), 1.0 - av.video_dropout, (x.shape[0],))
        x = x * keep.astype(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
      features, content = self._processors[modality](x, is_training=is_training)
      batch, num, channels = features.shape
      if width > channels:
        padding = position_encoding.TrainablePositionEncoding(
          1, num_channels=width - channels, init_scale=0.02, name=f"{modality}_padding"
        )(batch)  # [B, 1, pad]
        padding = jnp.broadcast_to(padding, (batch, num, width - channels))
        features = jnp.concatenate([features, padding.astype(features.dtype)], axis=-1)
      padded.append(features)
      without_pos.append(jnp.pad(content, ((0, 0), (0, 0), (0, width - content.shape[-1]))))
    return jnp.concatenate(padded, axis=1), jnp.concatenate(without_pos, axis=1)


def _single_modality(av: ml_collections.ConfigDict, modality: str) -> hk.Module:
  if modality == "audio":
    return AudioPreprocessor(av.audio)
  return VideoPreprocessor(av.video)


def build_preprocessor(cfg: ml_collections.ConfigDict):
  """The input processor of `config.model`; call inside a Haiku transform.

  Returns `(inputs, *, is_training) -> (inputs [B, M, C], inputs_without_pos [B, M, C'])`,
  where `inputs` is an array for one modality or a dict {"audio": ..., "video": ...}.
  """
  av = cfg.audio_video
  if len(av.modalities) > 1:
    return MultimodalPreprocessor(av)
  return _single_modality(av, av.modalities[0])
