"""Turns AudioSet segment CSVs and downloaded clips into array_record shards for training.

  pip install -e .[audioset]   # PyAV and soundfile
  python scripts/prepare_audioset.py --class_labels=class_labels_indices.csv \
      --segments=balanced_train_segments.csv,unbalanced_train_segments.csv,eval_segments.csv \
      --clips_dir=clips/ --output_dir=audioset_records/ --num_workers=16

The clip naming, the record format and the skip counts are described in
perceiver_jax/data/prepare/audioset.py, which does the work; this is its command line.
"""

from __future__ import annotations

from absl import app
from absl import flags

from perceiver_jax.data import audioset
from perceiver_jax.data.prepare import audioset as prepare_audioset

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
  options = prepare_audioset.Options(
    sample_rate=_SAMPLE_RATE.value,
    fps=_FPS.value,
    frame_size=_FRAME_SIZE.value,
    jpeg_quality=_JPEG_QUALITY.value,
    with_video=not _NO_VIDEO.value,
  )
  summaries = prepare_audioset.prepare(
    _CLASS_LABELS.value,
    _SEGMENTS.value,
    _CLIPS_DIR.value,
    _OUTPUT_DIR.value,
    options,
    examples_per_shard=_PER_SHARD.value,
    num_workers=_NUM_WORKERS.value,
  )
  for summary in summaries:
    print(prepare_audioset.describe(summary))


if __name__ == "__main__":
  app.run(main)
