"""Turns AudioSet segment CSVs and downloaded clips into array_record shards for training.

  pip install -e .[audioset]   # PyAV and soundfile
  python scripts/prepare_audioset.py --class_labels=class_labels_indices.csv \
      --segments=balanced_train_segments.csv,unbalanced_train_segments.csv,eval_segments.csv \
      --clips_dir=clips/ --output_dir=audioset_records/ --num_workers=16

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
`--sample_rate` (48 kHz) with scipy.signal.resample_poly, stored as int16; frames at `--fps`
(25: the frame shown at each multiple of 40 ms) with the shorter side resized to
`--frame_size` (256, so training can take random 224 crops) and stored as JPEG
(`--jpeg_quality` 90); the labels' class indices. A 10 s clip is about 1 MB of audio plus
roughly 250 x 15 KB of frames, so the full 2M-clip set needs some 10 TB with video, 2 TB
without (`--no_video`, for the audio-only models).
Clips that are missing or that cannot be decoded are skipped and counted; the counts and the
first few YTIDs are printed per split and written to OUTPUT_DIR/<split>.json. A malformed
CSV line stops the script with an error naming the file and the line.
"""

from __future__ import annotations

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
from absl import app
from absl import flags
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from perceiver_jax.data import audioset

VIDEO_EXTS = (".mp4", ".mkv", ".webm")
AUDIO_EXTS = (".wav", ".flac")


@dataclasses.dataclass(frozen=True)
class Options:
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


def find_clip(segment: audioset.Segment, index: dict[str, list[str]]) -> tuple[str, str]:
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


def load_clip(segment: audioset.Segment, video: str, audio: str, options: Options) -> bytes:
  """The record of one clip; raises (ValueError, OSError, RuntimeError, av.FFmpegError) on a
  file that cannot be decoded."""
  max_seconds = segment.end_seconds - segment.start_seconds
  frames = decode_video(video, options, max_seconds) if options.with_video else []
  samples = decode_audio(audio or video, options.sample_rate, max_seconds)
  return audioset.encode_example(
    segment, samples, frames, fps=options.fps, sample_rate=options.sample_rate
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
  split = audioset.split_name(csv_path)
  segments = audioset.read_segments(csv_path, class_indices)
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


_CLASS_LABELS = flags.DEFINE_string("class_labels", None, "class_labels_indices.csv", required=True)
_SEGMENTS = flags.DEFINE_list("segments", None, "segment CSVs, one split each", required=True)
_CLIPS_DIR = flags.DEFINE_string("clips_dir", None, "folder of downloaded clips", required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "where the shards go", required=True)
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", audioset.SAMPLE_RATE, "audio rate in Hz")
_FPS = flags.DEFINE_integer("fps", audioset.FPS, "video frames per second")
_FRAME_SIZE = flags.DEFINE_integer("frame_size", 256, "shorter side of the stored frames")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames")
_NO_VIDEO = flags.DEFINE_bool("no_video", False, "store audio only (audio-only models)")
_PER_SHARD = flags.DEFINE_integer("examples_per_shard", 1024, "clips per array_record file")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "decoding processes")


def main(argv):
  del argv
  options = Options(
    sample_rate=_SAMPLE_RATE.value,
    fps=_FPS.value,
    frame_size=_FRAME_SIZE.value,
    jpeg_quality=_JPEG_QUALITY.value,
    with_video=not _NO_VIDEO.value,
  )
  class_indices = audioset.read_class_indices(_CLASS_LABELS.value)
  clip_index = index_clips(_CLIPS_DIR.value)
  for csv_path in _SEGMENTS.value:
    summary = prepare_split(
      csv_path,
      class_indices,
      clip_index,
      _OUTPUT_DIR.value,
      options,
      examples_per_shard=_PER_SHARD.value,
      num_workers=_NUM_WORKERS.value,
    )
    skipped = summary["missing"] + summary["unreadable"]
    print(
      f"{summary['split']}: wrote {summary['written']} of {summary['segments']} clips to "
      f"{summary['shards']} shards; skipped {skipped} (missing {summary['missing']}, "
      f"unreadable {summary['unreadable']})"
      + (f", e.g. {'; '.join(summary['skipped'][:3])}" if skipped else "")
    )


if __name__ == "__main__":
  app.run(main)
