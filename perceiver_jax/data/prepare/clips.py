"""Decodes downloaded audio-video clips and writes them as array_record shards.

The machinery that the clip datasets' preparations (`prepare/audioset.py`,
`prepare/kinetics.py`) share, and that `tools/av_io.py` reads clips with: a dataset module
reads its CSVs into `Segment`s, names the files a clip may have, and hands one `Job` per clip
to `write_split`.

Clips: `index_clips` lists the clip files under a folder (searched recursively) by name without
extension; `find_clip` picks a clip's video container (mp4, mkv, webm) and/or audio file (wav,
flac), extensions in any case. The audio comes from the audio file if there is one, else from
the container's first audio stream.

Records: one per clip, `perceiver_jax.data.audioset.encode_example`: mono audio resampled to
`Options.sample_rate` (48 kHz) with scipy.signal.resample_poly, stored as int16; frames at
`Options.fps` (25: the frame on screen at each multiple of 40 ms, `frames_at`) with the
shorter side resized to `Options.frame_size` (256, so training can take random 224 crops) and
stored as JPEG (`Options.jpeg_quality` 90); the clip's class indices.

Writing (`write_split`): the records go, in the jobs' order, through a pool of decoding
processes to OUTPUT_DIR/<split>-NNNNN.array_record. The shards are written under hidden
`.<split>-NNNNN.partial` names and renamed into place (replacing the split's old shards) only
when all are complete; the summary OUTPUT_DIR/<split>.json (counts, skipped clips) is removed
first and written last, atomically. A run that fails leaves no summary and no partial shards,
so an unfinished split does not look finished. Clips that are missing or cannot be decoded
are skipped and counted, not fatal.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import io
import json
import math
import multiprocessing
import os
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import av
import numpy as np
import scipy.signal
import soundfile
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from perceiver_jax import atomic
from perceiver_jax.data import audioset

VIDEO_EXTS = (".mp4", ".mkv", ".webm")
AUDIO_EXTS = (".wav", ".flac")

# What decoding a damaged or unsupported file raises (PyAV, soundfile, PIL).
DECODE_ERRORS = (ValueError, OSError, RuntimeError, av.FFmpegError)


class NoAudioError(ValueError):
  """A container without an audio stream."""


def error_line(error: BaseException) -> str:
  """A decoding error in one line, without the path (the caller names the clip)."""
  if isinstance(error, av.FFmpegError) and error.strerror:
    return error.strerror
  return str(error).splitlines()[0] if str(error) else type(error).__name__


@dataclasses.dataclass(frozen=True)
class Segment:
  """One clip of a CSV: a piece of a YouTube video (an AudioSet segment, a Kinetics clip)."""

  ytid: str
  start_seconds: float
  end_seconds: float
  labels: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Options:
  """How clips are stored: audio rate, frame rate, frame size and JPEG quality, video or not.

  `silent_without_audio`: a container without an audio stream is stored with silent audio
  as long as its frames, instead of failing with NoAudioError.
  """

  sample_rate: int = audioset.SAMPLE_RATE
  fps: int = audioset.FPS
  frame_size: int = 256
  jpeg_quality: int = 90
  with_video: bool = True
  silent_without_audio: bool = False


def index_clips(clips_dir: str) -> dict[str, list[str]]:
  """{file name without extension: [paths]} for every clip file under `clips_dir`."""
  if not os.path.isdir(clips_dir):
    raise ValueError(f"--clips_dir={clips_dir!r} is not a directory")
  index = {}
  for root, _, files in os.walk(clips_dir):
    for name in sorted(files):
      stem, ext = os.path.splitext(name)
      if ext.lower() in VIDEO_EXTS + AUDIO_EXTS:
        index.setdefault(stem, []).append(os.path.join(root, name))
  return index


def find_clip(stems: Sequence[str], index: dict[str, list[str]]) -> tuple[str, str]:
  """(video path, audio path) of the first of `stems` with a clip file; '' where none."""
  for stem in stems:
    paths = index.get(stem, [])
    video = next((p for p in paths if p.lower().endswith(VIDEO_EXTS)), "")
    audio = next((p for p in paths if p.lower().endswith(AUDIO_EXTS)), "")
    if video or audio:
      return video, audio
  return "", ""


def _head(samples: np.ndarray, seconds: float, rate: int) -> np.ndarray:
  """The first `seconds` (any float, inf included) of samples at `rate`."""
  return samples if seconds * rate >= len(samples) else samples[: int(seconds * rate)]


def pcm16(audio: np.ndarray) -> np.ndarray:
  """float [S] in [-1, 1] -> int16 [S] (values beyond the range are clipped)."""
  return (np.clip(audio, -1.0, 1.0 - 1 / 32768) * 32768).astype(np.int16)


def decode_audio(path: str, target_rate: int, max_seconds: float = math.inf) -> np.ndarray:
  """Mono float32 [S] at `target_rate` of an audio file or a container's first audio stream.

  Resampled with scipy.signal.resample_poly (polyphase), so values may overshoot [-1, 1]
  slightly. Raises NoAudioError for a container without an audio stream.
  """
  if path.lower().endswith(AUDIO_EXTS):
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    audio = samples.mean(axis=1)
  else:
    with av.open(path) as container:
      if not container.streams.audio:
        raise NoAudioError("no audio stream")
      rate = container.streams.audio[0].rate
      resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
      chunks = [
        out.to_ndarray().reshape(-1)
        for frame in [*container.decode(audio=0), None]
        for out in resampler.resample(frame)
      ]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
  if audio.size == 0:
    raise ValueError("no audio samples")
  audio = resample(_head(audio, max_seconds, rate), rate, target_rate)
  return _head(audio, max_seconds, target_rate)


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
  """float32 [S] at `rate` -> at `target_rate` (scipy.signal.resample_poly, polyphase)."""
  if rate == target_rate:
    return audio
  g = math.gcd(rate, target_rate)
  return scipy.signal.resample_poly(audio, target_rate // g, rate // g).astype(np.float32)


def _jpeg(frame: av.VideoFrame, size: int, quality: int) -> bytes:
  """The frame with its shorter side resized to `size`, as JPEG bytes."""
  image = frame.to_image()
  scale = size / min(image.size)
  shape = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
  image = image.resize(shape, Image.BILINEAR)
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def frames_at(
  path: str, fps: int, convert: Callable[[av.VideoFrame], Any], max_seconds: float = math.inf
) -> list:
  """`convert(frame)` of the frame on screen at each target time k / fps of a video file.

  Times count from the first decoded frame; the clip ends one frame period after its last
  frame, or at `max_seconds`. A source frame is converted once, and only if some target time
  shows it: the targets that show it share the result. Raises ValueError for a file without
  a video stream, frames or timestamps.
  """
  frames, shown, converted, end = [], None, None, max_seconds
  with av.open(path) as container:
    if not container.streams.video:
      raise ValueError("no video stream")
    stream = container.streams.video[0]
    period = 1.0 / float(stream.average_rate or fps)
    first = None
    for frame in container.decode(video=0):
      if frame.time is None:
        raise ValueError("video frames without timestamps")
      first = frame.time if first is None else first
      time = frame.time - first
      # Targets before this frame's time show the previous frame.
      while shown is not None and len(frames) / fps < min(time, max_seconds) - 1e-4:
        converted = convert(shown) if converted is None else converted
        frames.append(converted)
      if time >= max_seconds:
        break
      shown, converted, end = frame, None, min(time + period, max_seconds)
  if shown is None:
    raise ValueError("no video frames")
  while len(frames) < math.floor(end * fps + 1e-6):
    converted = convert(shown) if converted is None else converted
    frames.append(converted)
  return frames


def decode_video(path: str, options: Options, max_seconds: float) -> list[bytes]:
  """JPEG frames at `options.fps` (see `frames_at`), shorter side `options.frame_size`."""
  jpeg = functools.partial(_jpeg, size=options.frame_size, quality=options.jpeg_quality)
  return frames_at(path, options.fps, jpeg, max_seconds)


def load_clip(segment: Segment, video: str, audio: str, options: Options) -> bytes:
  """The record of one clip; raises one of DECODE_ERRORS on a file that cannot be decoded."""
  max_seconds = segment.end_seconds - segment.start_seconds
  try:  # the audio first: a clip without audio fails before its frames are decoded
    samples = decode_audio(audio or video, options.sample_rate, max_seconds)
  except NoAudioError:
    if not options.silent_without_audio:
      raise
    samples = None
  frames = decode_video(video, options, max_seconds) if options.with_video else []
  if samples is None:
    samples = np.zeros(len(frames) * options.sample_rate // options.fps, np.float32)
  return audioset.encode_example(
    segment.ytid,
    segment.start_seconds,
    segment.labels,
    pcm16(samples),
    frames,
    fps=options.fps,
    sample_rate=options.sample_rate,
  )


class SkipClip(Exception):
  """Raised by a job's loader for a clip that is not written; `kind` names its count."""

  def __init__(self, kind: str, detail: str = ""):
    super().__init__(detail)
    self.kind = kind


