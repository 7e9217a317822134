"""Turns Kinetics-700-2020 annotation CSVs and downloaded clips into array_record shards.

  pip install -e .[audioset]   # PyAV and soundfile
  python scripts/prepare_kinetics.py --annotations=train.csv,validate.csv \
      --clips_dir=kinetics700_2020/ --output_dir=kinetics_records/ --num_workers=16

The CSV header, the clip naming, the labels and the skip counts are described in
perceiver_jax/data/prepare/kinetics.py, which does the work, and the record format (AudioSet's)
in perceiver_jax/data/prepare/clips.py; this is its command line.
"""

from __future__ import annotations

from absl import app
from absl import flags

from perceiver_jax.data.prepare import clips
from perceiver_jax.data.prepare import flags as prepare_flags
from perceiver_jax.data.prepare import kinetics as prepare_kinetics

_ANNOTATIONS = flags.DEFINE_list(
  "annotations", None, "annotation CSVs, one split each", required=True
)
_CLASSES = flags.DEFINE_string("classes", None, "class names, one per line (default: the 700)")
_KEEP_NO_AUDIO = flags.DEFINE_bool(
  "keep_no_audio", False, "store clips without an audio stream with silent audio (else skip)"
)
_CLIP_FLAGS = prepare_flags.define_clip_flags()
flags.adopt_module_key_flags(prepare_flags)  # --help lists them too


def main(argv):
  del argv
  summaries = prepare_kinetics.prepare(
    _ANNOTATIONS.value,
    classes=_CLASSES.value,
    **_CLIP_FLAGS.prepare_args(silent_without_audio=_KEEP_NO_AUDIO.value),
  )
  for summary in summaries:
    print(clips.describe(summary))


if __name__ == "__main__":
  app.run(main)
