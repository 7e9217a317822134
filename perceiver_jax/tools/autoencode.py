"""Reconstruction of a whole clip by the multimodal autoencoder (the library of
`python -m perceiver_jax.autoencode`).

A clip read by `tools.av_io.read_clip` (frames at the model's frame rate, centre-cropped and
resized to its frame size; mono audio at its sample rate) is cut into consecutive windows of
the model's T frames and their audio (a trailing part shorter than a window is dropped, as in
the release's colab). Each window is reconstructed in `chunks` decoder calls, each decoding
1 / chunks of its pixels and audio patches (`subsampled_points`), so memory is that of one
chunk; the label input is zeros and masked, as at evaluation, and its logits are the model's
prediction of the class. The model is compiled once for one chunk shape.

The model's frame rate is 25 fps (Kinetics, as prepared); its sample rate is then
25 x samples per frame (48 kHz released: 30,720 samples for 16 frames).
"""

from __future__ import annotations

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax.tasks import autoencoding
from perceiver_jax.tools import av_io

FPS = 25


@dataclasses.dataclass(frozen=True)
class Geometry:
  """One window of the model: T frames of H x H, S audio samples, at `fps` and `sample_rate`."""

  num_frames: int
  image_size: int
  num_samples: int
  num_classes: int
  fps: int = FPS

  @property
  def samples_per_frame(self) -> int:
    return self.num_samples // self.num_frames

  @property
  def sample_rate(self) -> int:
    return self.samples_per_frame * self.fps


def geometry(model_cfg: ml_collections.ConfigDict) -> Geometry:
  """The window of an autoencoder config; ValueError for another kind of model."""
  if model_cfg.modality != "audio_video_label":
    raise ValueError(
      f"config.model.modality={model_cfg.modality!r}: not a multimodal autoencoder "
      "(use configs/kinetics_autoencoding.py)"
    )
  section = model_cfg.audio_video_label
  return Geometry(
    section.image.num_frames,
    section.image.image_size,
    section.audio.num_samples,
    model_cfg.num_classes,
  )


@dataclasses.dataclass(frozen=True)
class Windows:
  """A clip as model windows: frames float32 [W, T, H, H, 3] in [0, 1], audio float32
  [W, S] (zeros where the clip has no audio), and whether it had audio."""

  frames: np.ndarray
  audio: np.ndarray
  has_audio: bool


def read_windows(path: str, geo: Geometry, *, silent_audio: bool) -> Windows:
  """The whole windows of a clip file. ClipError (one line naming the file) for a file that
  cannot be read, is shorter than one window, or has no audio track unless `silent_audio`
  (then the audio input is silence)."""
  clip = av_io.read_clip(path, fps=geo.fps, sample_rate=geo.sample_rate, size=geo.image_size)
  count = len(clip.frames) // geo.num_frames
  if count < 1:
    raise av_io.ClipError(
      f"{path}: {len(clip.frames)} frames at {geo.fps} fps, shorter than the model's window of "
      f"{geo.num_frames} frames ({geo.num_frames / geo.fps:.2f} s)"
    )
  if clip.audio is None and not silent_audio:
    raise av_io.ClipError(
      f"{path}: no audio track; pass --silent_audio to reconstruct it with silence as its audio"
    )
  frames = clip.frames[: count * geo.num_frames].astype(np.float32) / 255.0
  samples = count * geo.num_samples
  audio = np.zeros(samples, np.float32)
  if clip.audio is not None:  # a codec may end the audio a few samples early: silence then
    audio[: min(samples, len(clip.audio))] = clip.audio[:samples]
  return Windows(
    frames.reshape(count, geo.num_frames, geo.image_size, geo.image_size, 3),
    audio.reshape(count, geo.num_samples),
    clip.audio is not None,
  )


@dataclasses.dataclass(frozen=True)
class Reconstruction:
  """frames float32 [W, T, H, H, 3], audio float32 [W, S], label logits [W, K]."""

  frames: np.ndarray
  audio: np.ndarray
  logits: np.ndarray


def window_model(
  forward: hk.TransformedWithState, params: hk.Params, state: hk.State, geo: Geometry, chunks: int
):
  """`reconstruct(frames [T, H, H, 3], audio [S]) -> (frames, audio, logits [K])` of one
  window, decoded in `chunks` calls of one compiled shape (the last chunk repeats the last
  point; the repeats are dropped)."""
  num_pixels = geo.num_frames * geo.image_size**2
  label = jnp.zeros((1, geo.num_classes), jnp.float32)  # masked at evaluation

  def outputs(inputs, subsampled_points):
    return forward.apply(
      params, state, None, inputs, is_training=False, subsampled_points=subsampled_points
    )[0]

  frames_shape = (1, geo.num_frames, geo.image_size, geo.image_size, 3)
  window = {
    "image": jax.ShapeDtypeStruct(frames_shape, jnp.float32),
    "audio": jax.ShapeDtypeStruct((1, geo.num_samples), jnp.float32),
    "label": label,
  }
  num_patches = geo.num_samples // autoencoding.samples_per_patch(outputs, window)

  def apply(image, audio, points):
    return outputs({"image": image[None], "audio": audio[None], "label": label}, points)

  @jax.jit
  def chunk(image, audio, k):
    points = {
      "image": autoencoding.chunk_points(k, num_pixels, chunks)[0],
      "audio": autoencoding.chunk_points(k, num_patches, chunks)[0],
    }
    out = apply(image, audio, points)
    return out["image"][0], out["audio"][0], out["label"][0]

  def reconstruct(frames: np.ndarray, audio: np.ndarray):
    pieces = [chunk(frames, audio, k) for k in range(chunks)]
    image = np.concatenate([np.asarray(p[0]) for p in pieces])[:num_pixels]
    sound = np.concatenate([np.asarray(p[1]) for p in pieces])[:num_patches]
    return (
      image.reshape(frames.shape),
      sound.reshape(-1),
      np.asarray(pieces[0][2], np.float32),
    )

  return reconstruct


def reconstruct(reconstruct_window, windows: Windows) -> Reconstruction:
  """Every window of a clip through `window_model`'s function."""
  parts = [reconstruct_window(f, a) for f, a in zip(windows.frames, windows.audio, strict=True)]
  return Reconstruction(*(np.stack(values) for values in zip(*parts, strict=True)))


def psnr(reconstructed: np.ndarray, target: np.ndarray) -> float:
  """PSNR in dB for a peak value of 1 (the task's definition), over all values."""
  mse = np.mean(np.square(np.asarray(reconstructed, np.float64) - target))
  return float(autoencoding.psnr(jnp.asarray(mse, jnp.float32)))


def write(path: str, recon: Reconstruction, geo: Geometry) -> None:
  """The reconstruction as one video file with its audio track (`av_io.write_clip`)."""
  frames = np.clip(recon.frames.reshape(-1, *recon.frames.shape[2:]), 0.0, 1.0)
  av_io.write_clip(
    path,
    np.round(frames * 255.0).astype(np.uint8),
    np.clip(recon.audio.reshape(-1), -1.0, 1.0),
    fps=geo.fps,
    sample_rate=geo.sample_rate,
  )
