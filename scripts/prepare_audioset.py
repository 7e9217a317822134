"""Turns AudioSet segment CSVs and downloaded clips into array_record shards for training.

  pip install -e .[audioset]   # PyAV and soundfile
  python scripts/prepare_audioset.py --class_labels=class_labels_indices.csv \
      --segments=balanced_train_segments.csv,unbalanced_train_segments.csv,eval_segments.csv \
      --clips_dir=clips/ --output_dir=audioset_records/ --num_workers=16

The clip naming and the skip counts are described in perceiver_jax/data/prepare/audioset.py,
which does the work, and the record format in perceiver_jax/data/prepare/clips.py; this is its
command line.
"""

from __future__ import annotations

from absl import app
from absl import flags

from perceiver_jax.data.prepare import audioset as prepare_audioset
from perceiver_jax.data.prepare import clips
from perceiver_jax.data.prepare import flags as prepare_flags

_CLASS_LABELS = flags.DEFINE_string("class_labels", None, "class_labels_indices.csv", required=True)
_SEGMENTS = flags.DEFINE_list("segments", None, "segment CSVs, one split each", required=True)
_NO_VIDEO = flags.DEFINE_bool("no_video", False, "store audio only (audio-only models)")
_CLIP_FLAGS = prepare_flags.define_clip_flags()
flags.adopt_module_key_flags(prepare_flags)  # --help lists them too


def main(argv):
  del argv
  summaries = prepare_audioset.prepare(
    _CLASS_LABELS.value, _SEGMENTS.value, **_CLIP_FLAGS.prepare_args(with_video=not _NO_VIDEO.value)
  )
  for summary in summaries:
    print(clips.describe(summary))


if __name__ == "__main__":
  app.run(main)
