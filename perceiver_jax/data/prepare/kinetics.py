"""Turns Kinetics-700-2020 annotation CSVs and downloaded clips into array_record shards.

`scripts/prepare_kinetics.py` is its command line (`pip install -e .[audioset]`: PyAV and
soundfile). The records are AudioSet's (`perceiver_jax.data.audioset.encode_example`), made by
the same code (`prepare/clips.py`), so the same reader decodes them.

Inputs: the annotation CSVs of the release (train.csv, validate.csv, test.csv) with the header
`label,youtube_id,time_start,time_end,split` (times in whole seconds). The test CSV has no
`label` column: its clips get the label UNKNOWN_LABEL (-1), so that they can be prepared for
prediction or autoencoding but not scored. An `is_cc` column after `split` (the
Kinetics-400/600 CSVs) is ignored; any other header is an error. And a folder (searched
recursively: the downloaders put clips in one sub-folder per class) of clips that hold only
their segment, named as the common downloaders name them (tried in this order; mp4, mkv or
webm in any case):
  <youtube_id>_<time_start:06d>_<time_end:06d>.<ext>   e.g. abc123def45_000010_000020.mp4
  <youtube_id>.<ext>

Classes: a CSV label is the index of its name in `kinetics_classes.load_class_names()` (the
700 classes in the order of the released model's outputs), or in a file of names given as
`classes`. A name outside the list is an error naming the file, the line and the label.

Output: OUTPUT_DIR/<split>-NNNNN.array_record, split = the CSV's file name without its
extension (its `split` column is not used), one record per clip with the label's index as its
only label: audio resampled to 48 kHz mono, frames at 25 fps with the shorter side resized to
`Options.frame_size` (256) as JPEG, as for AudioSet. Clips that are missing ("missing"), that
cannot be decoded ("unreadable") or that have no audio stream ("no_audio") are skipped and
counted; with `Options.silent_without_audio` the last are written with silent audio instead.
The counts and the skipped ids go to OUTPUT_DIR/<split>.json, written last
(`prepare/clips.py` `write_split`).
"""

from __future__ import annotations

import csv
import os

from perceiver_jax.data import kinetics_classes
from perceiver_jax.data.prepare import clips

UNKNOWN_LABEL = -1
SKIP_KINDS = ("missing", "unreadable", "no_audio")

_LABELLED = ("label", "youtube_id", "time_start", "time_end", "split")
_HEADERS = (_LABELLED, _LABELLED[1:], (*_LABELLED, "is_cc"), (*_LABELLED[1:], "is_cc"))


def read_annotations(path: str, class_indices: dict[str, int]) -> list[clips.Segment]:
  """An annotation CSV -> its clips, label (index,) or (UNKNOWN_LABEL,) without labels.

  An unknown header, a malformed line or an unknown label raises a one-line ValueError naming
  the file (and the line).
  """
  with open(path, newline="", encoding="utf-8-sig") as f:
    rows = csv.reader(f)
    columns = tuple(column.strip() for column in next(rows, []))
    if columns not in _HEADERS:
      raise ValueError(
        f"{path}: unknown header {','.join(columns)!r}, expected {','.join(_LABELLED)!r} "
        "(without 'label' for a test split)"
      )
    segments = []
    for row in rows:
      line = rows.line_num
      if not row:
        continue
      if len(row) != len(columns):
        raise ValueError(f"{path}:{line}: expected {len(columns)} fields, got {len(row)}")
      fields = dict(zip(columns, (field.strip() for field in row), strict=True))
      ytid, start, end = fields["youtube_id"], fields["time_start"], fields["time_end"]
      try:
        start_s, end_s = int(start), int(end)
      except ValueError:
        raise ValueError(
          f"{path}:{line}: time_start/time_end {start!r}, {end!r} are not whole seconds"
        ) from None
      if not ytid or not 0 <= start_s < end_s:
        raise ValueError(f"{path}:{line}: bad clip {ytid!r} [{start_s}, {end_s})")
      label = fields.get("label")
      if label is not None and label not in class_indices:
        raise ValueError(
          f"{path}:{line}: label {label!r} is not one of the {len(class_indices)} classes"
        )
      index = UNKNOWN_LABEL if label is None else class_indices[label]
      segments.append(clips.Segment(ytid, float(start_s), float(end_s), (index,)))
  return segments


def split_name(csv_path: str) -> str:
  """`.../validate.csv` -> `validate`."""
  return os.path.splitext(os.path.basename(csv_path))[0]


def clip_stems(segment: clips.Segment) -> tuple[str, str]:
  """The file names (without extension) a clip may have, in the order tried."""
  start, end = round(segment.start_seconds), round(segment.end_seconds)
  return f"{segment.ytid}_{start:06d}_{end:06d}", segment.ytid


def load_clip(segment: clips.Segment, video: str, audio: str, options: clips.Options) -> bytes:
  """`clips.load_segment`, with clips without audio counted as "no_audio"."""
  try:
    return clips.load_segment(segment, video, audio, options)
  except clips.NoAudioError:
    raise clips.SkipClip("no_audio") from None


def prepare(
  annotation_csvs: list[str],
  clips_dir: str,
  output_dir: str,
  options: clips.Options,
  *,
  classes: str | None = None,
  examples_per_shard: int = 1024,
  num_workers: int = 1,
) -> list[dict]:
  """Writes each CSV's clips as shards; returns the splits' summaries (see `write_split`).

  Every CSV is read before any clip is decoded, so a bad line fails at once. `classes`: a file
  of class names, one per line, instead of the 700 Kinetics-700-2020 classes.
  """
  class_indices = {name: i for i, name in enumerate(kinetics_classes.load_class_names(classes))}
  splits = {}
  for csv_path in annotation_csvs:
    if split_name(csv_path) in splits:
      raise ValueError(f"{csv_path}: a second CSV for split {split_name(csv_path)!r}")
    splits[split_name(csv_path)] = read_annotations(csv_path, class_indices)
  clip_index = clips.index_clips(clips_dir)
  return [
    clips.write_split(
      clips.segment_jobs(segments, clip_stems, clip_index, options, load_clip),
      output_dir,
      split,
      skip_kinds=SKIP_KINDS,
      examples_per_shard=examples_per_shard,
      num_workers=num_workers,
    )
    for split, segments in splits.items()
  ]