class Job(NamedTuple):
  """One clip for `write_split`: `load(*args)` makes its record (or raises SkipClip or one of
  DECODE_ERRORS). `load` is a module-level function, so that it pickles to the workers."""

  name: str  # the clip's id in the summary's list of skipped clips
  load: Callable[..., bytes]
  args: tuple


def load_segment(segment: Segment, video: str, audio: str, options: Options) -> bytes:
  """`load_clip`, or SkipClip('missing') when the files it needs were not found."""
  if not (video or audio) or (options.with_video and not video):
    raise SkipClip("missing")
  return load_clip(segment, video, audio, options)


def segment_jobs(
  segments: Sequence[Segment],
  stems: Callable[[Segment], Sequence[str]],
  clip_index: dict[str, list[str]],
  options: Options,
  load: Callable[[Segment, str, str, Options], bytes] = load_segment,
) -> list[Job]:
  """One job per segment: `load(segment, video, audio, options)` with the files of the first
  of `stems(segment)` (the dataset's names for the clip) that `clip_index` holds."""
  return [Job(s.ytid, load, (s, *find_clip(stems(s), clip_index), options)) for s in segments]


def _run(job: Job) -> tuple[str, bytes | str]:
  """('ok', record) or (kind, 'name[: problem]') for one job."""
  try:
    return "ok", job.load(*job.args)
  except SkipClip as e:
    return e.kind, f"{job.name}: {e}" if str(e) else job.name
  except DECODE_ERRORS as e:
    return "unreadable", f"{job.name}: {error_line(e)}"


