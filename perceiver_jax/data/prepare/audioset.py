"""Turns AudioSet segment CSVs and downloaded clips into array_record shards for training.

`scripts/prepare_audioset.py` is its command line (`pip install -e .[audioset]`: PyAV and
soundfile).

Inputs: the official CSVs (3 '#' comment lines, then `YTID, start_seconds, end_seconds,
"mid1,mid2"`; `class_labels_indices.csv` with the header `index,mid,display_name`) and a folder
(searched recursively) of clips that hold only their 10 s segment, named in one of the ways
the common downloaders name them (tried in this order; extensions in any case):
  <YTID>_<start_ms>_<end_ms>.<ext>   audiosetdl (e.g. --PJHxphWEs_30000_40000.mp4 + .flac)
  <YTID>_<start_ms>.<ext>
  <YTID>.<ext>, Y<YTID>.<ext>        whole-segment dumps (the 'Y' prefix of the PANNs scripts)
<ext> is a video container (mp4, mkv, webm) and/or an audio file (wav, flac). The audio comes
from the audio file if there is one, else from the container's audio stream.

Output: OUTPUT_DIR/<split>-NNNNN.array_record (split = the CSV name without `_segments`), one
record per clip (`perceiver_jax.data.audioset.encode_example`): mono audio resampled to
`Options.sample_rate` (48 kHz) with scipy.signal.resample_poly, stored as int16; frames at
`Options.fps` (25: the frame shown at each multiple of 40 ms) with the shorter side resized to
`Options.frame_size` (256, so training can take random 224 crops) and stored as JPEG
(`Options.jpeg_quality` 90); the labels' class indices. A 10 s clip is about 1 MB of audio plus
roughly 250 x 15 KB of frames, so the full 2M-clip set needs some 10 TB with video, 2 TB
without (`Options.with_video=False`, for the audio-only models).
Clips that are missing or that cannot be decoded are skipped and counted; the counts and the
skipped YTIDs are returned per split and written to OUTPUT_DIR/<split>.json. A malformed
CSV line raises a ValueError naming the file and the line.

The clip search, the decoding and the shard writer (`write_split`: a pool of decoding
processes, shards renamed into place and the summary written last) are shared with the other
clip datasets (`prepare/kinetics.py`) and `tools/av_io.py`.
"""

from __future__ import annotations

import csv
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

# The official CSVs start with comment lines ("# Segments csv created ..."), then rows of
# this many fields.
_SEGMENT_FIELDS = 4


@dataclasses.dataclass(frozen=True)
class Segment:
  """One row of a segment CSV: a 10 s (or shorter) piece of a YouTube video."""

  ytid: str
  start_seconds: float
  end_seconds: float
  labels: tuple[int, ...]


def read_class_indices(path: str) -> dict[str, int]:
  """`class_labels_indices.csv` (header `index,mid,display_name`) -> {mid: index}."""
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  if not rows or [c.strip() for c in rows[0][:2]] != ["index", "mid"]:
    raise ValueError(f"{path}:1: expected the header 'index,mid,display_name'")
  indices = {}
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    try:
      index, mid = int(row[0]), row[1].strip()
    except (ValueError, IndexError):
      raise ValueError(f"{path}:{line}: expected 'index,mid,display_name', got {row!r}") from None
    if index != len(indices) or mid in indices:
      raise ValueError(f"{path}:{line}: index {index} / mid {mid!r} out of order or repeated")
    indices[mid] = index
  return indices


def read_segments(path: str, class_indices: dict[str, int]) -> list[Segment]:
  """A segment CSV: '#' comment lines, then `YTID, start_seconds, end_seconds, "mid1,mid2"`.

  A malformed line raises ValueError naming the file and the line number.
  """
  segments = []
  with open(path, newline="", encoding="utf-8") as f:
    for line, row in enumerate(csv.reader(f, skipinitialspace=True), start=1):
      if not row or row[0].startswith("#"):
        continue
      if len(row) != _SEGMENT_FIELDS:
        raise ValueError(
          f"{path}:{line}: expected 4 fields 'YTID, start, end, \"labels\"', got {len(row)}"
        )
      ytid, start, end, mids = (field.strip() for field in row)
      try:
        start_s, end_s = float(start), float(end)
      except ValueError:
        raise ValueError(f"{path}:{line}: start/end {start!r}, {end!r} are not numbers") from None
      if not ytid or not 0 <= start_s < end_s:
        raise ValueError(f"{path}:{line}: bad segment {ytid!r} [{start_s}, {end_s})")
      unknown = [m for m in mids.split(",") if m not in class_indices]
      if unknown or not mids:
        raise ValueError(f"{path}:{line}: unknown label mid(s) {unknown or [mids]}")
      labels = tuple(sorted({class_indices[m] for m in mids.split(",")}))
      segments.append(Segment(ytid, start_s, end_s, labels))
  return segments


def split_name(csv_path: str) -> str:
  """`.../balanced_train_segments.csv` -> `balanced_train`."""
  return os.path.basename(csv_path).removesuffix(".csv").removesuffix("_segments")


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


def segment_stems(segment: Segment) -> tuple[str, ...]:
  """The file names (without extension) an AudioSet clip may have, in the order tried."""
  start_ms, end_ms = round(segment.start_seconds * 1000), round(segment.end_seconds * 1000)
  ytid = segment.ytid
  return f"{ytid}_{start_ms}_{end_ms}", f"{ytid}_{start_ms}", ytid, f"Y{ytid}"


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
  audio = _head(audio, max_seconds, rate)
  if rate != target_rate:
    g = math.gcd(rate, target_rate)
    audio = scipy.signal.resample_poly(audio, target_rate // g, rate // g).astype(np.float32)
  return _head(audio, max_seconds, target_rate)


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


def prepare_split(
  csv_path: str,
  class_indices: dict[str, int],
  clip_index: dict[str, list[str]],
  output_dir: str,
  options: Options,
  *,
  examples_per_shard: int = 1024,
  num_workers: int = 1,
) -> dict:
  """Writes one CSV's clips as shards; returns the counts (also written to <split>.json)."""
  jobs = [
    Job(s.ytid, load_segment, (s, *find_clip(segment_stems(s), clip_index), options))
    for s in read_segments(csv_path, class_indices)
  ]
  return write_split(
    jobs,
    output_dir,
    split_name(csv_path),
    examples_per_shard=examples_per_shard,
    num_workers=num_workers,
  )


def prepare(
  class_labels: str,
  segment_csvs: list[str],
  clips_dir: str,
  output_dir: str,
  options: Options,
  *,
  examples_per_shard: int = 1024,
  num_workers: int = 1,
) -> list[dict]:
  """`prepare_split` for each segment CSV; returns their summaries."""
  class_indices = read_class_indices(class_labels)
  clip_index = index_clips(clips_dir)
  return [
    prepare_split(
      csv_path,
      class_indices,
      clip_index,
      output_dir,
      options,
      examples_per_shard=examples_per_shard,
      num_workers=num_workers,
    )
    for csv_path in segment_csvs
  ]


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
