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
first few YTIDs are returned per split and written to OUTPUT_DIR/<split>.json. A malformed
CSV line raises a ValueError naming the file and the line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import multiprocessing
import os
from collections.abc import Iterator

import av
import numpy as np
import scipy.signal
import soundfile
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

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


@dataclasses.dataclass(frozen=True)
class Options:
  """How clips are stored: audio rate, frame rate, frame size and JPEG quality, video or not."""

  sample_rate: int = audioset.SAMPLE_RATE
  fps: int = audioset.FPS
  frame_size: int = 256
  jpeg_quality: int = 90
  with_video: bool = True


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


def find_clip(segment: Segment, index: dict[str, list[str]]) -> tuple[str, str]:
  """(video path, audio path) of a segment; '' where there is none."""
  start_ms, end_ms = round(segment.start_seconds * 1000), round(segment.end_seconds * 1000)
  ytid = segment.ytid
  for stem in (f"{ytid}_{start_ms}_{end_ms}", f"{ytid}_{start_ms}", ytid, f"Y{ytid}"):
    paths = index.get(stem, [])
    video = next((p for p in paths if p.lower().endswith(VIDEO_EXTS)), "")
    audio = next((p for p in paths if p.lower().endswith(AUDIO_EXTS)), "")
    if video or audio:
      return video, audio
  return "", ""


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
  """float [S] at `rate` -> int16 at `target` (polyphase, scipy)."""
  if rate != target:
    g = math.gcd(rate, target)
    audio = scipy.signal.resample_poly(audio, target // g, rate // g)
  return (np.clip(audio, -1.0, 1.0 - 1 / 32768) * 32768).astype(np.int16)


def decode_audio(path: str, target_rate: int, max_seconds: float) -> np.ndarray:
  """Mono int16 [S] at `target_rate` of an audio file or a container's first audio stream."""
  if path.lower().endswith(AUDIO_EXTS):
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    audio = samples.mean(axis=1)
  else:
    with av.open(path) as container:
      if not container.streams.audio:
        raise ValueError("no audio stream")
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
  audio = _resample(audio[: int(max_seconds * rate)], rate, target_rate)
  return audio[: int(max_seconds * target_rate)]


def _jpeg(frame: av.VideoFrame, size: int, quality: int) -> bytes:
  """The frame with its shorter side resized to `size`, as JPEG bytes."""
  image = frame.to_image()
  scale = size / min(image.size)
  shape = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
  image = image.resize(shape, Image.BILINEAR)
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def decode_video(path: str, options: Options, max_seconds: float) -> list[bytes]:
  """JPEG frames at `options.fps`: for each target time k / fps, the frame on screen then.

  Times count from the first decoded frame; the clip ends one frame period after its last
  frame, or at `max_seconds`. A source frame is encoded only if some target time shows it.
  """
  frames, shown, encoded, end = [], None, b"", max_seconds
  with av.open(path) as container:
    if not container.streams.video:
      raise ValueError("no video stream")
    stream = container.streams.video[0]
    period = 1.0 / float(stream.average_rate or options.fps)
    first = None
    for frame in container.decode(video=0):
      if frame.time is None:
        raise ValueError("video frames without timestamps")
      first = frame.time if first is None else first
      time = frame.time - first
      # Targets before this frame's time show the previous frame.
      while shown is not None and len(frames) / options.fps < min(time, max_seconds) - 1e-4:
        encoded = encoded or _jpeg(shown, options.frame_size, options.jpeg_quality)
        frames.append(encoded)
      if time >= max_seconds:
        break
      shown, encoded, end = frame, b"", min(time + period, max_seconds)
  if shown is None:
    raise ValueError("no video frames")
  while len(frames) < math.floor(end * options.fps + 1e-6):
    encoded = encoded or _jpeg(shown, options.frame_size, options.jpeg_quality)
    frames.append(encoded)
  return frames


def load_clip(segment: Segment, video: str, audio: str, options: Options) -> bytes:
  """The record of one clip; raises (ValueError, OSError, RuntimeError, av.FFmpegError) on a
  file that cannot be decoded."""
  max_seconds = segment.end_seconds - segment.start_seconds
  frames = decode_video(video, options, max_seconds) if options.with_video else []
  samples = decode_audio(audio or video, options.sample_rate, max_seconds)
  return audioset.encode_example(
    segment.ytid,
    segment.start_seconds,
    segment.labels,
    samples,
    frames,
    fps=options.fps,
    sample_rate=options.sample_rate,
  )


def _work(task) -> tuple[str, bytes | str]:
  """('ok', record), ('missing', ytid) or ('unreadable', 'ytid: problem') for one segment."""
  segment, video, audio, options = task
  if not (video or audio) or (options.with_video and not video):
    return "missing", segment.ytid
  try:
    return "ok", load_clip(segment, video, audio, options)
  except (ValueError, OSError, RuntimeError, av.FFmpegError) as e:
    return "unreadable", f"{segment.ytid}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def _results(tasks: list, num_workers: int) -> Iterator[tuple[str, bytes | str]]:
  if num_workers <= 1:
    yield from map(_work, tasks)
    return
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    yield from pool.imap(_work, tasks, chunksize=4)


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
  split = split_name(csv_path)
  segments = read_segments(csv_path, class_indices)
  tasks = [(s, *find_clip(s, clip_index), options) for s in segments]
  os.makedirs(output_dir, exist_ok=True)
  counts = {"segments": len(segments), "written": 0, "missing": 0, "unreadable": 0}
  skipped, writer, shards = [], None, 0
  for status, value in _results(tasks, num_workers):
    if status != "ok":
      counts[status] += 1
      skipped.append(f"{status} {value}")
      continue
    if writer is None or counts["written"] % examples_per_shard == 0:
      if writer is not None:
        writer.close()
      path = os.path.join(output_dir, f"{split}-{shards:05d}.array_record")
      writer, shards = ArrayRecordWriter(path, "group_size:1"), shards + 1
    writer.write(value)
    counts["written"] += 1
  if writer is not None:
    writer.close()
  summary = {"split": split, "shards": shards, **counts, "skipped": skipped}
  with open(os.path.join(output_dir, f"{split}.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return summary


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
  skipped = summary["missing"] + summary["unreadable"]
  return (
    f"{summary['split']}: wrote {summary['written']} of {summary['segments']} clips to "
    f"{summary['shards']} shards; skipped {skipped} (missing {summary['missing']}, "
    f"unreadable {summary['unreadable']})"
    + (f", e.g. {'; '.join(summary['skipped'][:3])}" if skipped else "")
  )