def _results(jobs: Sequence[Job], num_workers: int) -> Iterator[tuple[str, bytes | str]]:
  if num_workers <= 1:
    yield from map(_run, jobs)
    return
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    yield from pool.imap(_run, jobs, chunksize=4)


# The summary's fields other than the skip counts.
_SUMMARY_FIELDS = ("split", "shards", "segments", "written", "skipped")


def write_split(
  jobs: Sequence[Job],
  output_dir: str,
  split: str,
  *,
  skip_kinds: Sequence[str] = ("missing", "unreadable"),
  examples_per_shard: int = 1024,
  num_workers: int = 1,
) -> dict:
  """Writes the jobs' records, in order, to OUTPUT_DIR/<split>-NNNNN.array_record.

  Returns the summary {split, shards, segments (jobs), written, one count per skip kind,
  skipped: ['<kind> <name>[: problem]', ...]}, also written to OUTPUT_DIR/<split>.json. That
  file is removed first and written last, and the shards are written under hidden temporary
  names and renamed into place (replacing the split's old shards) only when all are complete:
  a run that fails leaves no summary, so an unfinished split does not look finished.
  """
  os.makedirs(output_dir, exist_ok=True)
  summary_path = os.path.join(output_dir, f"{split}.json")
  if os.path.exists(summary_path):
    os.remove(summary_path)
  counts = {"segments": len(jobs), "written": 0, **dict.fromkeys(skip_kinds, 0)}
  skipped, partial, writer = [], [], None
  try:
    for status, value in _results(jobs, num_workers):
      if status != "ok":
        counts[status] += 1
        skipped.append(f"{status} {value}")
        continue
      if counts["written"] % examples_per_shard == 0:
        if writer is not None:
          writer.close()
        path = os.path.join(output_dir, f".{split}-{len(partial):05d}.partial")
        writer = ArrayRecordWriter(path, "group_size:1")
        partial.append(path)
      writer.write(value)
      counts["written"] += 1
  except BaseException:
    if writer is not None:
      writer.close()
    for path in partial:
      os.remove(path)
    raise
  if writer is not None:
    writer.close()
  pattern = f"{glob.escape(split)}-[0-9][0-9][0-9][0-9][0-9].array_record"
  for old in glob.glob(os.path.join(glob.escape(output_dir), pattern)):
    os.remove(old)
  for shard, path in enumerate(partial):
    os.replace(path, os.path.join(output_dir, f"{split}-{shard:05d}.array_record"))
  summary = {"split": split, "shards": len(partial), **counts, "skipped": skipped}
  with atomic.atomic_write(summary_path, "w") as f:
    json.dump(summary, f, indent=1)
  return summary


def describe(summary: dict) -> str:
  """One line about one split's summary: clips written, shards, skipped and a few examples."""
  kinds = [key for key in summary if key not in _SUMMARY_FIELDS]
  skipped = sum(summary[kind] for kind in kinds)
  return (
    f"{summary['split']}: wrote {summary['written']} of {summary['segments']} clips to "
    f"{summary['shards']} shards; skipped {skipped} ("
    + ", ".join(f"{kind} {summary[kind]}" for kind in kinds)
    + ")"
    + (f", e.g. {'; '.join(summary['skipped'][:3])}" if skipped else "")
  )
