"""Audio, video and label input processors and their fusion (AudioSet, Kinetics).

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
  label      a one-hot class [B, K] -> one input of K channels, no position: [B, 1, K] (the
             multimodal autoencoder's third modality).
  audio+video  {"audio": ..., "video": ...}: each modality is padded to a common width with a
             learned per-modality vector (`<modality>_padding`, the same at every position, so
             it doubles as a modality embedding). Modalities are concatenated along M in sorted
             order (audio, then video). In training the whole video of an example is zeroed
             with probability `video_dropout` (0.3 in the paper), before position features and
             paddings are attached. The multimodal autoencoder also replaces inputs by learned
             per-modality mask tokens (`<modality>_mask_token`) with per-modality probabilities.
Fourier features are those of `position_encoding` with max_resolution = the patch grid unless
set: band frequencies then run from 1 up to the grid's Nyquist frequency, so none alias.

The modules take plain arguments; `perceiver_jax.modalities.audio_video` turns the
`config.model.audio_video` section into them.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.models import position_encoding

AUDIO_PREPS = ("raw", "mel")


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


def log_mel_spectrogram(
  audio: jax.Array,
  *,
  sample_rate: int,
  hop_length: int,
  fft_length: int,
  num_mel_bins: int,
  mel_min_hz: float,
  mel_max_hz: float,
) -> jax.Array:
  """[B, num_samples] -> standardised log-mel [B, num_samples // hop_length, num_mel_bins].

  Frames start every `hop_length` samples; the signal is zero-padded by
  (fft_length - hop_length) / 2 on each side so frame i is centred on hop i's centre.
  """
  hop, fft = hop_length, fft_length
  pad = (fft - hop) // 2
  padded = jnp.pad(audio, ((0, 0), (pad, pad)))
  num_frames = audio.shape[1] // hop
  index = hop * np.arange(num_frames)[:, None] + np.arange(fft)[None, :]  # [F, fft]
  frames = padded[:, index] * jnp.hanning(fft).astype(audio.dtype)  # [B, F, fft]
  power = jnp.abs(jnp.fft.rfft(frames.astype(jnp.float32), axis=-1)) ** 2
  filters = mel_filterbank(num_mel_bins, fft, sample_rate, mel_min_hz, mel_max_hz)
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


def spec_augment(
  spec: jax.Array,
  key: jax.Array,
  *,
  num_time_masks: int,
  max_time_mask: int,
  num_freq_masks: int,
  max_freq_mask: int,
) -> jax.Array:
  """SpecAugment's time and frequency masking of spec [B, frames, bins] (set to 0, the mean)."""
  batch, frames, bins = spec.shape
  time_key, freq_key = jax.random.split(key)
  time = _band_masks(time_key, batch, frames, num_time_masks, max_time_mask)
  freq = _band_masks(freq_key, batch, bins, num_freq_masks, max_freq_mask)
  return jnp.where(time[:, :, None] | freq[:, None, :], 0.0, spec)


class AudioPreprocessor(hk.Module):
  """Mono audio [B, num_samples] -> raw patches or log-mel values with Fourier features.

  `prep` is 'raw' (patches of `samples_per_patch` samples, a 1-D grid) or 'mel' (one input
  per (frame, mel bin) of `log_mel_spectrogram`, a 2-D grid, with SpecAugment in training).
  `max_resolution` () means the grid itself.
  """

  def __init__(
    self,
    *,
    prep: str,
    num_samples: int,
    samples_per_patch: int,
    num_bands: int,
    max_resolution: Sequence[float] = (),
    sample_rate: int = 48_000,
    hop_length: int = 512,
    fft_length: int = 1024,
    num_mel_bins: int = 40,
    mel_min_hz: float = 20.0,
    mel_max_hz: float = 24_000.0,
    num_time_masks: int = 0,
    max_time_mask: int = 0,
    num_freq_masks: int = 0,
    max_freq_mask: int = 0,
    name: str = "audio_preprocessor",
  ):
    super().__init__(name=name)
    if prep not in AUDIO_PREPS:
      raise ValueError(f"audio prep must be one of {AUDIO_PREPS}, got {prep!r}")
    self._prep = prep
    self._num_samples = num_samples
    self._samples_per_patch = samples_per_patch
    self._num_bands = num_bands
    self._max_resolution = tuple(max_resolution)
    self._mel = dict(
      sample_rate=sample_rate,
      hop_length=hop_length,
      fft_length=fft_length,
      num_mel_bins=num_mel_bins,
      mel_min_hz=mel_min_hz,
      mel_max_hz=mel_max_hz,
    )
    self._masks = dict(
      num_time_masks=num_time_masks,
      max_time_mask=max_time_mask,
      num_freq_masks=num_freq_masks,
      max_freq_mask=max_freq_mask,
    )

  def __call__(self, audio: jax.Array, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    """audio [B, num_samples] -> (inputs [B, M, C + C_ff], inputs_without_pos [B, M, C])."""
    if audio.ndim != 2 or audio.shape[1] != self._num_samples:
      raise ValueError(f"audio must be [B, {self._num_samples}] samples, got shape {audio.shape}")
    if self._prep == "raw":
      grid = (self._num_samples // self._samples_per_patch,)
      content = audio.reshape(audio.shape[0], grid[0], self._samples_per_patch)  # [B, 480, 128]
    else:
      spec = log_mel_spectrogram(audio, **self._mel)  # [B, 120, 40]
      grid = spec.shape[1:]
      if is_training and (self._masks["num_time_masks"] or self._masks["num_freq_masks"]):
        spec = spec_augment(spec, hk.next_rng_key(), **self._masks)
      content = spec.reshape(audio.shape[0], -1, 1).astype(audio.dtype)  # [B, 4800, 1]
    return _with_fourier(content, grid, self._num_bands, self._max_resolution), content


def video_patches(video: jax.Array, patch_shape) -> jax.Array:
  """[B, T, H, W, C] -> [B, (T/pt)(H/py)(W/px), pt*py*px*C]: patches row-major over (t, y, x),
  values inside a patch ordered (dt, dy, dx, channel)."""
  batch, frames, height, width, channels = video.shape
  pt, py, px = patch_shape
  x = video.reshape(batch, frames // pt, pt, height // py, py, width // px, px, channels)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(batch, -1, pt * py * px * channels)


class VideoPreprocessor(hk.Module):
  """Video [B, T, H, W, 3] -> space-time patches of `patch_shape` (t, y, x) with 3-D Fourier
  features of the patch grid (`max_resolution` () means the grid itself)."""

  def __init__(
    self,
    *,
    num_frames: int,
    image_size: int,
    patch_shape: Sequence[int],
    num_bands: int,
    max_resolution: Sequence[float] = (),
    name: str = "video_preprocessor",
  ):
    super().__init__(name=name)
    self._expected = (num_frames, image_size, image_size, 3)
    self._patch_shape = tuple(patch_shape)
    self._num_bands = num_bands
    self._max_resolution = tuple(max_resolution)

  def __call__(self, video: jax.Array, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    """video [B, T, H, W, 3] -> (inputs [B, M, C + C_ff], inputs_without_pos [B, M, C])."""
    del is_training
    if video.shape[1:] != self._expected:
      raise ValueError(
        f"video must be [B, {', '.join(map(str, self._expected))}], got {video.shape}"
      )
    content = video_patches(video, self._patch_shape)  # [B, 12544, 384]
    grid = tuple(n // p for n, p in zip(self._expected[:3], self._patch_shape, strict=True))
    return _with_fourier(content, grid, self._num_bands, self._max_resolution), content


class OneHotPreprocessor(hk.Module):
  """A one-hot label [B, K] as one input of K channels with no position: [B, 1, K]."""

  def __init__(self, *, num_classes: int, name: str = "one_hot_preprocessor"):
    super().__init__(name=name)
    self._num_classes = num_classes

  def __call__(self, labels: jax.Array, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    """labels [B, K] -> (inputs [B, 1, K], inputs_without_pos [B, 1, K])."""
    del is_training
    if labels.ndim != 2 or labels.shape[1] != self._num_classes:
      raise ValueError(f"labels must be [B, {self._num_classes}] one-hot, got {labels.shape}")
    return labels[:, None, :], labels[:, None, :]


PREPROCESSORS = {
  "audio": AudioPreprocessor,
  "video": VideoPreprocessor,
  "label": OneHotPreprocessor,
}

Processor = Callable[..., tuple[jax.Array, jax.Array]]


class MultimodalPreprocessor(hk.Module):
  """A dict of modalities -> one input array [B, sum of M_m, width].

  `processors` maps each modality (the key of its input) to its processor, `(x, *,
  is_training) -> (inputs [B, M_m, C_m], inputs_without_pos [B, M_m, C'_m])`. Each modality is
  padded to the common `width` with its learned `<modality>_padding` [1, width - C_m], and
  modalities are concatenated along M in sorted order of their names.

  `drop_probs` {modality: p}: in training, zero a modality's whole input of an example with
  probability p, before its position features and padding (AudioSet's video dropout).
  `mask_probs` {modality: p} (every modality, or None for no masking): each padded input is
  replaced by the learned `<modality>_mask_token` [1, width] with probability p in training,
  `eval_mask_probs[modality]` at evaluation (0 or 1, so that evaluation needs no random key).
  A probability of 0 or 1 draws nothing.
  """

  def __init__(
    self,
    processors: Mapping[str, Processor],
    *,
    width: int,
    drop_probs: Mapping[str, float] | None = None,
    mask_probs: Mapping[str, float] | None = None,
    eval_mask_probs: Mapping[str, float] | None = None,
    name: str = "multimodal_preprocessor",
  ):
    super().__init__(name=name)
    self._modalities = tuple(sorted(processors))
    self._processors = dict(processors)
    self._width = width
    self._drop_probs = dict(drop_probs or {})
    self._mask_probs = None if mask_probs is None else dict(mask_probs)
    self._eval_mask_probs = dict(eval_mask_probs or self._mask_probs or {})
    if self._mask_probs is not None:
      for probs in (self._mask_probs, self._eval_mask_probs):
        if set(probs) != set(self._modalities):
          raise ValueError(f"mask probabilities for {sorted(probs)}, modalities {self._modalities}")
      for modality, p in self._eval_mask_probs.items():
        if p not in (0.0, 1.0):
          raise ValueError(f"evaluation mask probability of {modality!r} is {p}: must be 0 or 1")

  def _mask(self, modality: str, x: jax.Array, token: jax.Array, *, is_training: bool):
    """x [B, M, width] with each input replaced by `token` [1, width] with the modality's
    probability."""
    p = (self._mask_probs if is_training else self._eval_mask_probs)[modality]
    if p == 0.0:
      return x
    if p == 1.0:
      return jnp.broadcast_to(token.astype(x.dtype), x.shape)
    masked = jax.random.bernoulli(hk.next_rng_key(), p, x.shape[:2])[..., None]  # [B, M, 1]
    return jnp.where(masked, token.astype(x.dtype), x)

  def __call__(self, inputs: dict, *, is_training: bool) -> tuple[jax.Array, jax.Array]:
    """Returns (inputs [B, M, width], inputs_without_pos [B, M, width], zero-padded)."""
    if set(inputs) != set(self._modalities):
      raise ValueError(f"inputs have modalities {sorted(inputs)}, expected {self._modalities}")
    width = self._width
    padded, without_pos = [], []
    for modality in self._modalities:
      x = inputs[modality]
      drop = self._drop_probs.get(modality, 0.0)
      if is_training and drop > 0:
        keep = jax.random.bernoulli(hk.next_rng_key(), 1.0 - drop, (x.shape[0],))
        x = x * keep.astype(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
      features, content = self._processors[modality](x, is_training=is_training)
      batch, num, channels = features.shape
      if width > channels:
        padding = position_encoding.TrainablePositionEncoding(
          1, num_channels=width - channels, init_scale=0.02, name=f"{modality}_padding"
        )(batch)  # [B, 1, pad]
        padding = jnp.broadcast_to(padding, (batch, num, width - channels))
        features = jnp.concatenate([features, padding.astype(features.dtype)], axis=-1)
      if self._mask_probs is not None:
        # Built here, in `__call__`, for the release's parameter path.
        token = position_encoding.TrainablePositionEncoding(
          1, num_channels=width, init_scale=0.02, name=f"{modality}_mask_token"
        )(None)  # [1, width]
        features = self._mask(modality, features, token, is_training=is_training)
      padded.append(features)
      without_pos.append(jnp.pad(content, ((0, 0), (0, 0), (0, width - content.shape[-1]))))
    return jnp.concatenate(padded, axis=1), jnp.concatenate(without_pos, axis=1)
