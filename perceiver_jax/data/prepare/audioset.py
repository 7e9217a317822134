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
record per clip with the labels' class indices, decoded and written by `prepare/clips.py`
(48 kHz int16 mono audio, 25 fps JPEG frames with the shorter side 256: see there). A 10 s
clip is about 1 MB of audio plus roughly 250 x 15 KB of frames, so the full 2M-clip set needs
some 10 TB with video, 2 TB without (`clips.Options.with_video=False`, for the audio-only models).
Clips that are missing or that cannot be decoded are skipped and counted; the counts and the
skipped YTIDs are returned per split and written to OUTPUT_DIR/<split>.json, last. A malformed
CSV line raises a ValueError naming the file and the line.
"""

from __future__ import annotations

import csv
import os

from perceiver_jax.data.prepare import clips

# The official CSVs start with comment lines ("# Segments csv created ..."), then rows of
# this many fields.
_SEGMENT_FIELDS = 4


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


def read_segments(path: str, class_indices: dict[str, int]) -> list[clips.Segment]:
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
      segments.append(clips.Segment(ytid, start_s, end_s, labels))
  return segments


def split_name(csv_path: str) -> str:
  """`.../balanced_train_segments.csv` -> `balanced_train`."""
  return os.path.basename(csv_path).removesuffix(".csv").removesuffix("_segments")


def segment_stems(segment: clips.Segment) -> tuple[str, ...]:
  """The file names (without extension) an AudioSet clip may have, in the order tried."""
  start_ms, end_ms = round(segment.start_seconds * 1000), round(segment.end_seconds * 1000)
  ytid = segment.ytid
  return f"{ytid}_{start_ms}_{end_ms}", f"{ytid}_{start_ms}", ytid, f"Y{ytid}"


def prepare_split(
  csv_path: str,
  class_indices: dict[str, int],
  clip_index: dict[str, list[str]],
  output_dir: str,
  options: clips.Options,
  *,
  examples_per_shard: int = 1024,
  num_workers: int = 1,
) -> dict:
  """Writes one CSV's clips as shards; returns the counts (also written to <split>.json)."""
  segments = read_segments(csv_path, class_indices)
  return clips.write_split(
    clips.segment_jobs(segments, segment_stems, clip_index, options),
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
  options: clips.Options,
  *,
  examples_per_shard: int = 1024,
  num_workers: int = 1,
) -> list[dict]:
  """`prepare_split` for each segment CSV; returns their summaries."""
  class_indices = read_class_indices(class_labels)
  clip_index = clips.index_clips(clips_dir)
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
