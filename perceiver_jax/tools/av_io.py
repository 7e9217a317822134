"""Reading and writing audio-video clips for the models: RGB frames and mono float audio.

`read_clip` decodes a video file as the models' inputs need it: frames at a fixed rate (the
frame on screen at each multiple of 1 / fps, as the AudioSet and Kinetics preparation samples
them: the same code, `data/prepare/clips.py`), each centre-cropped to a square and resized
to `size` x `size`, and the first audio stream as mono float audio at `sample_rate`.
`write_clip` writes frames and audio back to a video file, atomically.

Needs PyAV, scipy and soundfile (`pip install -e .[audioset]`).
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math
import os

import av
import numpy as np
from PIL import Image

from perceiver_jax import atomic
from perceiver_jax.data.prepare import clips

# Container format and audio codec by file extension; the video is H.264 (yuv420p) in all.
CONTAINERS = {".mp4": ("mp4", "aac"), ".mov": ("mov", "aac"), ".mkv": ("matroska", "pcm_s16le")}
# Sample rates AAC stores (7,350 Hz too, left out: few players take it); audio at another rate
# is resampled to the next one up.
AAC_RATES = (
  7350,
  8000,
  11025,
  12000,
  16000,
  22050,
  24000,
  32000,
  44100,
  48000,
  64000,
  88200,
  96000,
)
_VIDEO_CODEC = "libx264"
_VIDEO_OPTIONS = {"crf": "18"}  # visually near lossless


class ClipError(ValueError):
  """A clip that cannot be read: missing, corrupt or without a video stream."""


@dataclasses.dataclass(frozen=True)
class Clip:
  """A decoded clip: frames uint8 [T, size, size, 3] and audio float32 [S] in [-1, 1] (None
  for a file without an audio stream), at `fps` and `sample_rate`."""

  frames: np.ndarray
  audio: np.ndarray | None
  fps: int
  sample_rate: int


def _square(frame: av.VideoFrame, size: int) -> np.ndarray:
  """The centre square of the frame (the odd pixel left over at the right/bottom), resized to
  `size` x `size` (bilinear, antialiased when shrinking): uint8 [size, size, 3]."""
  image = frame.to_image()
  side = min(image.size)
  left, top = (image.width - side) // 2, (image.height - side) // 2
  image = image.crop((left, top, left + side, top + side))
  return np.asarray(image.resize((size, size), Image.BILINEAR), np.uint8)


def read_clip(
  path: str, *, fps: int, sample_rate: int, size: int, max_seconds: float | None = None
) -> Clip:
  """Decodes a video file (the first `max_seconds`, or all of it).

  The audio is cut to the frames' duration T / fps (codecs pad the last audio frame). Raises
  ClipError, naming the path and the problem in one line, for a missing or unreadable file or
  one without a video stream.
  """
  if not os.path.isfile(path):
    raise ClipError(f"{path}: no such file")
  seconds = math.inf if max_seconds is None else max_seconds
  try:
    frames = clips.frames_at(path, fps, functools.partial(_square, size=size), seconds)
    try:
      audio = clips.decode_audio(path, sample_rate, seconds)
      audio = np.clip(audio[: round(len(frames) * sample_rate / fps)], -1.0, 1.0)
    except clips.NoAudioError:
      audio = None
  except clips.DECODE_ERRORS as e:
    raise ClipError(f"{path}: {clips.error_line(e)}") from e
  return Clip(np.stack(frames), audio, fps, sample_rate)


def _check(frames: np.ndarray, audio: np.ndarray | None) -> None:
  if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  if frames.shape[1] % 2 or frames.shape[2] % 2:
    raise ValueError(f"frames {frames.shape[1]}x{frames.shape[2]}: H.264 needs even sizes")
  if audio is not None and audio.ndim != 1:
    raise ValueError(f"audio must be mono [S], got shape {audio.shape}")


def write_clip(
  path: str, frames: np.ndarray, audio: np.ndarray | None, *, fps: int, sample_rate: int
) -> None:
  """Writes frames uint8 [T, H, W, 3] (H and W even) at `fps` and, unless None, mono audio
  float32 [S] in [-1, 1] at `sample_rate` to a video file (.mp4, .mov or .mkv: see
  CONTAINERS; AAC audio at a rate it cannot store is resampled to the next rate up). Written
  to a temporary file in the same folder and renamed into place when complete, so `path` is
  never left half-written."""
  extension = os.path.splitext(path)[1].lower()
  if extension not in CONTAINERS:
    raise ValueError(f"{path}: expected one of the extensions {sorted(CONTAINERS)}")
  frames = np.asarray(frames)
  _check(frames, audio)
  container_format, audio_codec = CONTAINERS[extension]
  with atomic.atomic_write(path) as f, av.open(f, "w", format=container_format) as container:
    video = container.add_stream(_VIDEO_CODEC, rate=fps, options=_VIDEO_OPTIONS)
    video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    if audio is not None:  # every stream is added before the first packet is muxed
      rate = sample_rate
      if audio_codec == "aac" and rate not in AAC_RATES:
        rate = min((r for r in AAC_RATES if r > rate), default=AAC_RATES[-1])
      samples = clips.resample(np.asarray(audio, np.float32), sample_rate, rate)
      stream = container.add_stream(audio_codec, rate=rate, layout="mono")
      frame = av.AudioFrame.from_ndarray(
        np.clip(samples, -1.0, 1.0)[None], format="flt", layout="mono"
      )
      frame.sample_rate, frame.pts = rate, 0
      frame.time_base = fractions.Fraction(1, rate)
      container.mux([*stream.encode(frame), *stream.encode()])
    for k, pixels in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
      frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
      container.mux(video.encode(frame))
    container.mux(video.encode())
